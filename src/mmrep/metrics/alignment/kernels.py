"""Kernel alignment: CKA (linear, RBF), unbiased CKA, CKNNA and the CMD family (multimodal_alignment
utils/align_metrics.py).

Linear kernels are never formed as N×N matrices when the features are narrower than N: with K = AAᵀ and
L = BBᵀ, ⟨K, L⟩_F = ‖AᵀB‖²_F, so every trace needed costs O(N·d²). Scalars are combined in float64; the
heavy products stay in the input dtype on the input device.
"""

from __future__ import annotations

import math

import torch

from mmrep.metrics.alignment.neighbors import (
    Neighbors,
    SortedLists,
    block_rows,
    contains,
    edge_keys,
    locate,
    match_neighbors,
    sort_lists,
)
from mmrep.metrics.alignment.preprocess import AlignmentInputError


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
    """HSIC ratio with every HSIC clipped at 0 and 0 for a zero denominator (utils/align_metrics.py ``cka``)."""
    kl, kk, ll = max(kl, 0.0), max(kk, 0.0), max(ll, 0.0)
    denominator = math.sqrt(kk * ll)
    return kl / denominator if denominator > 0 else 0.0


def linear_cka(A: torch.Tensor, B: torch.Tensor) -> float:
    """Linear CKA: ``HSIC_b(K,L)/√(HSIC_b(K,K) HSIC_b(L,L))`` with ``HSIC_b(K,L) = tr(KHLH) = ‖ÃᵀB̃‖²_F``."""
    return cka_from_products(*linear_kernel_products(center_columns(A), center_columns(B)))


def cka_from_products(kl: float, kk: float, ll: float) -> float:
    """Linear CKA from :func:`linear_kernel_products` of the column-centred features."""
    return _cka_ratio(kl, kk, ll)


_RBF_SLAB = 1 << 20  # kernel rows per step when the Gram matrices are given: 1M entries, cache-sized


class RBFSums:
    """The sums RBF CKA needs, accumulated over row blocks of the two Gaussian kernels: ``Σ K∘L``, ``Σ K²``,
    ``Σ L²`` and the row sums ``r_K``, ``r_L``. :func:`rbf_cka` feeds it; the suite's blocked path feeds it
    from the same similarity blocks as the kNN search.

    Per-row sums are taken in the input dtype and accumulated across rows in float64 (a float32 sum over all
    N² entries at once loses ~1% at N = 10k)."""

    def __init__(self, sq_a: torch.Tensor, sq_b: torch.Tensor, sigma: float) -> None:
        self.sq_a, self.sq_b, self.sigma = sq_a, sq_b, sigma
        self.n = sq_a.shape[0]
        self.sums = torch.zeros(3, dtype=torch.float64, device=sq_a.device)  # Σ K∘L, Σ K², Σ L²
        self.row_k = torch.empty(self.n, dtype=torch.float64, device=sq_a.device)
        self.row_l = torch.empty_like(self.row_k)

    def add(self, start: int, products_a: torch.Tensor, products_b: torch.Tensor, overwrite: bool = False) -> None:
        """Rows ``start…`` of the inner products ``a_i·a_j`` and ``b_i·b_j`` (b, N); ``overwrite``: the blocks
        may be used as scratch space (else they are left unchanged)."""
        stop = start + products_a.shape[0]
        K = _rbf_from_products(products_a, self.sq_a[start:stop], self.sq_a, self.sigma, overwrite)
        L = _rbf_from_products(products_b, self.sq_b[start:stop], self.sq_b, self.sigma, overwrite)
        self.row_k[start:stop], self.row_l[start:stop] = K.sum(1), L.sum(1)
        self.sums[0] += (K * L).sum(1).double().sum()
        self.sums[1] += K.square_().sum(1).double().sum()
        self.sums[2] += L.square_().sum(1).double().sum()

    def cka(self) -> float:
        """``tr(KHLH) = Σ K∘L − (2/N) r_K·r_L + (1/N²) (ΣK)(ΣL)``, and the same for (K, K) and (L, L)."""
        n, row_k, row_l = self.n, self.row_k, self.row_l
        s_kl, s_kk, s_ll = self.sums.tolist()

        def hsic(s: float, r1: torch.Tensor, r2: torch.Tensor) -> float:
            return s - 2.0 / n * (r1 @ r2).item() + r1.sum().item() * r2.sum().item() / n**2

        return _cka_ratio(hsic(s_kl, row_k, row_l), hsic(s_kk, row_k, row_k), hsic(s_ll, row_l, row_l))


def rbf_cka(
    A: torch.Tensor,
    B: torch.Tensor,
    sigma: float = 1.0,
    block_size: int | None = None,
    gram_a: torch.Tensor | None = None,
    gram_b: torch.Tensor | None = None,
) -> float:
    """CKA with Gaussian kernels ``exp(−‖a_i − a_j‖² / 2σ²)`` (align_metrics.py, σ = 1), in row blocks.

    Uses ``tr(KHLH) = Σ K∘L − (2/N) r_K·r_L + (1/N²) (ΣK)(ΣL)`` with row sums ``r``, so one pass over blocks of
    both kernels gives all three HSICs without an N×N kernel matrix. ``gram_a``/``gram_b``: the dense ``AAᵀ`` /
    ``BBᵀ`` when already computed (the suite shares them with the kNN search; read, not changed); otherwise each
    block's inner products are computed here."""
    n = A.shape[0]
    sums = RBFSums(A.square().sum(1), B.square().sum(1), sigma)
    given = gram_a is not None and gram_b is not None
    rows = block_rows(n, n, block_size or (max(1, _RBF_SLAB // n) if given else None))
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        if given:
            sums.add(start, gram_a[start:stop], gram_b[start:stop])
        else:
            sums.add(start, A[start:stop] @ A.T, B[start:stop] @ B.T, overwrite=True)
    return sums.cka()


def _rbf_from_products(products: torch.Tensor, sq_rows, sq_all, sigma: float, overwrite: bool) -> torch.Tensor:
    """``exp(−‖r_i − a_j‖² / 2σ²)`` from ``r_i·a_j`` (b, N) and the squared norms, as
    ``((−2 r·a + ‖r‖²) + ‖a‖²)`` clamped at 0 (in place in ``products`` if ``overwrite``)."""
    if overwrite:
        sq_dist = products.mul_(-2.0).add_(sq_rows[:, None])
    else:  # −2x is exact, so this is bit for bit the in-place expression, in one pass instead of a copy and two
        sq_dist = torch.add(sq_rows[:, None], products, alpha=-2.0)
    sq_dist = sq_dist.add_(sq_all[None, :]).clamp_(min=0.0)
    return sq_dist.mul_(-0.5 / sigma**2).exp_()


def _hsic_unbiased_terms(n: int, trace_kl: float, sum_k: float, sum_l: float, ones_kl_ones: float) -> float:
    """Song et al. (2012): ``[tr(K̃L̃) + (1ᵀK̃1)(1ᵀL̃1)/((N−1)(N−2)) − 2/(N−2)·1ᵀK̃L̃1] / (N(N−3))``."""
    return (trace_kl + sum_k * sum_l / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * ones_kl_ones) / (n * (n - 3))


def unbiased_linear_hsics(A: torch.Tensor, B: torch.Tensor) -> tuple[float, float, float]:
    """``HSIC_u`` of (K,L), (K,K), (L,L) for linear kernels, in feature space (no N×N matrix).

    With ``K̃ = AAᵀ − diag(‖a_i‖²)``: ``tr(K̃L̃) = ‖AᵀB‖² − Σ‖a_i‖²‖b_i‖²``, ``1ᵀK̃1 = ‖Aᵀ1‖² − Σ‖a_i‖²`` and
    ``K̃1 = A(Aᵀ1) − ‖a_·‖²``. HSIC_u is invariant to shifting the features, so the columns are centred first
    (better conditioned, same value)."""
    A, B = center_columns(A), center_columns(B)
    return unbiased_hsics_from_products(linear_kernel_products(A, B), A.square().sum(1), B.square().sum(1))


def unbiased_hsics_from_products(
    products: tuple[float, float, float], norms_a: torch.Tensor, norms_b: torch.Tensor
) -> tuple[float, float, float]:
    """:func:`unbiased_linear_hsics` from :func:`linear_kernel_products` of the column-centred features and
    their squared row norms ``‖ã_i‖²``, ``‖b̃_i‖²`` (N,)."""
    n = norms_a.shape[0]
    kl, kk, ll = products
    norms_a, norms_b = norms_a.double(), norms_b.double()
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
    """CKA with the unbiased HSIC estimator (utils/align_metrics.py ``unbiased_cka``), linear kernels."""
    return _cka_ratio(*unbiased_linear_hsics(A, B))


def unbiased_cka_from_products(
    products: tuple[float, float, float], norms_a: torch.Tensor, norms_b: torch.Tensor
) -> float:
    """:func:`unbiased_cka` from the centred features' kernel products and squared row norms."""
    return _cka_ratio(*unbiased_hsics_from_products(products, norms_a, norms_b))


def _sparse_hsic_unbiased(n: int, rows, cols, k_values, l_values, mutual=None) -> float:
    """``HSIC_u(K', L')`` for kernels that are zero except at the listed off-diagonal entries (i, j).

    ``tr(K'L') = Σ_ij K'_ij L'_ji``: an entry contributes only if its transpose is listed too (the masks are
    not symmetric); both kernels are symmetric inner products, so ``L_ji = L_ij``. ``mutual``: per entry, whether
    its transpose is listed, when already known."""
    if mutual is None:
        mutual = contains((rows * n + cols).sort().values, cols * n + rows)
    k64, l64 = k_values.double(), l_values.double()
    trace_kl = (k64 * l64)[mutual].sum().item()
    column_sums_k = torch.zeros(n, dtype=torch.float64, device=k64.device).index_add_(0, cols, k64)
    row_sums_l = torch.zeros(n, dtype=torch.float64, device=k64.device).index_add_(0, rows, l64)
    return _hsic_unbiased_terms(n, trace_kl, k64.sum().item(), l64.sum().item(), (column_sums_k @ row_sums_l).item())


def _transposes_listed(lists: SortedLists, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each entry i → j of the (N, k) lists (row-major flat): whether j → i is listed too, and where
    (the position of ``j·N + i`` among the sorted edge keys; meaningless where not listed)."""
    n = indices.shape[0]
    rows = torch.arange(n, device=indices.device).view(-1, 1)
    return locate(edge_keys(lists, n), (indices * n + rows).flatten())


def cknna_from_neighbors(
    a: Neighbors,
    b: Neighbors,
    a_sorted: SortedLists | None = None,
    b_sorted: SortedLists | None = None,
    match: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> float:
    """CKNNA (utils/align_metrics.py): unbiased HSIC of the linear kernels restricted to mutual top-k entries.

    ``sim(K, L) = HSIC_u(M∘K, M∘L)`` with ``M = M_K ∘ M_L`` (row-wise top-k masks, diagonal excluded);
    score ``= sim(K,L) / (√(sim(K,K)·sim(L,L)) + 1e-6)``. Computed on the O(N·k) neighbour lists.
    ``a_sorted``/``b_sorted`` (:func:`sort_lists`) and ``match`` (:func:`match_neighbors`): when already known."""
    n, k = a.indices.shape
    a_sorted, b_sorted = a_sorted or sort_lists(a.indices), b_sorted or sort_lists(b.indices)
    hit, b_values = match or match_neighbors(a, b, b_sorted)
    rows = torch.arange(n, device=a.indices.device).repeat_interleave(k)
    flat_hit = hit.flatten()
    cols_a, cols_b = a.indices.flatten(), b.indices.flatten()
    listed_a, position = _transposes_listed(a_sorted, a.indices)
    # M's entries are A's that are hits; the transpose of one is in M iff it is an A-entry that is a hit too
    hit_by_key = hit.gather(1, a_sorted.order).flatten()  # hits of A's entries in sorted-key order
    mutual_kl = (listed_a & hit_by_key[position])[flat_hit]
    sim_kl = _sparse_hsic_unbiased(
        n, rows[flat_hit], cols_a[flat_hit], a.values.flatten()[flat_hit], b_values.flatten()[flat_hit], mutual_kl
    )
    sim_kk = _sparse_hsic_unbiased(n, rows, cols_a, a.values.flatten(), a.values.flatten(), listed_a)
    listed_b, _ = _transposes_listed(b_sorted, b.indices)
    sim_ll = _sparse_hsic_unbiased(n, rows, cols_b, b.values.flatten(), b.values.flatten(), listed_b)
    # sim(K,K) is a sum of squares up to the estimator's correction terms; clamp guards a tiny negative
    return sim_kl / (math.sqrt(max(sim_kk * sim_ll, 0.0)) + 1e-6)


def cmd(A: torch.Tensor, B: torch.Tensor, contract: str = "feat", center: bool = False) -> float:
    """Correlation-matrix distance similarity ``tr(C_A C_B) / (‖C_A‖_F ‖C_B‖_F + 1e-8)`` (utils/align_metrics.py).

    ``contract="feat"``: ``C = HHᵀ`` (N×N, computed in feature space); ``"batch"``: ``C = HᵀH`` (needs d1 = d2).
    ``center``: subtract column means first (``centered_cmd``)."""
    if center:
        A, B = center_columns(A), center_columns(B)
    if contract == "feat":
        return cmd_from_products(*linear_kernel_products(A, B))
    if contract == "batch":
        if A.shape[1] != B.shape[1]:
            raise AlignmentInputError(
                f"contract: 'batch' needs equal feature widths, got {A.shape[1]} and {B.shape[1]}"
            )
        ca, cb = A.T @ A, B.T @ B
        kl = (ca * cb).double().sum().item()
        kk, ll = ca.double().square().sum().item(), cb.double().square().sum().item()
    else:
        raise AlignmentInputError(f"contract: must be 'feat' or 'batch', got {contract!r}")
    return cmd_from_products(kl, kk, ll)


def cmd_from_products(kl: float, kk: float, ll: float) -> float:
    """``⟨C_A, C_B⟩ / (‖C_A‖ ‖C_B‖ + 1e-8)`` from ``(⟨C_A,C_B⟩, ‖C_A‖², ‖C_B‖²)``."""
    return kl / (math.sqrt(kk) * math.sqrt(ll) + 1e-8)
