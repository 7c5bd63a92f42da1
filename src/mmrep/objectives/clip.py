"""CLIP's contrastive objective (Radford et al. 2021, arXiv:2103.00020, Sec. 2.3 and Fig. 3): the symmetric
cross-entropy over the in-batch cosine similarities of N pairs, scaled by a learnable logit scale 1/τ."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mmrep.core.errors import ConfigError
from mmrep.objectives.base import PairedObjective


def clip_loss(h_a: torch.Tensor, h_b: torch.Tensor, logit_scale: torch.Tensor | float) -> torch.Tensor:
    """½ [CE(S, I) + CE(Sᵀ, I)] with ``S = logit_scale · cos(a_i, b_j)`` (N, N): each item's partner among the N
    items of the other modality; h_a, h_b (N, d) → a scalar."""
    logits = logit_scale * (F.normalize(h_a, dim=1) @ F.normalize(h_b, dim=1).T)
    labels = torch.arange(h_a.shape[0], device=h_a.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


class CLIP(PairedObjective):
    """``objective=clip``: :func:`clip_loss` with the temperature learnt as ``log(1/τ)`` (arXiv:2103.00020 Sec. 2.5:
    initialised at τ = 0.07, the logit scale clipped at 100).

    Args:
        data, encoders, encoding_size, pair, gather, optimizer, scheduler, scheduler_interval: see
            :class:`~mmrep.objectives.base.PairedObjective`.
        temperature: the initial τ (> 0).
        learn_temperature: train τ with the encoders (False: a fixed τ, i.e. InfoNCE with cosine similarity).
        max_logit_scale: the largest 1/τ the loss uses (the clip).
    """

    loss_name = "clip"
    finite_hint = "lower objective.optimizer.lr or objective.max_logit_scale"

    def __init__(
        self,
        data,
        encoders,
        encoding_size: int | None = None,
        pair=None,
        gather: str = "global",
        temperature: float = 0.07,
        learn_temperature: bool = True,
        max_logit_scale: float = 100.0,
        optimizer=None,
        scheduler=None,
        scheduler_interval: str = "step",
    ) -> None:
        super().__init__(data, encoders, encoding_size, pair, gather, optimizer, scheduler, scheduler_interval)
        if not float(temperature) > 0:
            raise ConfigError(f"objective.temperature: must be > 0, got {temperature}")
        if not float(max_logit_scale) >= 1 / float(temperature):
            raise ConfigError(
                f"objective.max_logit_scale: must be at least 1/objective.temperature = {1 / temperature:g}, "
                f"got {max_logit_scale}"
            )
        self.log_logit_scale = nn.Parameter(
            torch.tensor(math.log(1.0 / float(temperature))), requires_grad=bool(learn_temperature)
        )

    def logit_scale(self) -> torch.Tensor:
        """1/τ, clipped at ``max_logit_scale``."""
        return self.log_logit_scale.clamp(max=math.log(self.hparams.max_logit_scale)).exp()

    def pair_loss(self, h_a: torch.Tensor, h_b: torch.Tensor) -> torch.Tensor:
        return clip_loss(h_a, h_b, self.loss_parameter(self.logit_scale()))

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self.log("train/temperature", 1.0 / self.logit_scale().detach())
