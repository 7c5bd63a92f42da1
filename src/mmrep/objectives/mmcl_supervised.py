"""Supervised + contrastive: the misalignment paper's InfoNCE between the pair's encoders (arXiv:2504.10143;
crossmodal_mislaignment utils/losses.py) plus, on each encoder, the RUS paper's supervised head (arXiv:2502.16282;
multimodal_alignment training_structures/unimodal_supervised.py: a Linear head, cross-entropy or L1), weighted by λ."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmrep.core.contract import Batch
from mmrep.core.errors import ConfigError
from mmrep.objectives.base import StepLoss
from mmrep.objectives.mmcl import MMCL


class MMCLSupervised(MMCL):
    """``objective=mmcl_supervised``: ``L = InfoNCE(h_a, h_b) + λ Σ_m L_task(head_m(h_m), y)`` over the pair's
    modalities m, each head ``Linear(encoding_size, outputs)``: cross-entropy for classification, L1 for regression
    (as ``objective=unimodal``). λ = 0 is MMCL with idle heads; a large λ approaches supervised training in one
    shared space. Needs a labelled dataset (``y``). Under DDP with ``gather: global`` both terms are the global
    batch's. The terms are logged as ``loss_contrastive`` and ``loss_supervised_<modality>``.

    Args:
        data, encoders, encoding_size, pair, similarity, temperature, negatives, loss, gather, optimizer, scheduler,
            scheduler_interval: see :class:`~mmrep.objectives.mmcl.MMCL`.
        weight: λ (≥ 0).
    """

    loss_name = "contrastive_supervised"
    objective_name = "mmcl_supervised"

    def __init__(
        self,
        data,
        encoders,
        encoding_size: int | None = None,
        pair=None,
        similarity: str = "sq_euclidean",
        temperature: float = 1.0,
        negatives: str = "auto",
        loss: str = "infonce",
        gather: str = "global",
        weight: float = 1.0,
        optimizer=None,
        scheduler=None,
        scheduler_interval: str = "step",
    ) -> None:
        if getattr(data, "task", None) not in ("classification", "regression"):
            raise ConfigError(
                f"objective=mmcl_supervised: needs a dataset with labels (a classification or regression task); "
                f"this one has task={data.task!r} (use objective=mmcl)"
            )
        super().__init__(
            data,
            encoders,
            encoding_size,
            pair,
            similarity,
            temperature,
            negatives,
            loss,
            gather,
            optimizer,
            scheduler,
            scheduler_interval,
        )
        if not float(weight) >= 0:
            raise ConfigError(f"objective.weight: must be >= 0, got {weight}")
        self.classify = data.task == "classification"
        outputs = int(data.num_classes) if self.classify else int(data.target_dim)
        self.heads = nn.ModuleDict({m: nn.Linear(self.encoding_size_for(m), outputs) for m in self.pair})

    def supervised_loss(self, modality: str, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The task loss of ``modality``'s head on embeddings h (N, d) against y (N,) / (N, k); the head's weights go
        through :meth:`loss_parameter` (it sees the gathered rows)."""
        head = self.heads[modality]
        out = F.linear(h, self.loss_parameter(head.weight), self.loss_parameter(head.bias))
        if self.classify:
            return F.cross_entropy(out, y.long())
        return F.l1_loss(out, y.reshape(out.shape).to(out.dtype))

    def step_loss(self, batch: Batch) -> StepLoss | None:
        *views, y = self.embeddings(batch, batch["y"])  # the labels travel with their rows
        n = views[0].shape[0]
        if n < 2 and self.batch_dependent(len(views) > 2):
            return None
        contrastive = self.pair_loss(*views)
        supervised = {f"supervised_{m}": self.supervised_loss(m, h, y) for m, h in zip(self.pair, views)}
        loss = contrastive + self.hparams.weight * sum(supervised.values())
        return StepLoss(loss, n, parts={"contrastive": contrastive, **supervised})
