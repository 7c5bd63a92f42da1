"""Continue a run: find the run folder's ``last.ckpt`` (``resume: auto``), check a checkpoint before resuming
from it, or load one for evaluation (``fit: false``)."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, open_dict

from mmrep.core.errors import ConfigError
from mmrep.pipeline import checkpoints

log = logging.getLogger("mmrep.train")


RESUME_MODES = ("auto", "never")


def auto_resume(cfg: DictConfig) -> Path | None:
    """``resume: auto`` and no ``ckpt_path``: a run whose folder already holds ``checkpoints/last.ckpt`` (a SLURM
    requeue, a preempted submitit job, a sweep job started again) continues from it; returns that path (else None).
    The checkpoint then goes through the same checks as an explicit ``ckpt_path``."""
    mode = cfg.get("resume", "auto")
    if mode is False or mode is None:
        mode = "never"
    if mode not in RESUME_MODES:
        raise ConfigError(f"resume: one of {list(RESUME_MODES)}, got {mode!r}")
    if mode == "never" or not cfg.fit or cfg.get("ckpt_path"):
        return None
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return None
    with open_dict(cfg):
        cfg.ckpt_path = str(last)
    log.info("resuming from %s: the run's folder holds a checkpoint (resume=auto; resume=never starts over)", last)
    return last


def check_resume(cfg: DictConfig, model, found: Path | None = None) -> None:
    """``fit: true`` with ``ckpt_path``: the checkpoint is readable, fits the model, and was trained on the same
    data and model settings — checked before any training starts. ``found``: the checkpoint ``resume: auto`` found
    in the run's folder (the error then says how to start over instead)."""
    if not (cfg.fit and cfg.get("ckpt_path")):
        return
    try:
        checkpoint = checkpoints.read_checkpoint(cfg.ckpt_path)
        checkpoints.check_fits(model, checkpoint, cfg.ckpt_path)
        checkpoints.check_resume(cfg, checkpoint, cfg.ckpt_path)
        if found is not None:
            checkpoints.check_same_run(cfg, checkpoint, cfg.ckpt_path)
    except ConfigError as err:
        if found is None:
            raise
        raise ConfigError(
            f"resume: the run's folder holds {found}, which this run cannot continue ({err}); start "
            "over with resume=never or in another folder (hydra.run.dir=…)"
        ) from None


def load_for_evaluation(model, datamodule, ckpt_path: str | None, device) -> None:
    """``fit: false``: load the weights of ``ckpt_path`` (if any) into ``model``, move it to ``device`` and set up
    the data, so metrics measure the encoders as built or as trained in an earlier run."""
    if ckpt_path:
        checkpoint = checkpoints.read_checkpoint(ckpt_path)
        checkpoints.check_fits(model, checkpoint, ckpt_path)
        model.load_state_dict(checkpoint["state_dict"])
        model.on_load_checkpoint(checkpoint)
        model.prepare_for_evaluation()
    model.to(device)
    datamodule.prepare_data()
    datamodule.setup("validate")
