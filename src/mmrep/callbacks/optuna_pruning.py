"""``OptunaPruning``: a sweep job reports its validation metric to its Optuna trial and stops when the pruner says so.

Added by ``mmrep.train`` to the jobs of a ``hydra/sweeper=mmrep_optuna`` sweep whose ``hydra.sweeper.pruner`` is set;
the job finds its trial in the stored study through ``MMREP_OPTUNA_TRIAL_ID`` (the sweeper sets it per job), so it works
in-process, with parallel launchers and on cluster nodes that share the storage."""

from __future__ import annotations

import os

import optuna
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate

from hydra_plugins.mmrep_optuna_sweeper.resumable import TRIAL_ENV
from hydra_plugins.mmrep_optuna_sweeper.storage import anchored_storage
from hydra_plugins.mmrep_optuna_sweeper.workers import TRIAL_ID_ENV
from mmrep.core.errors import ConfigError


class OptunaPruning(pl.Callback):
    """After each validation, report ``monitor`` at the global step to the trial (rank 0) and, when the pruner prunes
    it, stop training (every rank, at the same step). ``pruned_at`` then holds the step; the job raises
    ``optuna.TrialPruned`` after fit so the sweeper records the trial PRUNED (its checkpoints and curves stay).

    Args:
        storage, study_name, trial_number: where the trial lives (trial_id, unique in the database, when the
        sweeper gave it). monitor: a metric logged at every validation.
        sign: +1 when ``monitor`` improves in the study's direction, −1 when it improves the other way
        (``val/loss`` in a maximised study): the pruner compares the reported values as study values.
        pruner: the optuna pruner that decides.
    """

    def __init__(
        self,
        storage: str,
        study_name: str,
        trial_number: int,
        monitor: str,
        sign: float,
        pruner: optuna.pruners.BasePruner,
        trial_id: int | None = None,
    ) -> None:
        self.storage, self.study_name, self.trial_number = storage, study_name, int(trial_number)
        self.trial_id = None if trial_id is None else int(trial_id)
        self.monitor, self.sign, self.pruner = monitor, float(sign), pruner
        self.trial: optuna.trial.Trial | None = None
        self.pruned_at: int | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        study = optuna.load_study(study_name=self.study_name, storage=self.storage, pruner=self.pruner)
        trial_id = self.trial_id
        if trial_id is None:
            trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, self.trial_number)
        self.trial = optuna.trial.Trial(study, trial_id)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        prune = False
        if trainer.is_global_zero:
            value = trainer.callback_metrics.get(self.monitor)
            if value is None:
                logged = ", ".join(sorted(k for k in trainer.callback_metrics if k.startswith("val"))) or "none"
                raise ConfigError(
                    f"hydra.sweeper.prune_on: {self.monitor} is not logged at validation (logged: {logged})"
                )
            self.trial.report(self.sign * float(value), step=trainer.global_step)
            prune = self.trial.should_prune()
        if trainer.strategy.broadcast(prune, src=0):
            self.pruned_at = trainer.global_step
            trainer.should_stop = True


def from_sweep() -> OptunaPruning | None:
    """The pruning callback of this job when it is a trial of a pruning ``mmrep_optuna`` sweep, else None."""
    number = os.environ.get(TRIAL_ENV)
    if number is None or not HydraConfig.initialized():
        return None
    sweeper = HydraConfig.get().sweeper
    if sweeper.get("pruner") is None:
        return None
    direction = sweeper.get("direction")
    if not isinstance(direction, (str, type(None))) and not hasattr(direction, "name"):
        raise ConfigError("hydra.sweeper.pruner: optuna prunes single-objective studies only (direction is a list)")
    study_max = str(direction).endswith("maximize")
    mode = sweeper.get("prune_mode") or ("max" if study_max else "min")
    sign = 1.0 if (mode == "max") == study_max else -1.0
    return OptunaPruning(
        anchored_storage(sweeper.storage),
        sweeper.study_name,
        int(number),
        sweeper.prune_on,
        sign,
        instantiate(sweeper.pruner),
        trial_id=os.environ.get(TRIAL_ID_ENV),
    )
