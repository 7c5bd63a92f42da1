"""Kernel alignment: CKA (linear, RBF), unbiased CKA, CKNNA and the CMD family (spec rus-alignment §4.3).

Linear kernels are never formed as N×N matrices when the features are narrower than N: with K = AAᵀ and
L = BBᵀ, ⟨K, L⟩_F = ‖AᵀB‖²_F, so every trace needed costs O(N·d²). Scalars are combined in float64; the
heavy products stay in the input dtype on the input device.
"""

from __future__ import annotations

import math

import torch

from mmrep.metrics.alignment.preprocess import AlignmentInputError
from mmrep.metrics.alignment.neighbors import Neighbors, block_rows, match_neighbors


def center_columns(H: torch.Tensor) -> torch.Tensor:
    return H - H.mean(dim=0, keepdim=True)


def _use_feature_space(n: int, d1: int, d2: int) -> bool:
    """True when the d×d products are cheaper than the N×N Gram matrices."""
    return d1 * d1 + d2 * d2 + d1 * d2 <= n * (d1 + d2)


def linear_kernel_products(A: torch.Tensor, B: torch.Tensor) -> tuple[float, float, float]:
    """``(⟨K,L⟩_F, ⟨K,K⟩_F, ⟨L,L⟩_F)`` for ``K = AAᵀ``, ``L = BBᵀ``; A (N, d1), B (N, d2)."""
    n, d1 = A.shape
    if _use_feature_space(n, d1, B.shape[1]):
        products = (A.T @ B, A.T @ A, B.T @ B)
        return tuple(p.double().square().sum().item() for p in products)  # type: ignore[return-value]
    K, L = A @ A.T, B @ B.T
    return (K * L).double().sum().item(), K.double().square().sum().item(), L.double().square().sum().item()


def _cka_ratio(kl: float, kk: float, ll: float) -> float:
    """HSIC ratio with every HSIC clipped at 0 and 0 for a zero denominator (spec §4.3 ``cka``)."""
    kl, kk, ll = max(kl, 0.0), max(kk, 0.0), max(ll, 0.0)
    denominator = math.sqrt(kk * ll)
    return kl / denominator if denominator > 0 else 0.0


def linear_cka(A: torch.Tensor, B: torch.Tensor) -> float:
    """Linear CKA: ``HSIC_b(K,L)/√(HSIC_b(K,K) HSIC_b(L,L))`` with ``HSIC_b(K,L) = tr(KHLH) = ‖ÃᵀB̃‖²_F``."""
    return _cka_ratio(*linear_kernel_products(center_columns(A), center_columns(B)))


def rbf_cka(A: torch.Tensor, B: torch.Tensor, sigma: float = 1.0, block_size: int | None = None) -> float:
    """CKA with Gaussian kernels ``exp(−‖a_i − a_j‖² / 2σ²)`` (spec §4.3, σ = 1), in row blocks.

    Uses ``tr(KHLH) = Σ K∘L − (2/N) r_K·r_L + (1/N²) (ΣK)(ΣL)`` with row sums ``r``, so one pass over blocks of
    both kernels gives all three HSICs without an N×N matrix."""
    n = A.shape[0]
    sq_a, sq_b = A.square().sum(1), B.square().sum(1)
    # per-row sums in the input dtype, accumulated across rows in float64 (a float32 sum over all N² entries
    # at once loses ~1% at N = 10k)
    s_kl = s_kk = s_ll = 0.0
    row_k = torch.empty(n, dtype=torch.float64, device=A.device)
    row_l = torch.empty_like(row_k)
    rows = block_rows(n, n, block_size)
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        K = _rbf_block(A[start:stop], A, sq_a[start:stop], sq_a, sigma)
        L = _rbf_block(B[start:stop], B, sq_b[start:stop], sq_b, sigma)
        row_k[start:stop], row_l[start:stop] = K.sum(1), L.sum(1)
        s_kl += (K * L).sum(1).double().sum().item()
        s_kk += K.square_().sum(1).double().sum().item()
        s_ll += L.square_().sum(1).double().sum().item()

    def hsic(s: float, r1: torch.Tensor, r2: torch.Tensor) -> float:
        return s - 2.0 / n * (r1 @ r2).item() + r1.sum().item() * r2.sum().item() / n**2

    return _cka_ratio(hsic(s_kl, row_k, row_l), hsic(s_kk, row_k, row_k), hsic(s_ll, row_l, row_l))


def _rbf_block(rows: torch.Tensor, all_rows: torch.Tensor, sq_rows, sq_all, sigma: float) -> torch.Tensor:
    """``exp(−‖r_i − a_j‖² / 2σ²)`` for a block of rows against all rows, (b, N), computed in place."""
    sq_dist = (rows @ all_rows.T).mul_(-2.0).add_(sq_rows[:, None]).add_(sq_all[None, :]).clamp_(min=0.0)
    return sq_dist.mul_(-0.5 / sigma**2).exp_()


def _hsic_unbiased_terms(n: int, trace_kl: float, sum_k: float, sum_l: float, ones_kl_ones: float) -> float:
    """Song et al. (2012): ``[tr(K̃L̃) + (1ᵀK̃1)(1ᵀL̃1)/((N−1)(N−2)) − 2/(N−2)·1ᵀK̃L̃1] / (N(N−3))``."""
    return (trace_kl + sum_k * sum_l / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * ones_kl_ones) / (n * (n - 3))


def unbiased_linear_hsics(A: torch.Tensor, B: torch.Tensor) -> tuple[float, float, float]:
    """``HSIC_u`` of (K,L), (K,K), (L,L) for linear kernels, in feature space (no N×N matrix).

    With ``K̃ = AAᵀ − diag(‖a_i‖²)``: ``tr(K̃L̃) = ‖AᵀB‖² − Σ‖a_i‖²‖b_i‖²``, ``1ᵀK̃1 = ‖Aᵀ1‖² − Σ‖a_i‖²`` and
    ``K̃1 = A(Aᵀ1) − ‖a_·‖²``. HSIC_u is invariant to shifting the features, so the columns are centred first
    (better conditioned, same value)."""
    n = A.shape[0]
    A, B = center_columns(A), center_columns(B)
    kl, kk, ll = linear_kernel_products(A, B)
    norms_a, norms_b = A.square().sum(1).double(), B.square().sum(1).double()
    # after centring Aᵀ1 = 0, so 1ᵀK̃1 = −Σ‖a_i‖² and K̃1 = −‖a_·‖²
    sum_k, sum_l = -norms_a.sum().item(), -norms_b.sum().item()

    def hsic(product: float, na: torch.Tensor, nb: torch.Tensor, sa: float, sb: float) -> float:
        return _hsic_unbiased_terms(n, product - (na @ nb).item(), sa, sb, (na @ nb).item())

    return (
        hsic(kl, norms_a, norms_b, sum_k, sum_l),
        hsic(kk, norms_a, norms_a, sum_k, sum_k),
        hsic(ll, norms_b, norms_b, sum_l, sum_l),
    )


def unbiased_cka(A: torch.Tensor, B: torch.Tensor) -> float:
    """CKA with the unbiased HSIC estimator (spec §4.3 ``unbiased_cka``), linear kernels."""
    return _cka_ratio(*unbiased_linear_hsics(A, B))


def _sparse_hsic_unbiased(n: int, rows, cols, k_values, l_values) -> float:
    """``HSIC_u(K', L')`` for kernels that are zero except at the listed off-diagonal entries (i, j).

    ``tr(K'L') = Σ_ij K'_ij L'_ji``: an entry contributes only if its transpose is listed too (the masks are
    not symmetric); both kernels are symmetric inner products, so ``L_ji = L_ij``."""
    keys = rows * n + cols
    sorted_keys, order = keys.sort()
    transposed = cols * n + rows
    position = torch.searchsorted(sorted_keys, transposed).clamp_(max=max(0, keys.numel() - 1))
    mutual = sorted_keys[position] == transposed if keys.numel() else keys.bool()
    k64, l64 = k_values.double(), l_values.double()
    trace_kl = (k64 * l64)[mutual].sum().item()
    column_sums_k = torch.zeros(n, dtype=torch.float64, device=k64.device).index_add_(0, cols, k64)
    row_sums_l = torch.zeros(n, dtype=torch.float64, device=k64.device).index_add_(0, rows, l64)
    return _hsic_unbiased_terms(n, trace_kl, k64.sum().item(), l64.sum().item(), (column_sums_k @ row_sums_l).item())


def cknna_from_neighbors(a: Neighbors, b: Neighbors) -> float:
    """CKNNA (spec §4.3): unbiased HSIC of the linear kernels restricted to mutual top-k entries.

    ``sim(K, L) = HSIC_u(M∘K, M∘L)`` with ``M = M_K ∘ M_L`` (row-wise top-k masks, diagonal excluded);
    score ``= sim(K,L) / (√(sim(K,K)·sim(L,L)) + 1e-6)``. Computed on the O(N·k) neighbour lists."""
    n, k = a.indices.shape
    rows = torch.arange(n, device=a.indices.device).repeat_interleave(k)
    hit, b_values = match_neighbors(a, b)
    flat_hit = hit.flatten()
    sim_kl = _sparse_hsic_unbiased(
        n, rows[flat_hit], a.indices.flatten()[flat_hit], a.values.flatten()[flat_hit], b_values.flatten()[flat_hit]
    )
    sim_kk = _sparse_hsic_unbiased(n, rows, a.indices.flatten(), a.values.flatten(), a.values.flatten())
    sim_ll = _sparse_hsic_unbiased(n, rows, b.indices.flatten(), b.values.flatten(), b.values.flatten())
    # sim(K,K) is a sum of squares up to the estimator's correction terms; clamp guards a tiny negative
    return sim_kl / (math.sqrt(max(sim_kk * sim_ll, 0.0)) + 1e-6)


def cmd(A: torch.Tensor, B: torch.Tensor, contract: str = "feat", center: bool = False) -> float:
    """Correlation-matrix distance similarity ``tr(C_A C_B) / (‖C_A‖_F ‖C_B‖_F + 1e-8)`` (spec §4.3).

    ``contract="feat"``: ``C = HHᵀ`` (N×N, computed in feature space); ``"batch"``: ``C = HᵀH`` (needs d1 = d2).
    ``center``: subtract column means first (``centered_cmd``)."""
    if center:
        A, B = center_columns(A), center_columns(B)
    if contract == "feat":
        kl, kk, ll = linear_kernel_products(A, B)
    elif contract == "batch":
        if A.shape[1] != B.shape[1]:
            raise AlignmentInputError(f"contract: 'batch' needs equal feature widths, got {A.shape[1]} and {B.shape[1]}")
        ca, cb = A.T @ A, B.T @ B
        kl = (ca * cb).double().sum().item()
        kk, ll = ca.double().square().sum().item(), cb.double().square().sum().item()
    else:
        raise AlignmentInputError(f"contract: must be 'feat' or 'batch', got {contract!r}")
    return kl / (math.sqrt(kk) * math.sqrt(ll) + 1e-8)
