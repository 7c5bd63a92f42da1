"""Multimodal contrastive learning: one encoder per contrasted modality, trained with a symmetric InfoNCE."""

from __future__ import annotations

import logging
import math
from typing import Sequence

import torch

from mmrep.data.contract import Batch, batch_size
from mmrep.errors import ConfigError
from mmrep.objectives.base import Objective
from mmrep.objectives.losses import SIMILARITIES, ensure_finite, nt_xent, symmetric_info_nce

log = logging.getLogger(__name__)
LOSSES = ("infonce", "nt_xent")


class MMCL(Objective):
    """Paired contrastive learning between two modalities (spec numeric-misalignment §1.7–1.8).

    Args:
        data, encoders, encoding_size, optimizer, scheduler: see :class:`~mmrep.objectives.base.Objective`
            (numeric: ``encoding_size`` defaults to ``|I_θ \\ I_β|``).
        pair: the two modalities to contrast; the dataset's first two when ``None``.
        similarity, temperature: of the InfoNCE (spec §1.7: ``sq_euclidean``, τ = 1).
        negatives: ``fresh`` = an independent same-modality batch (``batch["neg"]``, the numeric spec);
            ``in_batch`` = the other items of the paired batch (CLIP-style); ``auto`` = fresh when the
            dataset yields them, else in-batch (e.g. RUS data).
        loss: ``infonce`` (the numeric spec's symmetric Lp-InfoNCE, §1.7) or ``nt_xent`` (SimCLR's 2N×2N loss of
            the image–text experiments, §3.2: cosine similarity, in-batch; ``similarity``/``negatives`` unused).
    """

    loss_name = "contrastive"

    def __init__(
        self,
        data,
        encoders,
        encoding_size: int | None = None,
        pair: Sequence[str] | None = None,
        similarity: str = "sq_euclidean",
        temperature: float = 1.0,
        negatives: str = "fresh",
        loss: str = "infonce",
        optimizer=None,
        scheduler=None,
        scheduler_interval: str = "step",
    ) -> None:
        super().__init__(data, encoders, encoding_size, optimizer, scheduler, scheduler_interval)
        pair = tuple(pair) if pair is not None else tuple(data.names[:2])
        if len(pair) != 2 or pair[0] == pair[1] or any(m not in data.modalities for m in pair):
            raise ConfigError(f"objective.pair: needs two of the dataset's modalities {data.names}, got {list(pair)}")
        if similarity not in SIMILARITIES:
            raise ConfigError(f"objective.similarity: unknown {similarity!r}; choose from {list(SIMILARITIES)}")
        if negatives not in ("fresh", "in_batch", "auto"):
            raise ConfigError(f"objective.negatives: must be 'fresh', 'in_batch' or 'auto', got {negatives!r}")
        if loss not in LOSSES:
            raise ConfigError(f"objective.loss: one of {list(LOSSES)}, got {loss!r}")
        if temperature <= 0:
            raise ConfigError(f"objective.temperature: must be > 0, got {temperature}")
        self.save_hyperparameters(ignore=["data", "encoders", "optimizer", "scheduler"])
        self.pair = pair
        self.encoders = self.build_encoders(pair)

    def in_batch_negatives(self, yields_negatives: bool) -> bool:
        """Whether the loss takes its negatives from the other pairs of the batch (for a dataset that does or does
        not yield fresh ones)."""
        negatives = self.hparams.negatives
        return self.hparams.loss == "nt_xent" or negatives == "in_batch" or (negatives == "auto" and not yields_negatives)

    def check_data(self, datamodule, world_size: int = 1) -> None:
        """Before training: ``fresh`` negatives need a dataset that yields them, and in-batch negatives a batch of
        at least two pairs on each device (with one there is nothing to contrast: the loss is 0)."""
        yields = bool(getattr(datamodule, "negatives", False))
        if self.hparams.negatives == "fresh" and not yields:
            raise ConfigError("objective.negatives: 'fresh' needs a dataset that yields independent negative draws "
                              "(dataset=numeric); use objective.negatives=in_batch or auto for this dataset")
        if not self.in_batch_negatives(yields):
            return
        batch = int(getattr(datamodule, "batch_size", 2))
        n_train = len(datamodule.split("train")) if hasattr(datamodule, "split") else None
        per_device = batch if n_train is None else min(batch, math.ceil(n_train / max(world_size, 1)))
        if per_device < 2:
            where = f"dataset.batch_size={batch}" if n_train is None or batch < 2 else f"a train split of {n_train}"
            raise ConfigError(f"dataset.batch_size: objective=mmcl contrasts each pair with the other pairs of its "
                              f"batch; {where} over {world_size} device(s) leaves {per_device} pair per batch "
                              "(at least 2 are needed)")
        if n_train is not None and math.ceil(n_train / max(world_size, 1)) % batch == 1:
            log.warning("objective=mmcl: the last training batch of each epoch holds one pair and is skipped "
                        "(no negatives); dataset.batch_size=%d, %d training samples", batch, n_train)

    def loss(self, batch: Batch) -> torch.Tensor:
        a, b = self.pair
        h = self.encode(batch)
        if self.hparams.loss == "nt_xent":
            return nt_xent(h[a], h[b], self.hparams.temperature)
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

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor | None:
        if batch_size(batch) < 2 and self.in_batch_negatives("neg" in batch):
            return None  # one pair, no negatives: Lightning skips the step (check_data warned before training)
        loss = self.loss(batch)
        ensure_finite(loss, self.global_step, "lower objective.optimizer.lr or raise objective.temperature")
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size(batch))
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        if batch_size(batch) < 2 and self.in_batch_negatives("neg" in batch):
            return  # a one-pair remainder batch has no negatives: its loss would be a meaningless 0
        self.log("val/loss", self.loss(batch), prog_bar=True, sync_dist=True, batch_size=batch_size(batch))
