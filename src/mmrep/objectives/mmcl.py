"""Multimodal contrastive learning: one encoder per contrasted modality, trained with a symmetric InfoNCE."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch

from mmrep.core.contract import Batch
from mmrep.core.errors import ConfigError
from mmrep.objectives.base import Objective
from mmrep.objectives.distributed import gather_rows, world_size
from mmrep.objectives.losses import SIMILARITIES, ensure_finite, nt_xent, symmetric_info_nce

log = logging.getLogger(__name__)
LOSSES = ("infonce", "nt_xent")
GATHER = ("global", "local")


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
        gather: under DDP, ``global`` contrasts the global batch (every rank's pairs and negatives, as one process
            would with the concatenated batch: the paper's 6144 pairs stay 6144 on 4 GPUs of 1536); ``local``
            contrasts each device's batch alone (negatives from this device only). Same result on one device.
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
        gather: str = "global",
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
        if gather not in GATHER:
            raise ConfigError(f"objective.gather: one of {list(GATHER)}, got {gather!r}")
        self.save_hyperparameters(ignore=["data", "encoders", "optimizer", "scheduler"])
        self.pair = pair
        self.encoders = self.build_encoders(pair)

    def in_batch_negatives(self, yields_negatives: bool) -> bool:
        """Whether the loss takes its negatives from the other pairs of the batch (for a dataset that does or does
        not yield fresh ones)."""
        negatives = self.hparams.negatives
        return (
            self.hparams.loss == "nt_xent" or negatives == "in_batch" or (negatives == "auto" and not yields_negatives)
        )

    def check_data(self, datamodule, world_size: int = 1) -> None:
        """Before training: ``fresh`` negatives need a dataset that yields them, and in-batch negatives at least two
        pairs per contrasted batch (with one there is nothing to contrast: the loss is 0) — the device's batch, or
        with ``gather: global`` the global one (every device's batch together)."""
        yields = bool(getattr(datamodule, "negatives", False))
        if self.hparams.negatives == "fresh" and not yields:
            raise ConfigError(
                "objective.negatives: 'fresh' needs a dataset that yields independent negative draws "
                "(dataset=numeric); use objective.negatives=in_batch or auto for this dataset"
            )
        if not self.in_batch_negatives(yields):
            return
        world = max(world_size, 1)
        ranks = world if self.hparams.gather == "global" else 1  # devices whose pairs one loss contrasts
        batch = int(getattr(datamodule, "batch_size", 2))
        n_train = len(datamodule.split("train")) if hasattr(datamodule, "split") else None
        per_device = batch if n_train is None else min(batch, math.ceil(n_train / world))
        if per_device * ranks < 2:
            where = f"dataset.batch_size={batch}" if n_train is None or batch < 2 else f"a train split of {n_train}"
            raise ConfigError(
                f"dataset.batch_size: objective=mmcl contrasts each pair with the other pairs of its "
                f"batch; {where} over {world} device(s) leaves {per_device * ranks} pair per "
                f"contrasted batch (objective.gather={self.hparams.gather}; at least 2 are needed)"
            )
        if n_train is not None and (math.ceil(n_train / world) % batch) * ranks == 1:
            log.warning(
                "objective=mmcl: the last training batch of each epoch holds one pair and is skipped "
                "(no negatives); dataset.batch_size=%d, %d training samples",
                batch,
                n_train,
            )

    def embeddings(self, batch: Batch) -> tuple[torch.Tensor, ...]:
        """(h_a, h_b) of the pair, plus (neg_a, neg_b) with fresh negatives: this rank's rows, or with
        ``gather: global`` under DDP the global batch's (rank order; autograd through this rank's rows)."""
        a, b = self.pair
        h = self.encode(batch)
        out = (h[a], h[b])
        if self.hparams.loss != "nt_xent" and (
            self.hparams.negatives == "fresh" or (self.hparams.negatives == "auto" and "neg" in batch)
        ):
            if "neg" not in batch:
                raise ConfigError(
                    "objective.negatives: 'fresh' needs a dataset that yields independent negative draws "
                    "(batch['neg']); use objective.negatives=in_batch for this dataset"
                )
            hn = self.encode(batch["neg"])
            out = (*out, hn[a], hn[b])
        return gather_rows(*out) if self.hparams.gather == "global" else out

    def contrast(self, h_a, h_b, neg_a=None, neg_b=None) -> torch.Tensor:
        """The configured loss of paired embeddings (N, d) (and fresh negatives), a scalar."""
        if self.hparams.loss == "nt_xent":
            return nt_xent(h_a, h_b, self.hparams.temperature)
        return symmetric_info_nce(
            h_a, h_b, neg_a, neg_b, similarity=self.hparams.similarity, temperature=self.hparams.temperature
        )

    def loss(self, batch: Batch) -> torch.Tensor:
        """The loss of ``batch`` (over the global batch under DDP with ``gather: global``)."""
        return self.contrast(*self.embeddings(batch))

    def _step(self, batch: Batch) -> tuple[torch.Tensor | None, int]:
        """(loss, pairs it contrasted); (None, n) for a batch of one pair with in-batch negatives (nothing to
        contrast: the loss would be a meaningless 0). Under DDP every rank decides on the same global count."""
        h = self.embeddings(batch)
        n = h[0].shape[0]
        if n < 2 and self.in_batch_negatives(len(h) > 2):
            return None, n
        return self.contrast(*h), n

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor | None:
        loss, n = self._step(batch)
        if loss is None:
            return None  # one pair, no negatives: Lightning skips the step (check_data warned before training)
        ensure_finite(loss, self.global_step, "lower objective.optimizer.lr or raise objective.temperature")
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        # every rank holds the global loss but backpropagates through its own rows only; DDP averages the ranks'
        # gradients, so the world size restores the one-process gradient (objectives/distributed.py)
        return loss * world_size() if self.hparams.gather == "global" else loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        loss, n = self._step(batch)
        if loss is not None:
            self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=n)
