"""Unimodal supervised training: one encoder + linear head per modality, each its own predictor
(arXiv:2502.16282; multimodal_alignment training_structures/unimodal_supervised.py). The modalities share nothing
but the training loop: disjoint parameters, per-modality optimiser groups, per-modality gradient clipping and a
per-modality best-validation checkpoint."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
import torchmetrics
from torch import nn

from mmrep.core.contract import Batch
from mmrep.core.errors import ConfigError
from mmrep.objectives.base import Objective, StepLoss

OPTIMIZER_KEYS = ("lr", "weight_decay", "betas", "eps", "momentum")


class UnimodalSupervised(Objective):
    """Train ``encoder → Linear(encoding_size, outputs)`` on each modality: cross-entropy for classification,
    L1 for regression (unimodal_supervised.py), as the dataset's ``spec.task`` says.

    Args:
        data, encoders, encoding_size, optimizer, scheduler: see :class:`~mmrep.objectives.base.Objective`.
        train_modalities: the modalities to train (default: all of the dataset's).
        param_groups: per-modality optimiser options over ``optimizer``'s, e.g.
            ``{x0: {lr: 5e-3, weight_decay: 0.1}, x1: {lr: 1e-2}}`` (the original tunes lr and wd per modality).
        grad_clip: per-modality gradient-norm clip (unimodal_supervised.py: 8); ``null`` = none.

    After fitting, each modality's encoder and head hold the weights of its best validation score — the highest
    accuracy (strictly greater, as unimodal_supervised.py) for classification, the lowest L1 loss for regression;
    ``best_epoch[m]`` says when.
    """

    shared_space = False  # each modality its own width (the original's head: Linear(E, classes))

    def __init__(
        self,
        data,
        encoders,
        encoding_size: int | None = None,
        train_modalities: Sequence[str] | None = None,
        param_groups: Mapping[str, Mapping] | None = None,
        grad_clip: float | None = 8.0,
        optimizer=None,
        scheduler=None,
        scheduler_interval: str = "step",
    ) -> None:
        super().__init__(data, encoders, encoding_size, optimizer, scheduler, scheduler_interval)
        if data.task not in ("classification", "regression"):
            raise ConfigError(
                "objective=unimodal: needs a dataset with a classification or regression task; "
                f"this one has task={data.task!r}"
            )
        names = data.check_modalities(train_modalities or data.names, "objective.train_modalities")
        if not names:
            raise ConfigError("objective.train_modalities: needs at least one modality")
        groups = {m: dict(v or {}) for m, v in (param_groups or {}).items()}
        for m, options in groups.items():
            if m not in names:
                raise ConfigError(f"objective.param_groups.{m}: not a trained modality {names}")
            bad = [k for k in options if k not in OPTIMIZER_KEYS]
            if bad:
                raise ConfigError(
                    f"objective.param_groups.{m}.{bad[0]}: not an optimiser option {list(OPTIMIZER_KEYS)}"
                )
            for key in ("lr", "weight_decay"):
                if key in options and float(options[key]) < 0:
                    raise ConfigError(f"objective.param_groups.{m}.{key}: must be >= 0, got {options[key]}")
        self.save_hyperparameters(ignore=["data", "encoders", "optimizer", "scheduler"])
        self.names, self.group_options = names, groups
        self.classify = data.task == "classification"
        self.loss_name = "cross_entropy" if self.classify else "l1"
        outputs = int(data.num_classes) if self.classify else int(data.target_dim)
        self.encoders = self.build_encoders(names)
        self.heads = nn.ModuleDict({m: nn.Linear(self.encoding_size_for(m), outputs) for m in names})
        # the validation score that picks each modality's best weights (synced across DDP ranks by torchmetrics)
        make = (
            (lambda: torchmetrics.classification.MulticlassAccuracy(outputs, average="micro"))
            if self.classify
            else torchmetrics.MeanAbsoluteError
        )
        self.val_score = nn.ModuleDict({m: make() for m in names})
        self.best_score = {m: float("-inf") for m in names}  # accuracy, or −L1 for regression
        self.best_epoch = {m: -1 for m in names}
        self._best_state: dict[str, dict] = {}

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Head outputs per modality: logits (B, C) for classification, (B, target_dim) for regression."""
        return {m: self.heads[m](h) for m, h in self.encode(batch).items()}

    def _target(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y.reshape(out.shape).to(out.dtype)

    def _loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.classify:
            return nn.functional.cross_entropy(out, y)
        return nn.functional.l1_loss(out, self._target(out, y))

    def step_loss(self, batch: Batch) -> StepLoss:
        """The sum of the trained modalities' losses against ``batch["y"]`` (B,); each modality's loss is a part
        (logged as ``loss_<modality>``) and the head outputs (:meth:`predict`) are the ``outputs``."""
        outputs = self.predict(batch)
        losses = {m: self._loss(out, batch["y"]) for m, out in outputs.items()}
        return StepLoss(sum(losses.values()), batch["y"].shape[0], parts=losses, outputs=outputs)

    def validation_step(self, batch: Batch, batch_idx: int) -> StepLoss:
        step = super().validation_step(batch, batch_idx)  # val/loss and val/loss_<modality>
        for m, out in step.outputs.items():
            self.val_score[m].update(out, batch["y"] if self.classify else self._target(out, batch["y"]))
        return step

    def on_validation_epoch_end(self) -> None:
        for m, metric in self.val_score.items():
            value = float(metric.compute())
            metric.reset()
            if self.trainer.sanity_checking:
                continue
            self.log(f"val/{'acc' if self.classify else 'mae'}_{m}", value, prog_bar=True)
            score = value if self.classify else -value
            if score > self.best_score[m]:  # strictly better, as the original
                self.best_score[m], self.best_epoch[m] = score, self.current_epoch
                self._best_state[m] = {
                    "encoder": copy.deepcopy(self.encoders[m].state_dict()),
                    "head": copy.deepcopy(self.heads[m].state_dict()),
                }

    def on_train_end(self) -> None:
        self.restore_best()

    def restore_best(self) -> None:
        """Load each modality's best-validation weights (no-op for a modality never validated)."""
        for m, state in self._best_state.items():
            self.encoders[m].load_state_dict(state["encoder"])
            self.heads[m].load_state_dict(state["head"])

    prepare_for_evaluation = restore_best

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["unimodal_best"] = {"score": self.best_score, "epoch": self.best_epoch, "state": self._best_state}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        best = checkpoint.get("unimodal_best")
        if best:
            score = best.get("score", best.get("accuracy"))  # checkpoints before regression support said "accuracy"
            self.best_score, self.best_epoch, self._best_state = score, best["epoch"], best["state"]

    def modality_parameters(self, modality: str) -> list[nn.Parameter]:
        """Trainable encoder + head parameters of one modality (its optimiser group and gradient-clip unit)."""
        params = [*self.encoders[modality].parameters(), *self.heads[modality].parameters()]
        return [p for p in params if p.requires_grad]

    def param_groups(self) -> list[dict]:
        return [{"params": self.modality_parameters(m), **self.group_options.get(m, {})} for m in self.names]

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        # per modality (the original trains each modality alone, so one modality's gradients never scale the other's)
        if self.hparams.grad_clip:
            for m in self.names:
                torch.nn.utils.clip_grad_norm_(self.modality_parameters(m), self.hparams.grad_clip)
        if gradient_clip_val:
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
