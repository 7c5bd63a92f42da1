"""SigLIP (Zhai et al. 2023, arXiv:2303.15343, Sec. 3 and Algorithm 1): every (a_i, b_j) of the batch is its own
binary problem — matched (i = j) or not — scored by a sigmoid of ``t · cos(a_i, b_j) + b`` with a learnable scale t
and bias b; no softmax over the batch."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mmrep.core.errors import ConfigError
from mmrep.objectives.base import PairedObjective


def siglip_loss(
    h_a: torch.Tensor, h_b: torch.Tensor, scale: torch.Tensor | float, bias: torch.Tensor | float
) -> torch.Tensor:
    """``−(1/N) Σ_ij log σ(z_ij (scale · cos(a_i, b_j) + bias))`` with z_ij = +1 on the diagonal (the pairs) and −1
    elsewhere (arXiv:2303.15343 Eq. 1); h_a, h_b (N, d) → a scalar."""
    logits = scale * (F.normalize(h_a, dim=1) @ F.normalize(h_b, dim=1).T) + bias
    signs = 2 * torch.eye(h_a.shape[0], device=h_a.device, dtype=logits.dtype) - 1
    return -F.logsigmoid(signs * logits).sum() / h_a.shape[0]


class SigLIP(PairedObjective):
    """``objective=siglip``: :func:`siglip_loss` with the scale learnt as ``log t`` and the bias b (arXiv:2303.15343
    Sec. 3: initialised at t' = log 10, b = −10, so that the many negatives do not dominate the first steps).

    Args:
        data, encoders, encoding_size, pair, gather, optimizer, scheduler, scheduler_interval: see
            :class:`~mmrep.objectives.base.PairedObjective`.
        scale: the initial t (> 0); bias: the initial b.
        learn_scale, learn_bias: train them with the encoders.
    """

    loss_name = "siglip"
    finite_hint = "lower objective.optimizer.lr"

    def __init__(
        self,
        data,
        encoders,
        encoding_size: int | None = None,
        pair=None,
        gather: str = "global",
        scale: float = 10.0,
        bias: float = -10.0,
        learn_scale: bool = True,
        learn_bias: bool = True,
        optimizer=None,
        scheduler=None,
        scheduler_interval: str = "step",
    ) -> None:
        super().__init__(data, encoders, encoding_size, pair, gather, optimizer, scheduler, scheduler_interval)
        if not float(scale) > 0:
            raise ConfigError(f"objective.scale: must be > 0, got {scale}")
        self.log_scale = nn.Parameter(torch.tensor(math.log(float(scale))), requires_grad=bool(learn_scale))
        self.bias = nn.Parameter(torch.tensor(float(bias)), requires_grad=bool(learn_bias))

    def pair_loss(self, h_a: torch.Tensor, h_b: torch.Tensor) -> torch.Tensor:
        return siglip_loss(h_a, h_b, self.loss_parameter(self.log_scale.exp()), self.loss_parameter(self.bias))

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self.log("train/temperature", 1.0 / self.log_scale.detach().exp())
        self.log("train/logit_bias", self.bias.detach())
