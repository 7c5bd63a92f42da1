"""Train: the configured callbacks, ``trainer.fit`` with SIGTERM and Optuna pruning turned into their outcomes."""

from __future__ import annotations

from omegaconf import DictConfig
from pytorch_lightning.utilities.exceptions import SIGTERMException

from mmrep.core.errors import Terminated
from mmrep.pipeline.build import instantiate_group


def make_callbacks(cfg: DictConfig, loggers: list, always: list) -> list:
    """The ``callbacks`` group plus ``always`` (the callbacks every training run has; none without training); a
    learning-rate monitor is left out when nothing logs."""
    if not cfg.fit:
        return []
    from pytorch_lightning.callbacks import LearningRateMonitor

    callbacks = [*instantiate_group(cfg.get("callbacks")).values(), *always]
    return [c for c in callbacks if c is not None and (loggers or not isinstance(c, LearningRateMonitor))]


def fit(trainer, model, datamodule, cfg: DictConfig, callbacks: list) -> None:
    """``trainer.fit`` (resuming ``ckpt_path``); SIGTERM ends it with :class:`Terminated` after the
    bookkeeping callback wrote ``last.ckpt``, and a pruned Optuna trial with ``optuna.TrialPruned``."""
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    except SIGTERMException:
        terminated = next((c.terminated for c in callbacks if getattr(c, "terminated", None)), None)
        raise terminated or Terminated(trainer.global_step, None) from None
    raise_if_pruned(callbacks)


def raise_if_pruned(callbacks: list) -> None:
    """A pruned Optuna trial ends its job with ``optuna.TrialPruned`` (the sweeper records it PRUNED), unmeasured."""
    for callback in callbacks:
        if getattr(callback, "pruned_at", None) is not None:
            import optuna

            raise optuna.TrialPruned(f"pruned at step {callback.pruned_at} on {callback.monitor}")
