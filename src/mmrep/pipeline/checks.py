"""Checks of the built run before any training: each metric's and the objective's own checks of the data."""

from __future__ import annotations

import logging

log = logging.getLogger("mmrep.train")


def check_metrics(metrics: dict, model, datamodule) -> None:
    """Each metric's ``check(model, datamodule)``: a metric that cannot work on this run fails before training."""
    for metric in metrics.values():
        if hasattr(metric, "check"):
            metric.check(model, datamodule)


def check_objective(model, datamodule, trainer, fit: bool = True) -> None:
    """The objective's own data checks (e.g. MMCL's batch of at least two pairs) and each callback's
    ``check(model, datamodule)`` (e.g. an online probe needs labels), before training; then the batch a step trains
    on is stated (``dataset.batch_size`` is per device). Nothing without training (``fit``)."""
    if not fit:
        return
    if hasattr(model, "check_data"):
        model.check_data(datamodule, trainer.world_size)
    for callback in trainer.callbacks:
        if callable(getattr(callback, "check", None)):
            callback.check(model, datamodule)
    batch = getattr(datamodule, "batch_size", None)
    if batch is None or not trainer.is_global_zero:  # ranks started by srun share the run's log
        return
    world = trainer.world_size
    if world == 1:
        log.info("batch: %d samples per step (dataset.batch_size, per device)", batch)
        return
    gather = getattr(model, "hparams", {}).get("gather")
    contrast = {
        "global": "; the contrastive loss takes its negatives from the global batch (objective.gather=global)",
        "local": "; the contrastive loss takes its negatives from each device's batch only (objective.gather=local)",
    }.get(str(gather), "")
    log.info(
        "batch: dataset.batch_size is per device: %d devices × %d samples = %d samples per step%s",
        world,
        batch,
        world * batch,
        contrast,
    )
