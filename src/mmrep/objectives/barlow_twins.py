"""Barlow Twins (Zbontar et al. 2021, arXiv:2103.03230, Sec. 2; facebookresearch/barlowtwins main.py): the
cross-correlation matrix of the pair's batch-standardised embeddings is pushed to the identity — diagonal to 1
(invariance), off-diagonal to 0 (redundancy reduction). No negatives."""

from __future__ import annotations

import torch

from mmrep.core.errors import ConfigError
from mmrep.objectives.base import PairedObjective
from mmrep.objectives.vicreg import off_diagonal


def cross_correlation(h_a: torch.Tensor, h_b: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """(d, d) ``C_ij = (1/N) Σ_n â_ni b̂_nj`` with â, b̂ each dimension standardised over the batch (N, d) — biased
    variance plus ε, as main.py's ``BatchNorm1d(affine=False)`` in training mode."""

    def standardise(z: torch.Tensor) -> torch.Tensor:
        return (z - z.mean(dim=0)) / torch.sqrt(z.var(dim=0, unbiased=False) + eps)

    return standardise(h_a).T @ standardise(h_b) / h_a.shape[0]


def barlow_twins_terms(h_a: torch.Tensor, h_b: torch.Tensor, eps: float = 1e-5) -> dict[str, torch.Tensor]:
    """``invariance`` = Σ_i (1 − C_ii)² and ``redundancy`` = Σ_{i≠j} C_ij² of :func:`cross_correlation`."""
    c = cross_correlation(h_a, h_b, eps)
    return {"invariance": (1 - torch.diagonal(c)).square().sum(), "redundancy": off_diagonal(c).square().sum()}


class BarlowTwins(PairedObjective):
    """``objective=barlow_twins``: ``invariance + λ·redundancy`` (arXiv:2103.03230 Eq. 1; λ = 0.0051, main.py's
    ``--lambd``). The terms are logged as ``loss_invariance`` and ``loss_redundancy``. Under DDP with ``gather:
    global`` C is the global batch's (main.py sums the ranks' C over the global batch size, with synchronised batch
    norm).

    Args:
        data, encoders, encoding_size, pair, gather, optimizer, scheduler, scheduler_interval: see
            :class:`~mmrep.objectives.base.PairedObjective`.
        lambd: λ, the weight of the off-diagonal terms. eps: the standardisation's ε.
    """

    loss_name = "barlow_twins"
    finite_hint = "lower objective.optimizer.lr"
    batch_use = "standardises each dimension over its batch"
    objective_name = "barlow_twins"

    def __init__(
        self,
        data,
        encoders,
        encoding_size: int | None = None,
        pair=None,
        gather: str = "global",
        lambd: float = 0.0051,
        eps: float = 1e-5,
        optimizer=None,
        scheduler=None,
        scheduler_interval: str = "step",
    ) -> None:
        super().__init__(data, encoders, encoding_size, pair, gather, optimizer, scheduler, scheduler_interval)
        if not float(lambd) >= 0:
            raise ConfigError(f"objective.lambd: must be >= 0, got {lambd}")
        if not float(eps) > 0:
            raise ConfigError(f"objective.eps: must be > 0, got {eps}")

    def pair_terms(self, h_a: torch.Tensor, h_b: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        terms = barlow_twins_terms(h_a, h_b, self.hparams.eps)
        return terms["invariance"] + self.hparams.lambd * terms["redundancy"], terms
