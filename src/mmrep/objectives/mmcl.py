"""Multimodal contrastive learning: one encoder per contrasted modality, trained with a symmetric InfoNCE."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mmrep.core.contract import Batch
from mmrep.core.errors import ConfigError
from mmrep.objectives.base import PairedObjective
from mmrep.objectives.losses import SIMILARITIES, nt_xent, symmetric_info_nce

LOSSES = ("infonce", "nt_xent")


class MMCL(PairedObjective):
    """Paired contrastive learning between two modalities (arXiv:2504.10143; crossmodal_mislaignment
    main_numeric.py, utils/losses.py).

    A :class:`~mmrep.objectives.base.PairedObjective` (pair, DDP gather, one-pair batches, ``train/loss`` and
    ``val/loss``): its own parts are the loss and the fresh negatives.

    Args:
        data, encoders, encoding_size, optimizer, scheduler: see :class:`~mmrep.objectives.base.Objective`
            (numeric: ``encoding_size`` defaults to ``|I_θ \\ I_β|``).
        pair: the two modalities to contrast; the dataset's first two when ``None``.
        similarity, temperature: of the InfoNCE (main_numeric.py defaults: ``sq_euclidean``, τ = 1).
        negatives: ``fresh`` = an independent same-modality batch (``batch["neg"]``, as main_numeric.py draws);
            ``in_batch`` = the other items of the paired batch (CLIP-style); ``auto`` = fresh when the
            dataset yields them, else in-batch (e.g. RUS data).
        loss: ``infonce`` (the numeric experiment's symmetric Lp-InfoNCE, utils/losses.py) or ``nt_xent``
            (SimCLR's 2N×2N loss of the image–text experiments, main_mpi3dreal.py: cosine similarity, in-batch;
            ``similarity``/``negatives`` unused).
        gather: under DDP, ``global`` contrasts the global batch (every rank's pairs and negatives, as one process
            would with the concatenated batch: the paper's 6144 pairs stay 6144 on 4 GPUs of 1536); ``local``
            contrasts each device's batch alone (negatives from this device only). Same result on one device.
    """

    loss_name = "contrastive"
    objective_name = "mmcl"
    finite_hint = "lower objective.optimizer.lr or raise objective.temperature"

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
        super().__init__(data, encoders, encoding_size, pair, gather, optimizer, scheduler, scheduler_interval)
        if similarity not in SIMILARITIES:
            raise ConfigError(f"objective.similarity: unknown {similarity!r}; choose from {list(SIMILARITIES)}")
        if negatives not in ("fresh", "in_batch", "auto"):
            raise ConfigError(f"objective.negatives: must be 'fresh', 'in_batch' or 'auto', got {negatives!r}")
        if loss not in LOSSES:
            raise ConfigError(f"objective.loss: one of {list(LOSSES)}, got {loss!r}")
        if temperature <= 0:
            raise ConfigError(f"objective.temperature: must be > 0, got {temperature}")

    def batch_dependent(self, fresh_negatives: bool) -> bool:
        """Whether the loss takes its negatives from the other pairs of the batch (for a dataset or batch that does
        or does not bring fresh ones)."""
        negatives = self.hparams.negatives
        return (
            self.hparams.loss == "nt_xent" or negatives == "in_batch" or (negatives == "auto" and not fresh_negatives)
        )

    def check_data(self, datamodule, world_size: int = 1) -> None:
        """Before training: ``fresh`` negatives need a dataset that yields them, and in-batch negatives at least two
        pairs per contrasted batch (with one there is nothing to contrast: the loss is 0) — the device's batch, or
        with ``gather: global`` the global one (every device's batch together)."""
        if self.hparams.negatives == "fresh" and not getattr(datamodule, "negatives", False):
            raise ConfigError(
                "objective.negatives: 'fresh' needs a dataset that yields independent negative draws "
                "(dataset=numeric); use objective.negatives=in_batch or auto for this dataset"
            )
        super().check_data(datamodule, world_size)

    def views(self, batch: Batch) -> tuple[torch.Tensor, ...]:
        """(h_a, h_b) of the pair, plus (neg_a, neg_b) with fresh negatives (``batch["neg"]``), this rank's rows."""
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
        return out

    def pair_loss(self, h_a, h_b, neg_a=None, neg_b=None) -> torch.Tensor:
        """The configured loss of paired embeddings (N, d) (and fresh negatives (M, d)), a scalar."""
        if self.hparams.loss == "nt_xent":
            return nt_xent(h_a, h_b, self.hparams.temperature)
        return symmetric_info_nce(
            h_a, h_b, neg_a, neg_b, similarity=self.hparams.similarity, temperature=self.hparams.temperature
        )
