"""Multimodal contrastive learning: one encoder per modality, trained with a symmetric InfoNCE."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import pytorch_lightning as pl
import torch
from torch import nn

from mmrep.errors import ConfigError
from mmrep.objectives.losses import SIMILARITIES, ensure_finite, symmetric_info_nce

EncoderFactory = Callable[..., nn.Module]


class MMCL(pl.LightningModule):
    """Paired contrastive learning between two modalities.

    Args:
        encoder: factory ``encoder(in_shape, out_dim) -> nn.Module`` (the ``encoder=`` group), one per modality.
        modalities: ``{name: shape}`` from the datamodule.
        encoding_size: output width; the datamodule's default (numeric: ``|I_θ \\ I_β|``) when ``None``.
        pair: the two modality names to contrast; the first two modalities when ``None``.
        similarity, temperature: of the InfoNCE (spec §1.7: ``sq_euclidean``, τ = 1).
        negatives: ``fresh`` = an independent same-modality batch (``batch["neg"]``, the numeric spec);
            ``in_batch`` = the other items of the paired batch (CLIP-style); ``auto`` = fresh when the
            dataset yields them, else in-batch (e.g. RUS data).
        lr, weight_decay, betas: Adam (spec §1.8: lr 1e-4, no weight decay).
        scheduler: ``None`` (constant lr, the spec) or ``cosine`` (linear warm-up for ``warmup_steps``, then cosine
            decay to 0 at ``trainer.max_steps``); the short CPU default uses ``cosine``.
    """

    def __init__(
        self,
        encoder: EncoderFactory,
        modalities: dict[str, Sequence[int]],
        encoding_size: int | None = None,
        pair: Sequence[str] | None = None,
        similarity: str = "sq_euclidean",
        temperature: float = 1.0,
        negatives: str = "fresh",
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        betas: Sequence[float] = (0.9, 0.999),
        scheduler: str | None = None,
        warmup_steps: int = 0,
    ) -> None:
        super().__init__()
        pair = tuple(pair) if pair is not None else tuple(modalities)[:2]
        if len(pair) != 2 or any(m not in modalities for m in pair):
            raise ConfigError(f"objective.pair: needs two of the dataset's modalities {list(modalities)}, got {list(pair)}")
        if similarity not in SIMILARITIES:
            raise ConfigError(f"objective.similarity: unknown {similarity!r}; choose from {list(SIMILARITIES)}")
        if negatives not in ("fresh", "in_batch", "auto"):
            raise ConfigError(f"objective.negatives: must be 'fresh', 'in_batch' or 'auto', got {negatives!r}")
        if temperature <= 0:
            raise ConfigError(f"objective.temperature: must be > 0, got {temperature}")
        if scheduler not in (None, "none", "cosine"):
            raise ConfigError(f"objective.scheduler: must be null or 'cosine', got {scheduler!r}")
        if encoding_size is None or encoding_size < 1:
            raise ConfigError(f"objective.encoding_size: must be a positive integer, got {encoding_size!r}")
        self.save_hyperparameters(ignore=["encoder"])
        self.pair = pair
        self.encoders = nn.ModuleDict({m: encoder(tuple(modalities[m]), encoding_size) for m in pair})

    def encode(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{modality: (B, encoding_size)}`` for each contrasted modality present in ``batch``."""
        return {m: enc(batch[m]) for m, enc in self.encoders.items() if m in batch}

    def loss(self, batch: dict) -> torch.Tensor:
        a, b = self.pair
        h = self.encode(batch)
        kwargs = dict(similarity=self.hparams.similarity, temperature=self.hparams.temperature)
        if self.hparams.negatives == "fresh" or (self.hparams.negatives == "auto" and "neg" in batch):
            if "neg" not in batch:
                raise ConfigError(
                    "objective.negatives: 'fresh' needs a dataset that yields independent negative draws "
                    "(batch['neg']); use objective.negatives=in_batch for this dataset"
                )
            hn = self.encode(batch["neg"])
            return symmetric_info_nce(h[a], h[b], hn[a], hn[b], **kwargs)
        return symmetric_info_nce(h[a], h[b], **kwargs)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch)
        ensure_finite(loss, self.global_step, "lower objective.lr or raise objective.temperature")
        self.log("train/loss", loss, prog_bar=True, batch_size=batch[self.pair[0]].shape[0])
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.log("val/loss", self.loss(batch), prog_bar=True, sync_dist=True, batch_size=batch[self.pair[0]].shape[0])

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = torch.optim.Adam(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay, betas=tuple(hp.betas))
        if hp.scheduler in (None, "none"):
            return optimizer
        total = self.trainer.max_steps
        if total is None or total < 1:
            raise ConfigError("objective.scheduler: 'cosine' needs trainer.max_steps > 0 to know the decay length")
        warmup = max(0, min(hp.warmup_steps, total - 1))

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return 0.5 * (1.0 + math.cos(math.pi * progress))

        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
