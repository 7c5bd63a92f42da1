"""Lightning callbacks: those the ``callbacks`` config group picks (progress bar, alignment and probes during
training) and the ones every training run has (:func:`always_on`)."""

from __future__ import annotations

import os


def always_on(cfg) -> list:
    """The callbacks every training run has beside the ``callbacks`` group: the CPU-thread budget, the resumable
    bookkeeping and, in a trial of a pruning Optuna sweep, the pruner (optuna is imported only then)."""
    from hydra_plugins.mmrep_optuna_sweeper.resumable import TRIAL_ENV
    from mmrep.callbacks.bookkeeping import RunBookkeeping
    from mmrep.callbacks.threads import ThreadBudget

    pruning = None
    if TRIAL_ENV in os.environ:
        from mmrep.callbacks.optuna_pruning import from_sweep

        pruning = from_sweep()
    return [ThreadBudget(cfg.get("cpu_threads", "auto")), pruning, RunBookkeeping(cfg)]
