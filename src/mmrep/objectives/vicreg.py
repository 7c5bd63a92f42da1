"""VICReg (Bardes et al. 2022, arXiv:2105.04906, Sec. 3; facebookresearch/vicreg main_vicreg.py): invariance between
the pair's embeddings, a hinge keeping every dimension's standard deviation up (variance) and a penalty on the
off-diagonal covariances (covariance), each of the last two on both branches. No negatives."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmrep.core.errors import ConfigError
from mmrep.objectives.base import PairedObjective


def off_diagonal(m: torch.Tensor) -> torch.Tensor:
    """The off-diagonal entries of a square (d, d) matrix, flat (d² − d,)."""
    d = m.shape[0]
    return m.flatten()[:-1].view(d - 1, d + 1)[:, 1:].flatten()


def variance_term(z: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """``mean_j max(0, γ − sqrt(Var(z_j) + ε))`` over the d dimensions of z (N, d) (unbiased variance)."""
    return F.relu(gamma - torch.sqrt(z.var(dim=0) + eps)).mean()


def covariance_term(z: torch.Tensor) -> torch.Tensor:
    """``(1/d) Σ_{i≠j} C_ij²`` with C the (d, d) covariance of z (N, d) (divided by N − 1)."""
    centred = z - z.mean(dim=0)
    cov = centred.T @ centred / (z.shape[0] - 1)
    return off_diagonal(cov).square().sum() / z.shape[1]


def vicreg_terms(
    h_a: torch.Tensor, h_b: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4
) -> dict[str, torch.Tensor]:
    """The three unweighted terms of h_a, h_b (N, d): ``invariance`` (mean squared error), ``variance`` and
    ``covariance`` (each the mean of the two branches' terms, as main_vicreg.py halves their sum)."""
    return {
        "invariance": F.mse_loss(h_a, h_b),
        "variance": 0.5 * (variance_term(h_a, gamma, eps) + variance_term(h_b, gamma, eps)),
        "covariance": covariance_term(h_a) + covariance_term(h_b),
    }


class VICReg(PairedObjective):
    """``objective=vicreg``: ``λ·invariance + μ·variance + ν·covariance`` (arXiv:2105.04906 Eq. 6; λ = μ = 25, ν = 1,
    γ = 1, ε = 1e-4 as the paper). The terms are logged as ``loss_invariance``, ``loss_variance``,
    ``loss_covariance``. Under DDP with ``gather: global`` the variance and covariance are those of the global batch
    (main_vicreg.py gathers the embeddings for them too).

    Args:
        data, encoders, encoding_size, pair, gather, optimizer, scheduler, scheduler_interval: see
            :class:`~mmrep.objectives.base.PairedObjective`.
        sim_coeff, std_coeff, cov_coeff: λ, μ, ν. gamma: the target standard deviation. eps: inside the square root.
    """

    loss_name = "vicreg"
    finite_hint = "lower objective.optimizer.lr"
    batch_use = "estimates each dimension's variance and covariance over its batch"

    def __init__(
        self,
        data,
        encoders,
        encoding_size: int | None = None,
        pair=None,
        gather: str = "global",
        sim_coeff: float = 25.0,
        std_coeff: float = 25.0,
        cov_coeff: float = 1.0,
        gamma: float = 1.0,
        eps: float = 1e-4,
        optimizer=None,
        scheduler=None,
        scheduler_interval: str = "step",
    ) -> None:
        super().__init__(data, encoders, encoding_size, pair, gather, optimizer, scheduler, scheduler_interval)
        for key in ("sim_coeff", "std_coeff", "cov_coeff"):
            if not float(self.hparams[key]) >= 0:
                raise ConfigError(f"objective.{key}: must be >= 0, got {self.hparams[key]}")
        if not float(gamma) > 0 or not float(eps) > 0:
            raise ConfigError(f"objective.{'gamma' if not float(gamma) > 0 else 'eps'}: must be > 0")

    def pair_terms(self, h_a: torch.Tensor, h_b: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        h = self.hparams
        terms = vicreg_terms(h_a, h_b, h.gamma, h.eps)
        loss = h.sim_coeff * terms["invariance"] + h.std_coeff * terms["variance"] + h.cov_coeff * terms["covariance"]
        return loss, terms
