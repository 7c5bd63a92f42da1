"""Lightning's rich progress bar with a truthful description for step-based runs.

Lightning's :class:`~pytorch_lightning.callbacks.RichProgressBar` labels the training bar ``Epoch {e}/{max_epochs-1}``;
a step-based run (``trainer.max_epochs: -1`` with ``max_steps`` set: the numeric default, ``paper_scale``) reads
``Epoch 4/-2``. :class:`StepAwareRichProgressBar` labels it ``Epoch 4 · step 4080/5000`` instead (the step updated
every batch), and keeps Lightning's ``Epoch 3/49`` for epoch-based runs. ``conf/callbacks/default.yaml`` selects it
(``callbacks.rich_progress_bar``).
"""

from __future__ import annotations

from typing import Any

from pytorch_lightning.callbacks import RichProgressBar


def train_description(current_epoch: int, max_epochs: int | None, global_step: int = 0, max_steps: int = -1) -> str:
    """The training bar's label.

    * epoch-based (``max_epochs`` >= 0): Lightning's ``Epoch 3/49`` (the last epoch's index), plus
      ``· step s/max_steps`` when ``max_steps`` also bounds the run;
    * step-based (``max_epochs`` -1 or ``None``) with ``max_steps`` > 0: ``Epoch 4 · step 4080/5000`` (the step
      right-aligned to the width of ``max_steps``, so the label keeps its length);
    * unbounded (neither set): ``Epoch 4``.
    """
    epoch_based = max_epochs is not None and max_epochs >= 0
    text = f"Epoch {current_epoch}/{max_epochs - 1}" if epoch_based else f"Epoch {current_epoch}"
    if max_steps is not None and max_steps > 0:
        text += f" · step {global_step:>{len(str(max_steps))}}/{max_steps}"
    return text


class StepAwareRichProgressBar(RichProgressBar):
    """:class:`RichProgressBar` whose training label shows the epoch without a bogus total on step-based runs, and the
    optimiser step out of ``max_steps`` whenever ``max_steps`` is set (see :func:`train_description`)."""

    def _get_train_description(self, current_epoch: int) -> str:
        text = train_description(
            current_epoch, self.trainer.max_epochs, self.trainer.global_step, self.trainer.max_steps
        )
        # Lightning pads the label to the validation bar's, so the two bars' columns line up without flicker
        return f"{text:{len(self.validation_description)}}"

    def _styled(self, description: str) -> str:
        return f"[{self.theme.description}]{description}" if self.theme.description else description

    def on_train_batch_end(self, trainer, pl_module, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.max_steps > 0 and self.progress is not None and self.train_progress_bar_id is not None:
            # before super(): its refresh shows the new step
            self.progress.update(
                self.train_progress_bar_id, description=self._styled(self._get_train_description(trainer.current_epoch))
            )
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
