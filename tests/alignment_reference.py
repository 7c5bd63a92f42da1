"""Slow, literal reference implementation of the alignment metric suite (multimodal_alignment utils/align_metrics.py).

Written from the original's formulas, independently of ``mmrep.metrics.alignment``: numpy float64,
dense N×N kernel matrices, plain Python dynamic programmes for LCS and Levenshtein distance. Meant only for
tests on small N (a few hundred samples).
"""

from __future__ import annotations

import numpy as np
from sklearn.cross_decomposition import CCA


def as_array(H) -> np.ndarray:
    """Any tensor / array → float64 numpy copy."""
    if hasattr(H, "detach"):
        H = H.detach().cpu().numpy()
    return np.array(H, dtype=np.float64, copy=True)


# ------------------------------------------------------------------------- preprocessing (utils/align_metrics.py)


def remove_outliers(H, q: float = 1.0, exact: bool = True) -> np.ndarray:
    """utils/align_metrics.py step 1. q == 1: unchanged. exact: v = sorted(|H|.flat)[int(q·numel)];
    otherwise v = mean over rows of the row-wise q-quantile of |H| (linear interpolation). Clamp to [-v, v]."""
    H = as_array(H)
    if q == 1:
        return H
    magnitude = np.abs(H)
    if exact:
        ordered = np.sort(magnitude.reshape(-1))
        v = ordered[int(q * magnitude.size)]
    else:
        per_row = [np.quantile(magnitude[i], q) for i in range(H.shape[0])]
        v = float(np.mean(per_row))
    return np.clip(H, -v, v)


def normalize_rows(H) -> np.ndarray:
    """utils/align_metrics.py step 2: each row divided by max(‖row‖₂, 1e-12) (``F.normalize``)."""
    H = as_array(H)
    out = np.empty_like(H)
    for i in range(H.shape[0]):
        out[i] = H[i] / max(np.sqrt(np.sum(H[i] ** 2)), 1e-12)
    return out


def preprocess(H, q: float = 1.0, exact: bool = True, normalize: bool = True) -> np.ndarray:
    H = remove_outliers(H, q, exact)
    return normalize_rows(H) if normalize else H


# --------------------------------------------------------------------------------------------- kNN metrics


def knn_lists(A: np.ndarray, k: int) -> np.ndarray:
    """kNN_A(i): Gram matrix with diagonal set to -1e8, argsorted by descending inner product, first k."""
    G = A @ A.T
    np.fill_diagonal(G, -1e8)
    return np.argsort(-G, axis=1, kind="stable")[:, :k]


def lcs_length(a, b) -> int:
    """Longest common subsequence of two sequences (textbook O(len(a)·len(b)) DP)."""
    a, b = list(a), list(b)
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            if a[i - 1] == b[j - 1]:
                table[i][j] = table[i - 1][j - 1] + 1
            else:
                table[i][j] = max(table[i - 1][j], table[i][j - 1])
    return table[len(a)][len(b)]


def levenshtein(a, b) -> int:
    """Edit distance with unit insertion / deletion / substitution costs (textbook DP)."""
    a, b = list(a), list(b)
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        table[i][0] = i
    for j in range(len(b) + 1):
        table[0][j] = j
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            substitution = table[i - 1][j - 1] + (0 if a[i - 1] == b[j - 1] else 1)
            table[i][j] = min(table[i - 1][j] + 1, table[i][j - 1] + 1, substitution)
    return table[len(a)][len(b)]


def mutual_knn_pre(A, B, k):
    na, nb = knn_lists(A, k), knn_lists(B, k)
    return float(np.mean([len(set(na[i].tolist()) & set(nb[i].tolist())) / k for i in range(A.shape[0])]))


def cycle_knn_pre(A, B, k):
    na, nb = knn_lists(A, k), knn_lists(B, k)
    hits = []
    for i in range(A.shape[0]):
        union = set()
        for j in nb[i]:
            union |= set(na[j].tolist())
        hits.append(1.0 if i in union else 0.0)
    return float(np.mean(hits))


def lcs_knn_pre(A, B, k):
    na, nb = knn_lists(A, k), knn_lists(B, k)
    return float(np.mean([lcs_length(na[i], nb[i]) for i in range(A.shape[0])]))


def edit_distance_knn_pre(A, B, k):
    na, nb = knn_lists(A, k), knn_lists(B, k)
    return 1.0 - float(np.mean([levenshtein(na[i], nb[i]) for i in range(A.shape[0])])) / k


# ------------------------------------------------------------------------------------------ kernel metrics


def hsic_biased(K, L) -> float:
    """tr(K H L H), H = I - 11ᵀ/N."""
    n = K.shape[0]
    H = np.eye(n) - np.ones((n, n)) / n
    return float(np.trace(K @ H @ L @ H))


def hsic_unbiased(K, L) -> float:
    """Song et al. 2012: [tr(K̃L̃) + (1ᵀK̃1)(1ᵀL̃1)/((N-1)(N-2)) - 2/(N-2)·1ᵀK̃L̃1] / (N(N-3)),
    K̃, L̃ = K, L with zeroed diagonals. tr(K̃L̃) = Σ_ij K̃_ij L̃_ji (matters for non-symmetric K, L)."""
    n = K.shape[0]
    Kt, Lt = K.copy(), L.copy()
    np.fill_diagonal(Kt, 0.0)
    np.fill_diagonal(Lt, 0.0)
    ones = np.ones(n)
    value = (
        np.trace(Kt @ Lt)
        + (ones @ Kt @ ones) * (ones @ Lt @ ones) / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * (ones @ Kt @ Lt @ ones)
    )
    return float(value / (n * (n - 3)))


def _cka_from_kernels(K, L, hsic) -> float:
    """HSIC(K,L)/sqrt(HSIC(K,K)·HSIC(L,L)), each HSIC clipped at >= 0; 0 when the denominator is 0."""
    kl = max(hsic(K, L), 0.0)
    kk = max(hsic(K, K), 0.0)
    ll = max(hsic(L, L), 0.0)
    denominator = np.sqrt(kk * ll)
    return 0.0 if denominator == 0 else float(kl / denominator)


def rbf_kernel(A, sigma) -> np.ndarray:
    """K_ij = exp(-‖a_i - a_j‖² / (2σ²))."""
    n = A.shape[0]
    K = np.empty((n, n))
    for i in range(n):
        K[i] = np.exp(-np.sum((A[i][None, :] - A) ** 2, axis=1) / (2.0 * sigma**2))
    return K


def cka_pre(A, B):
    return _cka_from_kernels(A @ A.T, B @ B.T, hsic_biased)


def rbf_cka_pre(A, B, sigma=1.0):
    return _cka_from_kernels(rbf_kernel(A, sigma), rbf_kernel(B, sigma), hsic_biased)


def unbiased_cka_pre(A, B):
    return _cka_from_kernels(A @ A.T, B @ B.T, hsic_unbiased)


def topk_mask(K, k) -> np.ndarray:
    """Row-wise top-k mask of K after setting the diagonal to -inf."""
    Kh = K.copy()
    np.fill_diagonal(Kh, -np.inf)
    mask = np.zeros_like(K)
    for i in range(K.shape[0]):
        for j in np.argsort(-Kh[i], kind="stable")[:k]:
            mask[i, j] = 1.0
    return mask


def cknna_pre(A, B, k):
    """K = AAᵀ, L = BBᵀ; sim(K,L) = HSIC_u(M∘K, M∘L), M = M_K∘M_L; score = sim(K,L)/(sqrt(sim(K,K)sim(L,L))+1e-6)."""
    K, L = A @ A.T, B @ B.T

    def sim(P, Q):
        M = topk_mask(P, k) * topk_mask(Q, k)
        return hsic_unbiased(M * P, M * Q)

    return float(sim(K, L) / (np.sqrt(sim(K, K) * sim(L, L)) + 1e-6))


def cmd_pre(A, B, contract="feat", center=False):
    """C = AAᵀ ("feat") or AᵀA ("batch"); tr(C_A C_B)/(‖C_A‖_F ‖C_B‖_F + 1e-8); center: column means removed first."""
    if center:
        A = A - A.mean(axis=0, keepdims=True)
        B = B - B.mean(axis=0, keepdims=True)
    if contract == "feat":
        CA, CB = A @ A.T, B @ B.T
    else:
        CA, CB = A.T @ A, B.T @ B
    return float(np.trace(CA @ CB) / (np.linalg.norm(CA, "fro") * np.linalg.norm(CB, "fro") + 1e-8))


# ------------------------------------------------------------------------------------------------- SVCCA


def standardize_columns(H) -> np.ndarray:
    """(H - column mean) / (unbiased column std + 1e-8)."""
    return (H - H.mean(axis=0, keepdims=True)) / (H.std(axis=0, ddof=1, keepdims=True) + 1e-8)


def svcca_pre(A, B, dim=10, max_iter=100_000, tol=1e-15, jitter=0.0, seed=0):
    """Original pipeline with an exact SVD: top-``dim`` left singular vectors of the standardised matrices,
    sklearn ``CCA(n_components=dim)`` fit + transform, Pearson r of each canonical pair (optionally with the
    original's 1e-10·N(0,1) jitter via ``jitter``), mean."""
    U1 = np.linalg.svd(standardize_columns(A), full_matrices=False)[0][:, :dim]
    U2 = np.linalg.svd(standardize_columns(B), full_matrices=False)[0][:, :dim]
    cca = CCA(n_components=dim, max_iter=max_iter, tol=tol)
    cca.fit(U1, U2)
    Ac, Bc = cca.transform(U1, U2)
    rng = np.random.default_rng(seed)
    correlations = [
        np.corrcoef(Ac[:, i] + jitter * rng.standard_normal(Ac.shape[0]), Bc[:, i])[0, 1] for i in range(dim)
    ]
    return float(np.mean(correlations))


# ------------------------------------------------------------------------------------ public-style entry point

_KNN = {
    "mutual_knn": mutual_knn_pre,
    "cycle_knn": cycle_knn_pre,
    "lcs_knn": lcs_knn_pre,
    "edit_distance_knn": edit_distance_knn_pre,
    "cknna": cknna_pre,
}

METRIC_NAMES = [
    "mutual_knn",
    "cycle_knn",
    "lcs_knn",
    "edit_distance_knn",
    "cka",
    "rbf_cka",
    "unbiased_cka",
    "cknna",
    "svcca",
    "cmd",
    "centered_cmd",
    "cmd_unnorm",
    "centered_cmd_unnorm",
]


def reference_score(
    name, X, Y, k=100, q=1.0, exact_quantile=True, rbf_sigma=1.0, svcca_dim=10, cmd_contract="feat", **_ignored
) -> float:
    """One metric of the suite on raw X (N, d1), Y (N, d2): preprocessing (utils/align_metrics.py) then the definition
    (utils/align_metrics.py)."""
    normalize = not name.endswith("_unnorm")
    A = preprocess(X, q, exact_quantile, normalize)
    B = preprocess(Y, q, exact_quantile, normalize)
    if name in _KNN:
        return _KNN[name](A, B, k)
    if name == "cka":
        return cka_pre(A, B)
    if name == "rbf_cka":
        return rbf_cka_pre(A, B, rbf_sigma)
    if name == "unbiased_cka":
        return unbiased_cka_pre(A, B)
    if name == "svcca":
        return svcca_pre(A, B, svcca_dim)
    if name in ("cmd", "cmd_unnorm"):
        return cmd_pre(A, B, cmd_contract, center=False)
    if name in ("centered_cmd", "centered_cmd_unnorm"):
        return cmd_pre(A, B, cmd_contract, center=True)
    raise KeyError(name)


def reference_scores(X, Y, metrics=None, **options) -> dict[str, float]:
    return {m: reference_score(m, X, Y, **options) for m in (metrics or METRIC_NAMES)}
