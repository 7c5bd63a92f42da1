"""``RunBookkeeping``: what makes every run resumable (always on in a training run, see :mod:`mmrep.train`)."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.exceptions import SIGTERMException

from mmrep.core import preemption
from mmrep.core.contract import CHECKPOINT_CONFIG_KEY
from mmrep.core.errors import Terminated

log = logging.getLogger("mmrep.train")


class RunBookkeeping(pl.Callback):
    """Three things a run needs to be resumable:

    * every checkpoint carries the run's resolved config (checked when a run resumes from it);
    * on SIGTERM (a cluster's notice before it kills a job), or a preemption signal (:mod:`mmrep.core.preemption`),
      every rank stops between two training batches (the next end of a batch that does not end an epoch) and
      ``last.ckpt`` is written, so the run can resume exactly where it stopped; at the end of training
      ``last.ckpt`` holds the final step (Lightning saves it only at epoch ends);
    * a run resumed in its own directory keeps the earlier curves up to the checkpoint's step
      (loggers with ``keep_rows_until``).
    """

    def __init__(self, cfg: DictConfig) -> None:
        self.config = OmegaConf.to_container(cfg, resolve=True)
        self.terminated: Terminated | None = None
        self._held_sigterm: int | None = None
        self._lightning_sigterm = None

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_CONFIG_KEY] = self.config

    def on_fit_end(self, trainer, pl_module) -> None:
        preemption.fitting(False)
        if self._held_sigterm is not None:  # it came with the last batch: nothing left to stop
            log.warning("SIGTERM arrived as training ended (step %d); measuring the trained model", trainer.global_step)

    def on_train_start(self, trainer, pl_module) -> None:
        self._install_sigterm_hold(trainer)
        preemption.fitting(True)  # a preemption notice now stops training with a checkpoint (before: requeue at once)
        for logger in trainer.loggers:
            if hasattr(logger, "keep_rows_until"):
                logger.keep_rows_until(trainer.global_step)

    @staticmethod
    def save_last(trainer) -> Path | None:
        """Write the current state to the checkpoint callback's ``last.ckpt`` (None: no checkpointing)."""
        checkpointing = trainer.checkpoint_callback
        if checkpointing is None or not checkpointing.dirpath or not checkpointing.save_last:
            return None
        path = Path(checkpointing.dirpath) / f"{checkpointing.CHECKPOINT_NAME_LAST}{checkpointing.FILE_EXTENSION}"
        trainer.save_checkpoint(path)
        return path

    def on_train_end(self, trainer, pl_module) -> None:
        # a run that stops mid-epoch (max_steps) has only saved at the last epoch end: last.ckpt is the final state
        checkpointing = trainer.checkpoint_callback
        if checkpointing is not None and getattr(checkpointing, "_last_global_step_saved", None) != trainer.global_step:
            self.save_last(trainer)

    # Lightning stops for SIGTERM wherever it notices it: between two validation batches, or right after an epoch.
    # Resumed from a checkpoint of either moment it is not the run that would have gone on: the rest of that
    # validation is skipped (a val/loss row lost), a step-limited run counts an empty extra epoch, and the step-wise
    # learning-rate schedule comes back one step behind (an epoch-end checkpoint precedes the last batch's scheduler
    # step). The one moment that resumes exactly is between two training batches of an epoch, so mmrep holds the
    # signal and hands it to Lightning at the end of the next training batch that is not an epoch's last (at most an
    # epoch's end and one step later); training stops right after it.
    def _hold_sigterm(self, signum, frame) -> None:
        self._held_sigterm = signum

    def _install_sigterm_hold(self, trainer) -> None:
        """After Lightning installed its SIGTERM handler (``on_train_start``): ours in front of it."""
        if trainer.num_training_batches < 2 or threading.current_thread() is not threading.main_thread():
            return  # every batch ends an epoch: no better moment than Lightning's own
        lightning = signal.getsignal(signal.SIGTERM)
        if callable(lightning) and lightning != self._hold_sigterm:
            self._lightning_sigterm = lightning
            signal.signal(signal.SIGTERM, self._hold_sigterm)  # Lightning's teardown puts the original back

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self._held_sigterm is not None and batch_idx + 1 < trainer.num_training_batches:
            signum, self._held_sigterm = self._held_sigterm, None
            self._lightning_sigterm(signum, None)  # Lightning's notice: every rank stops after this batch

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        preemption.fitting(False)
        if isinstance(exception, SIGTERMException):
            self.terminated = Terminated(trainer.global_step, self.save_last(trainer))
