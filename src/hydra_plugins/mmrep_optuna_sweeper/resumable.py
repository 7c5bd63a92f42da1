"""A resumable Optuna sweeper: rerunning a killed or finished sweep tops its study up instead of starting over.

hydra-optuna-sweeper reopens a stored study (``load_if_exists``) but then runs ``n_trials`` *more* trials, its seeded
sampler proposes the first run's parameters again (duplicates of completed trials), and a trial that was running when
the sweep was killed stays RUNNING for ever. Before handing over to it, :class:`ResumableOptunaSweeper`

* marks the study's RUNNING trials FAILED (no sweep is running: this one is starting);
* runs only ``n_trials − completed`` trials (nothing when the study is complete);
* reseeds a seeded sampler with ``seed + number of stored trials``, so resumed proposals are new, reproducibly.

Any storage URL optuna accepts works (``sqlite:///…`` on one machine; ``postgresql://…`` or ``mysql://…`` for
sweeps whose jobs run on several cluster nodes).
"""

from __future__ import annotations

import logging

import numpy as np
import optuna
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from optuna.trial import TrialState

log = logging.getLogger(__name__)


def _stored_trials(storage, study_name) -> tuple[optuna.Study | None, list]:
    if storage is None or study_name is None:
        return None, []
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:  # no such study yet
        return None, []
    return study, study.get_trials(deepcopy=False)


def _reseed(sampler, offset: int) -> None:
    """``seed + offset`` for optuna's seeded samplers (their seed lives in ``_rng``; the TPE's startup sampler too)."""
    seed = getattr(sampler, "_mmrep_seed", None)
    if seed is None:
        return
    for owner in (sampler, getattr(sampler, "_random_sampler", None)):
        if owner is not None and hasattr(owner, "_rng"):
            owner._rng = np.random.RandomState(seed + offset)


class ResumableOptunaSweeper(OptunaSweeper):
    """``hydra/sweeper=optuna`` with resumption (see the module docstring); same configuration keys."""

    def __init__(self, sampler, *args, **kwargs) -> None:
        super().__init__(sampler, *args, **kwargs)
        seed = getattr(sampler, "_mmrep_seed", None)
        if seed is None:  # the sampler config's seed, kept for reseeding
            rng = getattr(sampler, "_rng", None)
            sampler._mmrep_seed = int(rng.get_state()[1][0]) if rng is not None else None

    def sweep(self, arguments):
        impl = self.sweeper
        study, trials = _stored_trials(impl.storage, impl.study_name)
        if study is not None:
            stale = [t for t in trials if t.state == TrialState.RUNNING]
            for trial in stale:
                study._storage.set_trial_state(trial._trial_id, TrialState.FAIL)
            done = sum(t.state == TrialState.COMPLETE for t in trials)
            requested, impl.n_trials = impl.n_trials, max(0, impl.n_trials - done)
            _reseed(impl.sampler, len(trials))
            log.info("study %s: %d trials stored (%d complete, %d left RUNNING by a killed sweep → FAIL); "
                     "running %d more to reach n_trials=%d", impl.study_name, len(trials), done, len(stale),
                     impl.n_trials, requested)
        return super().sweep(arguments)
