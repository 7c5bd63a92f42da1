"""Random, frozen, well-conditioned "invertible" MLPs that mix latents into observations.

Original: arXiv:2504.10143; crossmodal_mislaignment utils/invertible_network_utils.py ("pcl" initialisation). Each
layer's weight is a Uniform(-1, 1) matrix with unit-L2 columns whose 2-norm condition number is at most the
``cond_quantile`` quantile of ``n_cond_samples`` such matrices. With LeakyReLU(0.2) between bias-free square layers, the
map is a bijection.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def _column_normalised_uniform(rng: np.random.Generator, count: int, n: int) -> np.ndarray:
    """(count, n, n) matrices with Uniform(-1,1) entries and unit-L2-norm columns (axis 0 of each matrix)."""
    mats = rng.uniform(-1.0, 1.0, size=(count, n, n))
    return mats / np.linalg.norm(mats, axis=1, keepdims=True)


def condition_threshold(rng: np.random.Generator, n: int, n_samples: int = 25_000, quantile: float = 0.001) -> float:
    """The ``int(n_samples * quantile)``-th smallest condition number of ``n_samples`` random matrices (the
    original's)."""
    conds = np.sort(np.linalg.cond(_column_normalised_uniform(rng, n_samples, n)))
    return float(conds[int(n_samples * quantile)])


def well_conditioned_matrix(rng: np.random.Generator, n: int, threshold: float, chunk: int = 2048) -> np.ndarray:
    """First matrix of an i.i.d. stream whose condition number is ≤ ``threshold`` (vectorised rejection)."""
    for _ in range(10_000):
        mats = _column_normalised_uniform(rng, chunk, n)
        ok = np.flatnonzero(np.linalg.cond(mats) <= threshold)
        if ok.size:
            return mats[ok[0]]
    raise RuntimeError(f"no {n}x{n} matrix with condition number <= {threshold} after {10_000 * chunk} draws")


def invertible_mlp(
    n: int,
    n_layers: int = 3,
    *,
    seed: int | np.random.SeedSequence = 0,
    negative_slope: float = 0.2,
    cond_quantile: float = 0.001,
    n_cond_samples: int = 25_000,
) -> nn.Sequential:
    """A frozen ``R^n → R^n`` bijection: ``n_layers`` bias-free Linear layers with LeakyReLU between them.

    The layer computes ``x ↦ x Aᵀ`` with the accepted matrix ``A`` (utils/invertible_network_utils.py). Deterministic in
    ``seed``.
    """
    if n < 1 or n_layers < 1:
        raise ValueError(f"invertible_mlp needs n >= 1 and n_layers >= 1, got n={n}, n_layers={n_layers}")
    rng = np.random.default_rng(seed)
    threshold = condition_threshold(rng, n, n_cond_samples, cond_quantile)
    layers: list[nn.Module] = []
    for i in range(n_layers):
        linear = nn.Linear(n, n, bias=False)
        linear.weight.data = torch.as_tensor(well_conditioned_matrix(rng, n, threshold), dtype=torch.float32)
        layers.append(linear)
        if i < n_layers - 1:
            layers.append(nn.LeakyReLU(negative_slope))
    net = nn.Sequential(*layers)
    net.requires_grad_(False)
    return net.eval()


def invert_mlp(net: nn.Sequential, y: torch.Tensor) -> torch.Tensor:
    """Exact inverse of a network built by :func:`invertible_mlp` (used to test invertibility)."""
    x = y
    for module in reversed(net):
        if isinstance(module, nn.Linear):
            x = torch.linalg.solve(module.weight.to(x.dtype), x.T).T
        elif isinstance(module, nn.LeakyReLU):
            x = torch.where(x >= 0, x, x / module.negative_slope)
    return x
