"""SVCCA (multimodal_alignment utils/align_metrics.py): CCA between the top singular directions of two feature
matrices."""

from __future__ import annotations

import torch

from mmrep.metrics.alignment.preprocess import AlignmentInputError


def standardize_columns(H: torch.Tensor) -> torch.Tensor:
    """Columns minus their mean, divided by their (unbiased) std + 1e-8, as the original."""
    centered = H - H.mean(dim=0, keepdim=True)
    return centered / (H.std(dim=0, keepdim=True) + 1e-8)


def top_left_singular_vectors(H: torch.Tensor, dim: int, randomized: bool = False) -> torch.Tensor:
    """(N, dim) left singular vectors of ``H`` for its ``dim`` largest singular values.

    ``randomized=True`` uses ``torch.svd_lowrank(q=dim)`` like the original (an approximation whose result
    depends on the global torch RNG); the default is the exact SVD, computed from the d×d Gram matrix when
    N ≫ d."""
    if randomized:
        return torch.svd_lowrank(H, q=dim)[0]
    n, d = H.shape
    if n >= 4 * d:
        # HᵀH = V S² Vᵀ; the top directions are well separated from round-off at this size
        eigenvalues, V = torch.linalg.eigh((H.T @ H).double())
        top = V[:, -dim:].flip(1).to(H.dtype)
        U = H @ top
        return U / U.norm(dim=0, keepdim=True).clamp_min(torch.finfo(H.dtype).tiny)
    return torch.linalg.svd(H, full_matrices=False)[0][:, :dim]


def canonical_correlations(U: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """Canonical correlations of two (N, p) views: singular values of ``Q_Uᵀ Q_V`` (orthonormal bases of the
    centred views), in descending order. Exact, where the original fits sklearn's iterative ``CCA``."""
    qu = torch.linalg.qr((U - U.mean(0)).double())[0]
    qv = torch.linalg.qr((V - V.mean(0)).double())[0]
    return torch.linalg.svdvals(qu.T @ qv).clamp(0.0, 1.0)


def svcca(A: torch.Tensor, B: torch.Tensor, dim: int = 10, randomized: bool = False) -> float:
    """Mean canonical correlation between the top-``dim`` singular subspaces of the standardised features.

    Needs feature width >= ``dim`` (the original fails the same way, e.g. on 5-d MOSI audio)."""
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:  # V[:, -0:] would silently keep every column
        raise AlignmentInputError(f"svcca_dim: must be a positive integer, got {dim!r}")
    for name, H in (("X", A), ("Y", B)):
        if H.shape[1] < dim:
            raise AlignmentInputError(f"{name}: svcca needs at least {dim} feature dimensions, got {H.shape[1]}")
    U = top_left_singular_vectors(standardize_columns(A), dim, randomized)
    V = top_left_singular_vectors(standardize_columns(B), dim, randomized)
    return canonical_correlations(U, V).mean().item()
