"""Unimodal supervised training: one encoder + linear head per modality, each its own classifier
(spec rus-alignment §2.1, §3.1). The modalities share nothing but the training loop: disjoint parameters,
per-modality AdamW groups, per-modality gradient clipping and a per-modality best-validation checkpoint."""

from __future__ import annotations

import copy
from typing import Callable, Mapping, Sequence

import pytorch_lightning as pl
import torch
from torch import nn

from mmrep.errors import ConfigError
from mmrep.objectives.losses import ensure_finite

EncoderFactory = Callable[..., nn.Module]


def _per_modality(value, modalities: Sequence[str], key: str) -> dict[str, float]:
    """A scalar for all modalities or a ``{modality: value}`` mapping covering each of them."""
    if isinstance(value, Mapping):
        missing = [m for m in modalities if m not in value]
        if missing:
            raise ConfigError(f"objective.{key}: no value for modality {missing[0]!r} (got keys {list(value)})")
        out = {m: float(value[m]) for m in modalities}
    else:
        out = {m: float(value) for m in modalities}
    if any(v < 0 for v in out.values()):
        raise ConfigError(f"objective.{key}: must be >= 0, got {value}")
    return out


class UnimodalSupervised(pl.LightningModule):
    """Train ``encoder → Linear(encoding_size, num_classes)`` on each modality with cross-entropy.

    Args:
        encoder: the ``encoder=`` factory, called ``encoder(in_shape, encoding_size, **overrides)``.
        modalities: ``{name: shape}`` from the datamodule; ``train_modalities`` picks a subset (default all).
        encoding_size: encoder output width (RUS: 12). num_classes: from the datamodule when ``None``.
        depths: optional ``{modality: depth}`` passed to the encoder factory (spec §2.1: D_enc per modality).
        lr, weight_decay: AdamW, a scalar or ``{modality: value}`` (spec §3.1: separate per modality).
        grad_clip: per-modality gradient-norm clip (spec §3.1: 8); ``null`` = none.

    After fitting, each modality's encoder and head hold the weights of its best validation accuracy
    (strictly greater, spec §3.1); ``best_epoch[m]`` says when.
    """

    def __init__(
        self,
        encoder: EncoderFactory,
        modalities: dict[str, Sequence[int]],
        encoding_size: int | None = None,
        num_classes: int | None = None,
        train_modalities: Sequence[str] | None = None,
        depths: Mapping[str, int] | None = None,
        lr=1e-2,
        weight_decay=0.0,
        grad_clip: float | None = 8.0,
    ) -> None:
        super().__init__()
        names = list(train_modalities) if train_modalities else list(modalities)
        unknown = [m for m in names if m not in modalities]
        if unknown or not names:
            raise ConfigError(f"objective.train_modalities: {unknown or names} not among the dataset's {list(modalities)}")
        if num_classes is None or int(num_classes) < 2:
            raise ConfigError(f"objective.num_classes: needs a classification dataset (>= 2 classes), got {num_classes!r}")
        if encoding_size is None or encoding_size < 1:
            raise ConfigError(f"objective.encoding_size: must be a positive integer, got {encoding_size!r}")
        depths = dict(depths or {})
        for m, d in depths.items():
            if m not in names:
                raise ConfigError(f"objective.depths: {m!r} is not a trained modality {names}")
            if d is not None and int(d) < 1:
                raise ConfigError(f"objective.depths.{m}: encoder depth must be >= 1, got {d}")
        self.save_hyperparameters(ignore=["encoder"])
        self.names = names
        self.lrs = _per_modality(lr, names, "lr")
        self.weight_decays = _per_modality(weight_decay, names, "weight_decay")
        self.encoders = nn.ModuleDict(
            {
                m: encoder(tuple(modalities[m]), encoding_size, **({"depth": int(depths[m])} if depths.get(m) else {}))
                for m in names
            }
        )
        self.heads = nn.ModuleDict({m: nn.Linear(encoding_size, int(num_classes)) for m in names})
        self.best_accuracy = {m: -1.0 for m in names}
        self.best_epoch = {m: -1 for m in names}
        self._best_state: dict[str, dict] = {}
        self._val_counts: dict[str, torch.Tensor] = {}

    def encode(self, batch: dict) -> dict[str, torch.Tensor]:
        """``{modality: (B, encoding_size)}`` for each trained modality present in ``batch``."""
        return {m: self.encoders[m](batch[m]) for m in self.names if m in batch}

    def logits(self, batch: dict) -> dict[str, torch.Tensor]:
        return {m: self.heads[m](h) for m, h in self.encode(batch).items()}

    def _losses(self, batch: dict) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        logits = self.logits(batch)
        losses = {m: nn.functional.cross_entropy(z, batch["y"]) for m, z in logits.items()}
        return losses, logits

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        losses, logits = self._losses(batch)
        total = sum(losses.values())
        ensure_finite(total, self.global_step, "lower objective.lr")
        size = batch["y"].shape[0]
        for m, loss in losses.items():
            self.log(f"train/loss_{m}", loss, batch_size=size)
            self.log(f"train/acc_{m}", (logits[m].argmax(1) == batch["y"]).float().mean(), batch_size=size)
        self.log("train/loss", total, prog_bar=True, batch_size=size)
        return total

    def on_validation_epoch_start(self) -> None:
        self._val_counts = {m: torch.zeros(2, device=self.device) for m in self.names}

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        losses, logits = self._losses(batch)
        size = batch["y"].shape[0]
        for m in losses:
            self._val_counts[m] += torch.stack(
                [(logits[m].argmax(1) == batch["y"]).sum().float(), torch.tensor(float(size), device=self.device)]
            )
            self.log(f"val/loss_{m}", losses[m], sync_dist=True, batch_size=size)
        self.log("val/loss", sum(losses.values()), prog_bar=True, sync_dist=True, batch_size=size)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        for m, counts in self._val_counts.items():
            counts = self.trainer.strategy.reduce(counts, reduce_op="sum")
            accuracy = (counts[0] / counts[1].clamp_min(1)).item()
            self.log(f"val/acc_{m}", accuracy, prog_bar=True)
            if accuracy > self.best_accuracy[m]:  # strictly greater, as the original
                self.best_accuracy[m], self.best_epoch[m] = accuracy, self.current_epoch
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

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["unimodal_best"] = {
            "accuracy": self.best_accuracy, "epoch": self.best_epoch, "state": self._best_state
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        best = checkpoint.get("unimodal_best")
        if best:
            self.best_accuracy, self.best_epoch, self._best_state = best["accuracy"], best["epoch"], best["state"]

    def modality_parameters(self, modality: str) -> list[nn.Parameter]:
        """Encoder + head parameters of one modality (its optimiser group and gradient-clip unit)."""
        return [*self.encoders[modality].parameters(), *self.heads[modality].parameters()]

    def configure_optimizers(self):
        groups = [
            {"params": self.modality_parameters(m), "lr": self.lrs[m], "weight_decay": self.weight_decays[m]}
            for m in self.names
        ]
        return torch.optim.AdamW(groups)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        # per modality (the original trains each modality alone, so one modality's gradients never scale the other's)
        if self.hparams.grad_clip:
            for m in self.names:
                torch.nn.utils.clip_grad_norm_(self.modality_parameters(m), self.hparams.grad_clip)
        if gradient_clip_val:
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
