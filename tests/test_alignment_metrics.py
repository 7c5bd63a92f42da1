"""The fast alignment suite (``mmrep.metrics.alignment``) equals a slow, literal reference written from the
original's formulas (multimodal_alignment utils/align_metrics.py; ``tests/alignment_reference.py``), plus hand-computed
known answers, invariances, symmetries, ranges, blocking, layer × layer aggregation and input errors."""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

import alignment_reference as R
from mmrep.metrics import alignment as AL
from mmrep.metrics.alignment import (
    AlignmentInputError,
    alignment_scores,
    layerwise_alignment,
    remove_outliers,
)

ALL = R.METRIC_NAMES


@pytest.fixture(scope="module", autouse=True)
def _single_threaded():
    """The matrices here are tiny; torch's and numpy's thread pools only add contention (the file ran ~8x slower
    on a busy 2-core machine with them). Both are restored after this module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(threads)


KNN_METRICS = ["mutual_knn", "cycle_knn", "lcs_knn", "edit_distance_knn", "cknna"]
SYMMETRIC = [
    "mutual_knn",
    "lcs_knn",
    "edit_distance_knn",
    "cka",
    "rbf_cka",
    "unbiased_cka",
    "svcca",
    "cmd",
    "centered_cmd",
    "cmd_unnorm",
    "centered_cmd_unnorm",
]
UNIT_RANGE = [m for m in ALL if m not in ("lcs_knn", "cknna")]  # documented/provable range [0, 1]

# Tolerances: float64 inputs are compared tightly. svcca: the reference runs sklearn's iterative CCA with
# tol=1e-15 (it then agrees with the implementation's exact canonical correlations to ~1e-14; sklearn's
# default tol=1e-6 alone leaves errors of ~1e-7). float32 inputs: ~1e-8 observed, 1e-5 allowed.
TIGHT = dict(rel=1e-6, abs=1e-9)
SVCCA_TOL = dict(rel=0, abs=1e-6)
FLOAT32_TOL = dict(rel=1e-5, abs=1e-6)


def tol(metric: str) -> dict:
    return SVCCA_TOL if metric == "svcca" else TIGHT


def correlated_pair(seed, n, d1, d2, noise=0.5, relu=False, dtype=np.float64):
    """X ~ N(0, I); Y = X W + noise (different width); optionally both post-ReLU (non-negative, sparse)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d1))
    Y = X @ (rng.standard_normal((d1, d2)) / math.sqrt(d1)) + noise * rng.standard_normal((n, d2))
    if relu:
        X, Y = np.maximum(X + 0.3, 0.0), np.maximum(Y + 0.3, 0.0)
    return X.astype(dtype), Y.astype(dtype)


def orthogonal(seed, d):
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return q * np.sign(np.diag(r))


# name: (pair arguments, suite options)
CASES = {
    # N > d: feature-space (d×d) path of the linear kernels
    "gauss_n120_k10": (dict(seed=0, n=120, d1=16, d2=24), dict(k=10)),
    "feature_space_n300_k20": (dict(seed=1, n=300, d1=20, d2=12, noise=1.0), dict(k=20, rbf_sigma=0.7)),
    # outlier clamping, both quantile rules (utils/align_metrics.py step 1)
    "clamp_exact_q0.9": (dict(seed=2, n=200, d1=20, d2=30), dict(k=15, q=0.9)),
    "clamp_rowmean_q0.95": (dict(seed=3, n=150, d1=30, d2=12), dict(k=8, q=0.95, exact_quantile=False)),
    "clamp_exact_q0.8_relu": (dict(seed=4, n=90, d1=25, d2=18, relu=True), dict(k=6, q=0.8)),
    # post-ReLU-like features (non-negative, sparse)
    "relu_n100": (dict(seed=5, n=100, d1=40, d2=40, relu=True), dict(k=10, rbf_sigma=0.5)),
    # d > N: Gram-space (N×N) path
    "gram_space_n60": (dict(seed=6, n=60, d1=100, d2=80), dict(k=5, rbf_sigma=2.0)),
}


@functools.cache
def case_data(name):
    pair_args, options = CASES[name]
    X, Y = correlated_pair(**pair_args)
    return X, Y, options


@functools.cache
def case_reference(name):
    X, Y, options = case_data(name)
    return R.reference_scores(X, Y, **options)


@functools.cache
def case_fast(name):
    X, Y, options = case_data(name)
    return alignment_scores(torch.from_numpy(X), torch.from_numpy(Y), "all", **options)


# ------------------------------------------------------------------------------ fast == reference, all metrics


@pytest.mark.parametrize("metric", ALL)
@pytest.mark.parametrize("case", list(CASES))
def test_suite_matches_reference(case, metric):
    assert case_fast(case)[metric] == pytest.approx(case_reference(case)[metric], **tol(metric))


def test_case_geometry_exercises_both_linear_kernel_paths():
    # N·(d1+d2) vs d1²+d2²+d1·d2 decides feature- vs Gram-space; make sure both kinds of case exist.
    shapes = [(p["n"], p["d1"], p["d2"]) for p, _ in CASES.values()]
    assert any(n > 2 * max(d1, d2) for n, d1, d2 in shapes)
    assert any(min(d1, d2) > n for n, d1, d2 in shapes)


@pytest.mark.parametrize("metric", ALL)
def test_single_metric_functions_match_reference(metric):
    X, Y, options = case_data("gauss_n120_k10")
    fn = getattr(AL, metric)
    assert fn(X, Y, **options) == pytest.approx(case_reference("gauss_n120_k10")[metric], **tol(metric))


def test_numpy_and_torch_inputs_agree():
    X, Y, options = case_data("clamp_exact_q0.9")
    assert alignment_scores(X, Y, **options) == pytest.approx(case_fast("clamp_exact_q0.9"), rel=1e-12, abs=1e-12)


def test_float32_inputs_match_reference():
    X, Y = correlated_pair(seed=7, n=150, d1=24, d2=32, dtype=np.float32)
    options = dict(k=10, q=0.95)
    ref = R.reference_scores(X, Y, **options)  # float64 computation on the same float32 values
    got = alignment_scores(torch.from_numpy(X), torch.from_numpy(Y), **options)
    for metric in ALL:
        assert got[metric] == pytest.approx(ref[metric], **FLOAT32_TOL), metric
    for metric in ("cycle_knn", "lcs_knn", "edit_distance_knn"):  # no near-tie flips: kNN lists identical
        assert got[metric] == pytest.approx(ref[metric], rel=1e-12), metric


@pytest.mark.parametrize("contract", ["feat", "batch"])
def test_cmd_contract_matches_reference(contract):
    X, Y = correlated_pair(seed=8, n=80, d1=20, d2=20)
    names = ["cmd", "centered_cmd", "cmd_unnorm", "centered_cmd_unnorm"]
    got = alignment_scores(X, Y, names, cmd_contract=contract, q=0.9)
    for metric in names:
        assert got[metric] == pytest.approx(R.reference_score(metric, X, Y, cmd_contract=contract, q=0.9), **TIGHT)


@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize("q", [0.5, 0.9, 0.99])
def test_remove_outliers_matches_reference(q, exact):
    H = np.random.default_rng(9).standard_t(df=3, size=(37, 11))
    got = remove_outliers(torch.from_numpy(H), q, exact=exact)
    np.testing.assert_allclose(got.numpy(), R.remove_outliers(H, q, exact), rtol=1e-12, atol=1e-12)


def test_remove_outliers_known_answers():
    H = torch.tensor([[1.0, -5.0], [3.0, 2.0]], dtype=torch.float64)
    # q = 1: unchanged
    assert torch.equal(remove_outliers(H, 1.0), H)
    # exact, q = 0.5: sorted |H| = [1, 2, 3, 5], index int(0.5·4) = 2 → v = 3
    assert remove_outliers(H, 0.5, exact=True).tolist() == [[1.0, -3.0], [3.0, 2.0]]
    # mean of per-row medians: row 0 median(|1|, |-5|) = 3, row 1 median(3, 2) = 2.5 → v = 2.75
    assert remove_outliers(H, 0.5, exact=False).tolist() == [[1.0, -2.75], [2.75, 2.0]]


# --------------------------------------------------------------------------------------- reference self-checks


def test_reference_dynamic_programmes_known_answers():
    assert R.lcs_length("ABCBDAB", "BDCABA") == 4
    assert R.lcs_length([1, 2, 3], [3, 2, 1]) == 1
    assert R.lcs_length([], [1, 2]) == 0
    assert R.levenshtein("kitten", "sitting") == 3
    assert R.levenshtein([1, 2], [2, 3]) == 2
    assert R.levenshtein([], [1, 2, 3]) == 3


def test_reference_unbiased_hsic_equals_u_centred_inner_product():
    """Song et al.'s HSIC_u equals (1/(N(N-3))) Σ_{i≠j} Ũ(K)_ij Ũ(L)_ij with Székely's U-centring (symmetric K, L)."""
    rng = np.random.default_rng(10)
    A, B = rng.standard_normal((12, 3)), rng.standard_normal((12, 5))
    K, L = A @ A.T, B @ B.T
    n = K.shape[0]

    def u_centre(M):
        M = M.copy()
        np.fill_diagonal(M, 0.0)
        U = (
            M
            - M.sum(axis=1, keepdims=True) / (n - 2)
            - M.sum(axis=0, keepdims=True) / (n - 2)
            + M.sum() / ((n - 1) * (n - 2))
        )
        np.fill_diagonal(U, 0.0)
        return U

    assert R.hsic_unbiased(K, L) == pytest.approx(np.sum(u_centre(K) * u_centre(L)) / (n * (n - 3)), rel=1e-10)


# ------------------------------------------------------------------------------------- hand-computed answers


def _circle_points(angles_deg, radii):
    t = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    return np.stack([np.cos(t), np.sin(t)], axis=1) * np.asarray(radii, dtype=np.float64)[:, None]


# Six 2-D points; after row normalisation a_i·a_j = cos(angle difference), so kNN (k = 2) is "the two nearest
# angles". The radii differ to show that row normalisation happens first.
#   A angles [0, 10, 25, 45, 85, 130]      B angles [0, 22, 35, 40, 100, 170]
#   kNN_A: 0:[1,2] 1:[0,2] 2:[1,3] 3:[2,1] 4:[3,5] 5:[4,3]
#          (row 3: |Δ| to 0,1,2,4,5 = 45,35,20,40,85;  row 4: 85,75,60,40,45)
#   kNN_B: 0:[1,2] 1:[2,3] 2:[3,1] 3:[2,1] 4:[3,2] 5:[4,3]
#          (row 1: 22,13,18,78,148;  row 2: 35,13,5,65,135;  row 4: 100,78,65,60,70)
#   |∩|/k:   1, 1/2, 1, 1, 1/2, 1                 → mutual_knn = 5/6
#   LCS:     2, 1 ([0,2]/[2,3]), 1 ([1,3]/[3,1]), 2, 1 ([3,5]/[3,2]), 2   → lcs_knn = 9/6 = 1.5
#   Lev:     0, 2, 2, 0, 1, 0  → Σ = 5          → edit_distance_knn = 1 − (5/6)/2 = 7/12
#   cycle A,B (i ∈ ∪_{j∈kNN_B(i)} kNN_A(j)?): 1,1,1,1,0 (kNN_A(3)∪kNN_A(2) = {1,2,3}),1 → 5/6
#   cycle B,A (i ∈ ∪_{j∈kNN_A(i)} kNN_B(j)?): 0 (kNN_B(1)∪kNN_B(2) = {1,2,3}),1,1,1,1,0 ({1,2,3}) → 4/6
HAND_A = _circle_points([0, 10, 25, 45, 85, 130], [1.0, 2.0, 0.5, 3.0, 1.5, 0.7])
HAND_B = _circle_points([0, 22, 35, 40, 100, 170], [0.3, 1.0, 4.0, 2.0, 1.0, 1.1])
HAND_KNN_A = [[1, 2], [0, 2], [1, 3], [2, 1], [3, 5], [4, 3]]
HAND_KNN_B = [[1, 2], [2, 3], [3, 1], [2, 1], [3, 2], [4, 3]]


def test_hand_knn_lists_of_reference():
    assert R.knn_lists(R.normalize_rows(HAND_A), 2).tolist() == HAND_KNN_A
    assert R.knn_lists(R.normalize_rows(HAND_B), 2).tolist() == HAND_KNN_B


def test_hand_knn_metrics():
    got = alignment_scores(HAND_A, HAND_B, ["mutual_knn", "cycle_knn", "lcs_knn", "edit_distance_knn"], k=2)
    assert got["mutual_knn"] == pytest.approx(5 / 6, abs=1e-7)
    assert got["cycle_knn"] == pytest.approx(5 / 6, abs=1e-12)
    assert got["lcs_knn"] == pytest.approx(1.5, abs=1e-12)
    assert got["edit_distance_knn"] == pytest.approx(7 / 12, abs=1e-12)
    # cycle_knn is not symmetric
    assert alignment_scores(HAND_B, HAND_A, ["cycle_knn"], k=2)["cycle_knn"] == pytest.approx(4 / 6, abs=1e-12)
    # and the reference agrees
    for metric, value in got.items():
        assert R.reference_score(metric, HAND_A, HAND_B, k=2) == pytest.approx(value, abs=1e-7)


def test_hand_kernel_metrics():
    """N = 4, A rows e1, e1, e2, e2 (2-D); B rows e1, e1, e2, e3 (3-D); unit rows, so normalisation is a no-op.

    K = AAᵀ = (11ᵀ + s sᵀ)/2 with s = (1, 1, -1, -1), so HKH = s sᵀ / 2.
      HSIC_b(K,L) = ½ sᵀ L s = ½ ((s0+s1)² + s2² + s3²) = 3;  HSIC_b(K,K) = ¼ (sᵀs)² = 4;
      HSIC_b(L,L) = ‖HLH‖²_F = 13/4 (HLH = Σ v vᵀ over v ∈ {s/2, He2, He3}: Gram of those is
      [[1, -½, -½], [-½, ¾, -¼], [-½, -¼, ¾]], squared entries sum to 13/4)  →  CKA = 3/√13.
    Unbiased (K̃, L̃: zero diagonals; N(N-3) = 4, (N-1)(N-2) = 6, N-2 = 2):
      HSIC_u(K,L) = [2 + 4·2/6 − 2·2/2]/4 = 1/3;  HSIC_u(K,K) = [4 + 16/6 − 4]/4 = 2/3;
      HSIC_u(L,L) = [2 + 4/6 − 2]/4 = 1/6  →  unbiased CKA = (1/3)/√(1/9) = 1.
    cmd: tr(KL) = Σ K_ij L_ij = 6, ‖K‖_F = √8, ‖L‖_F = √6 → 6/√48 = √3/2 (less the 1e-8 epsilon).
    centered_cmd ("feat"): tr(HKH·HLH)/(‖HKH‖_F ‖HLH‖_F + 1e-8) with ‖HKH‖_F = 2, ‖HLH‖_F = √13/2
      → 3/(√13 + 1e-8), i.e. linear CKA up to the epsilon.
    rbf (σ = 1): for unit rows with a·b ∈ {0, 1}, exp(-‖a-b‖²/2) = e⁻¹·exp(a·b) = e⁻¹(1 + (e−1) a·b) is affine in
    the linear kernel, so centring gives a scaled HKH and rbf_cka = 3/√13 as well.
    """
    A = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], dtype=np.float64)
    B = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float64)
    names = ["cka", "unbiased_cka", "rbf_cka", "cmd", "centered_cmd", "cmd_unnorm", "centered_cmd_unnorm"]
    got = alignment_scores(A, B, names)
    expected = {
        "cka": 3 / math.sqrt(13),
        "unbiased_cka": 1.0,
        "rbf_cka": 3 / math.sqrt(13),
        "cmd": 6 / (math.sqrt(48) + 1e-8),
        "centered_cmd": 3 / (math.sqrt(13) + 1e-8),
        "cmd_unnorm": 6 / (math.sqrt(48) + 1e-8),
        "centered_cmd_unnorm": 3 / (math.sqrt(13) + 1e-8),
    }
    for metric in names:
        assert got[metric] == pytest.approx(expected[metric], rel=1e-12), metric
        assert R.reference_score(metric, A, B) == pytest.approx(expected[metric], rel=1e-12), metric


def test_hand_orthogonal_clusters_give_zero_cka():
    """A rows e1, e1, e2, e2; B rows e1, e2, e1, e2: HKH = s sᵀ/2, HLH = t tᵀ/2 with s ⊥ t → CKA = 0;
    uncentred cmd: K and L overlap only on the diagonal, tr(KL) = 4, ‖K‖_F = ‖L‖_F = √8 → 1/2."""
    A = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], dtype=np.float64)
    B = np.array([[1, 0], [0, 1], [1, 0], [0, 1]], dtype=np.float64)
    got = alignment_scores(A, B, ["cka", "rbf_cka", "cmd", "centered_cmd"])
    assert got["cka"] == pytest.approx(0.0, abs=1e-12)
    assert got["rbf_cka"] == pytest.approx(0.0, abs=1e-12)
    assert got["centered_cmd"] == pytest.approx(0.0, abs=1e-12)
    assert got["cmd"] == pytest.approx(4 / (8 + 1e-8), rel=1e-12)


def test_cka_zero_denominator_gives_zero():
    # identical rows (N = 64 so the centring is exact): K = 11ᵀ, HKH = 0, HSIC(K,K) = 0 → CKA = 0 by definition
    X = np.zeros((64, 5))
    X[:, 0] = 2.0
    Y = np.random.default_rng(11).standard_normal((64, 7))
    got = alignment_scores(X, Y, ["cka", "centered_cmd"])
    assert got == {"cka": 0.0, "centered_cmd": 0.0}
    assert R.reference_score("cka", X, Y) == 0.0


def test_unbiased_cka_negative_hsic_is_clipped_to_zero():
    # independent features: HSIC_u(K, L) is negative about half of the time; the original clips it at 0
    for seed in range(100, 200):
        rng = np.random.default_rng(seed)
        X, Y = rng.standard_normal((40, 6)), rng.standard_normal((40, 9))
        A, B = R.normalize_rows(X), R.normalize_rows(Y)
        if R.hsic_unbiased(A @ A.T, B @ B.T) < 0:
            break
    else:  # pragma: no cover
        pytest.fail("no seed with negative unbiased HSIC")
    assert alignment_scores(X, Y, ["unbiased_cka"])["unbiased_cka"] == 0.0
    assert R.reference_score("unbiased_cka", X, Y) == 0.0


# ------------------------------------------------------------------------------------------------ properties


@pytest.mark.parametrize("q", [1.0, 0.9])
def test_self_alignment(q):
    X, _ = correlated_pair(seed=12, n=100, d1=24, d2=24)
    k = 10
    got = alignment_scores(X, X, k=k, q=q)
    for metric in ("mutual_knn", "cycle_knn", "edit_distance_knn"):
        assert got[metric] == 1.0, metric
    assert got["lcs_knn"] == k
    for metric in ("cka", "rbf_cka", "unbiased_cka", "svcca"):
        assert got[metric] == pytest.approx(1.0, abs=1e-9), metric
    for metric in ("cmd", "centered_cmd", "cmd_unnorm", "centered_cmd_unnorm"):
        assert got[metric] == pytest.approx(1.0, abs=1e-7), metric  # ‖C‖²/(‖C‖² + 1e-8)
    # cknna(X, X) = s/(|s| + 1e-6) with s = HSIC_u(M_K∘K, M_K∘K): slightly below 1, computed exactly
    A = R.preprocess(X, q)
    K = A @ A.T
    M = R.topk_mask(K, k)
    s = R.hsic_unbiased(M * K, M * K)
    expected = s / (abs(s) + 1e-6)
    assert got["cknna"] == pytest.approx(expected, rel=1e-9)
    assert 0 < 1 - got["cknna"] < 1e-3


@pytest.mark.parametrize("case", ["gauss_n120_k10", "clamp_rowmean_q0.95", "gram_space_n60"])
def test_symmetry(case):
    X, Y, options = case_data(case)
    swapped = alignment_scores(Y, X, SYMMETRIC, **options)
    for metric in SYMMETRIC:
        assert swapped[metric] == pytest.approx(case_fast(case)[metric], rel=1e-9, abs=1e-12), metric


def test_orthogonal_and_isotropic_scale_invariance():
    """Row normalisation commutes with X ↦ c·XQ (Q orthogonal, c > 0), and AAᵀ is unchanged, so every
    Gram-based metric is invariant; the *_unnorm cmd variants too, up to their 1e-8 epsilon."""
    X, Y = correlated_pair(seed=13, n=120, d1=18, d2=26, relu=True)
    X2 = 3.7 * X @ orthogonal(14, 18)
    Y2 = 0.25 * Y @ orthogonal(15, 26)
    names = [m for m in ALL if m != "svcca"]  # column standardisation is not rotation-equivariant
    before = alignment_scores(X, Y, names, k=12)
    after = alignment_scores(X2, Y2, names, k=12)
    for metric in ("cka", "unbiased_cka"):
        assert after[metric] == pytest.approx(before[metric], rel=1e-10), metric
    for metric in names:
        assert after[metric] == pytest.approx(before[metric], rel=1e-7, abs=1e-9), metric


def test_centered_cmd_feat_equals_cka_up_to_epsilon():
    # tr(HKH·HLH)/(‖HKH‖_F ‖HLH‖_F) is exactly linear CKA (the 1e-8 in the denominator aside)
    for case in ("gauss_n120_k10", "gram_space_n60"):
        got = case_fast(case)
        assert got["centered_cmd"] == pytest.approx(got["cka"], rel=1e-7)


@pytest.mark.parametrize("case", list(CASES))
def test_scores_within_documented_ranges(case):
    got = case_fast(case)
    k = case_data(case)[2]["k"]
    for metric in UNIT_RANGE:
        assert -1e-12 <= got[metric] <= 1 + 1e-9, metric
    assert 0 <= got["lcs_knn"] <= k
    assert all(math.isfinite(v) for v in got.values())


def test_randomized_svcca_runs_and_is_in_range():
    X, Y, _ = case_data("gauss_n120_k10")
    torch.manual_seed(0)
    first = alignment_scores(X, Y, ["svcca"], svcca_randomized=True)["svcca"]
    torch.manual_seed(0)
    again = alignment_scores(X, Y, ["svcca"], svcca_randomized=True)["svcca"]
    assert 0 <= first <= 1 + 1e-9
    assert first == again


# ----------------------------------------------------------------------------------------- blocked == dense


@pytest.mark.parametrize("case", ["gauss_n120_k10", "clamp_exact_q0.8_relu", "gram_space_n60"])
def test_blockwise_equals_unblocked(case):
    X, Y, options = case_data(case)
    blocked = alignment_scores(X, Y, **options, block_size=7)
    for metric in ALL:
        assert blocked[metric] == pytest.approx(case_fast(case)[metric], rel=1e-9, abs=1e-12), metric


def test_dense_gram_path_equals_blocked_default_path(monkeypatch):
    """The shared dense Gram (kNN search + RBF kernel, the path small N takes) against the memory-bounded
    blocked paths that large N takes (forced here by a zero dense-Gram budget, default block sizes)."""
    from mmrep.metrics.alignment import neighbors, suite

    X, Y, options = case_data("feature_space_n300_k20")
    X, Y = torch.from_numpy(X), torch.from_numpy(Y)
    opts = suite.AlignmentOptions(**options)
    assert suite.PreparedFeatures(X, opts).dense and suite.PreparedFeatures(X, opts).gram is not None
    dense = alignment_scores(X, Y, "all", **options)
    monkeypatch.setattr(neighbors, "_DENSE_GRAM_BYTES", 0)
    assert not suite.PreparedFeatures(X, opts).dense and suite.PreparedFeatures(X, opts).gram is None
    blocked = alignment_scores(X, Y, "all", **options)
    for metric in ALL:
        assert blocked[metric] == pytest.approx(dense[metric], rel=1e-12, abs=1e-14), metric
    assert dense == {m: case_fast("feature_space_n300_k20")[m] for m in ALL}


def test_blocked_sweep_equals_each_metric_alone():
    """On the blocked path the suite gets the kNN lists and RBF CKA from one sweep over the similarity blocks;
    each metric alone (no sweep) must give the very same number, and so must a layer × layer run, where later
    pairs find one side's kNN lists already cached."""
    X, Y, options = case_data("gauss_n120_k10")
    together = alignment_scores(X, Y, "all", **options, block_size=16)
    for metric in ALL:
        assert together[metric] == alignment_scores(X, Y, [metric], **options, block_size=16)[metric], metric
    Z = np.tanh(X[:, :10])
    layers = layerwise_alignment([X, Z], [Y, Z], "all", **options, block_size=16)
    for (i, Ha), (j, Hb) in itertools.product(enumerate([X, Z]), enumerate([Y, Z])):
        alone = alignment_scores(Ha, Hb, "all", **options, block_size=16)
        for metric in ALL:
            assert layers[metric].matrix[i, j] == pytest.approx(alone[metric], rel=1e-12, abs=1e-15), (metric, i, j)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_knn_and_rbf_from_a_given_gram_equal_the_blocked_search(dtype):
    from mmrep.metrics.alignment import kernels, neighbors

    X, Y, _ = case_data("gauss_n120_k10")
    A = torch.nn.functional.normalize(torch.from_numpy(X).to(dtype), dim=-1)
    B = torch.nn.functional.normalize(torch.from_numpy(Y).to(dtype), dim=-1)
    G, GB = neighbors.gram_matrix(A), neighbors.gram_matrix(B)
    before = G.clone()
    from_gram, blocked = neighbors.knn(A, 10, gram=G), neighbors.knn(A, 10, block_size=7)
    assert torch.equal(G, before)  # the diagonal masked for the search is restored
    assert torch.equal(from_gram.indices, blocked.indices)
    torch.testing.assert_close(from_gram.values, blocked.values, rtol=1e-6 if dtype == torch.float32 else 1e-14, atol=0)
    for block_size in (None, 7, 1000):
        assert kernels.rbf_cka(A, B, 0.8, block_size, G, GB) == pytest.approx(
            kernels.rbf_cka(A, B, 0.8, 13), rel=1e-5 if dtype == torch.float32 else 1e-12
        )


@pytest.mark.parametrize("n, blocks", [(5, 8), (129, 8), (300, 8), (300, 3), (1000, 16)])
def test_symmetric_blocked_gram_equals_the_full_product(n, blocks):
    from mmrep.metrics.alignment import neighbors

    H = torch.from_numpy(np.random.default_rng(n).standard_normal((n, 37)))
    G = neighbors.gram_matrix(H, blocks)
    torch.testing.assert_close(G, H @ H.T, rtol=1e-13, atol=1e-13)
    rows = max(128, -(-n // blocks))
    off_diagonal_blocks = torch.arange(n).view(-1, 1) // rows != torch.arange(n).view(1, -1) // rows
    assert torch.equal(G[off_diagonal_blocks], G.T[off_diagonal_blocks])  # mirrored, not recomputed


def _random_lists(rng, n, k1, k2, alphabet, distinct):
    if distinct:
        y = np.stack([rng.choice(alphabet, size=k2, replace=False) for _ in range(n)]) if k2 else np.zeros((n, 0))
    else:
        y = rng.integers(0, alphabet, size=(n, k2))
    # x: half its entries drawn from y's row (so there are matches), half from the alphabet
    x = rng.integers(0, alphabet, size=(n, k1))
    if k2:
        take = rng.random((n, k1)) < 0.5
        x = np.where(take, y[np.arange(n)[:, None], rng.integers(0, k2, size=(n, k1))], x)
    return torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y.astype(np.int64))


@pytest.mark.parametrize("distinct", [True, False])
@pytest.mark.parametrize(
    "k1, k2", [(10, 10), (61, 62), (63, 62), (62, 63), (100, 100), (125, 124), (7, 130), (0, 5), (5, 0)]
)
def test_bit_parallel_lcs_and_levenshtein_equal_the_textbook_tables(k1, k2, distinct):
    """One pass of the bit-parallel DPs (62-bit words; word boundaries at 62, 124) against the reference tables,
    for kNN-like rows (distinct entries: the searchsorted masks) and rows with repeats (the general masks)."""
    from mmrep.metrics.alignment import neighbors

    rng = np.random.default_rng(k1 * 1000 + k2 + distinct)
    x, y = _random_lists(rng, 6, k1, k2, alphabet=400 if distinct else 4, distinct=distinct)
    lcs, distance = neighbors.lcs_and_levenshtein(x, y)
    assert lcs.tolist() == [R.lcs_length(a, b) for a, b in zip(x.tolist(), y.tolist())]
    assert distance.tolist() == [R.levenshtein(a, b) for a, b in zip(x.tolist(), y.tolist())]
    assert torch.equal(neighbors.lcs_lengths(x, y), lcs)
    assert torch.equal(neighbors.levenshtein_distances(x, y), distance)


def test_bit_parallel_dps_identical_and_disjoint_lists():
    from mmrep.metrics.alignment import neighbors

    x = torch.arange(100).view(1, -1).repeat(2, 1)
    y = torch.stack([torch.arange(100), torch.arange(100, 200)])
    lcs, distance = neighbors.lcs_and_levenshtein(x, y)
    assert lcs.tolist() == [100, 0] and distance.tolist() == [0, 100]
    reversed_lcs, reversed_distance = neighbors.lcs_and_levenshtein(x[:1], x[:1].flip(1))
    assert reversed_lcs.tolist() == [1] and reversed_distance.tolist() == [R.levenshtein(range(100), range(99, -1, -1))]


# -------------------------------------------------------------------------------------------- layerwise


def test_layerwise_alignment():
    rng = np.random.default_rng(16)
    n = 80
    base = rng.standard_normal((n, 20))
    layers_a = [
        base[:, :12] + 0.8 * rng.standard_normal((n, 12)),
        np.tanh(base[:, :16] @ rng.standard_normal((16, 16))),
        base,
    ]
    layers_b = [
        base @ rng.standard_normal((20, 14)) + 1.5 * rng.standard_normal((n, 14)),
        2.0 * base @ orthogonal(17, 20),  # a rotated, rescaled copy of layers_a[2]
    ]
    options = dict(k=8, q=1.0)
    result = layerwise_alignment(layers_a, layers_b, "all", **options)
    assert set(result) == set(ALL)
    pairs = {
        (i, j): alignment_scores(Ha, Hb, "all", **options)
        for i, Ha in enumerate(layers_a)
        for j, Hb in enumerate(layers_b)
    }
    for metric, layer in result.items():
        assert layer.matrix.shape == (3, 2)
        for (i, j), scores in pairs.items():
            assert layer.matrix[i, j] == pytest.approx(scores[metric], rel=1e-9, abs=1e-12), (metric, i, j)
        assert layer.best == layer.matrix.max()
        assert layer.best_layers == tuple(int(v) for v in np.unravel_index(layer.matrix.argmax(), (3, 2)))
        assert layer.last == layer.matrix[-1, -1] == layer.matrix[2, 1]
    # the rotated copy is the best pair, with perfect alignment, for the rotation-invariant metrics
    for metric in ("mutual_knn", "cka", "unbiased_cka", "edit_distance_knn"):
        assert result[metric].best_layers == (2, 1), metric
        assert result[metric].best == pytest.approx(1.0, abs=1e-9), metric
    # spot-check some entries against the reference
    for metric in ("cka", "cknna", "lcs_knn"):
        for i, j in [(0, 0), (1, 1)]:
            ref = R.reference_score(metric, layers_a[i], layers_b[j], **options)
            assert result[metric].matrix[i, j] == pytest.approx(ref, **TIGHT), (metric, i, j)


def test_layerwise_alignment_best_layers_first_occurrence_and_subset():
    X, Y, _ = case_data("gauss_n120_k10")
    result = layerwise_alignment([X, Y], [X, Y], ["cka", "lcs_knn"], k=5)
    assert set(result) == {"cka", "lcs_knn"}
    # both diagonal entries are self-alignment (cka = 1, lcs = k): the first maximum is (0, 0)
    assert result["cka"].best_layers == (0, 0)
    assert result["lcs_knn"].best_layers == (0, 0)
    assert result["lcs_knn"].best == 5.0
    assert result["cka"].matrix[0, 1] == pytest.approx(result["cka"].matrix[1, 0], rel=1e-12)


# ----------------------------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def xy():
    X, Y = correlated_pair(seed=18, n=30, d1=12, d2=14)
    return X, Y


def test_error_type_is_value_error():
    assert issubclass(AlignmentInputError, ValueError)


def test_mismatched_sample_counts(xy):
    X, Y = xy
    with pytest.raises(AlignmentInputError, match=r"^X, Y"):
        alignment_scores(X[:20], Y)
    with pytest.raises(AlignmentInputError, match=r"^X, Y"):
        AL.mutual_knn(X, Y[:25], k=5)


@pytest.mark.parametrize("k", [29, 30, 31, 0, -1])
def test_bad_k(xy, k):
    X, Y = xy
    with pytest.raises(AlignmentInputError, match=r"^k"):
        alignment_scores(X, Y, ["mutual_knn"], k=k)
    with pytest.raises(AlignmentInputError, match=r"^k"):
        AL.cknna(X, Y, k=k)


def test_largest_valid_k(xy):
    X, Y = xy
    # k = N - 2: each neighbour set leaves out one other sample, so the sets of two representations can differ
    assert alignment_scores(X, Y, ["mutual_knn"], k=28)["mutual_knn"] < 1.0


def test_nan_and_inf(xy):
    X, Y = xy
    Xbad = X.copy()
    Xbad[3, 4] = np.nan
    with pytest.raises(AlignmentInputError, match=r"^X"):
        alignment_scores(Xbad, Y, k=5)
    Ybad = Y.copy()
    Ybad[0, 0] = np.inf
    with pytest.raises(AlignmentInputError, match=r"^Y"):
        AL.cka(X, Ybad)


def test_unknown_metric(xy):
    X, Y = xy
    with pytest.raises(AlignmentInputError, match=r"^metrics"):
        alignment_scores(X, Y, ["cka", "not_a_metric"])
    with pytest.raises(AlignmentInputError, match=r"^metrics"):
        layerwise_alignment([X], [Y], ["nope"])


def test_svcca_needs_width_at_least_dim(xy):
    X, Y = xy
    with pytest.raises(AlignmentInputError, match=r"^X"):
        alignment_scores(X[:, :5], Y, ["svcca"])
    with pytest.raises(AlignmentInputError, match=r"^Y"):
        AL.svcca(X, Y[:, :9])
    AL.svcca(X[:, :10], Y[:, :10])  # exactly 10 is fine


@pytest.mark.parametrize("q", [0.0, -0.1, 1.5])
def test_bad_q(xy, q):
    X, Y = xy
    with pytest.raises(AlignmentInputError, match=r"^q"):
        alignment_scores(X, Y, ["cka"], q=q)


def test_bad_cmd_contract(xy):
    X, Y = xy  # widths 12 and 14
    with pytest.raises(AlignmentInputError, match=r"^contract"):
        alignment_scores(X, Y, ["cmd"], cmd_contract="batch")
    with pytest.raises(AlignmentInputError, match=r"^contract"):
        alignment_scores(X, Y[:, :12], ["cmd"], cmd_contract="rows")


def test_bad_rbf_sigma(xy):
    X, Y = xy
    with pytest.raises(AlignmentInputError, match=r"^rbf_sigma"):
        alignment_scores(X, Y, ["rbf_cka"], rbf_sigma=0.0)
