"""``ThreadBudget``: keeps a training run's CPU threads at its share of the machine (always on, see
:mod:`mmrep.core.threads`)."""

from __future__ import annotations

import logging

import pytorch_lightning as pl

from mmrep.core.threads import apply, budget, cores

log = logging.getLogger("mmrep.core.threads")


class ThreadBudget(pl.Callback):
    """Re-applies ``cpu_threads`` at the start of training and every ``every_n_steps`` steps (``auto`` follows how
    many mmrep processes share the machine)."""

    def __init__(self, setting="auto", every_n_steps: int = 100) -> None:
        budget(setting)  # validate early
        self.setting, self.every_n_steps = setting, int(every_n_steps)

    def on_train_start(self, trainer, pl_module) -> None:
        log.info("CPU threads: %d (cpu_threads=%s, %d cores)", apply(self.setting), self.setting, cores())

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.setting in (None, "auto") and trainer.global_step % self.every_n_steps == 0:
            apply(self.setting)
