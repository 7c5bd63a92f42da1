"""The alignment suite: metric registry, shared preprocessing and caches, layer × layer aggregation."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch

from mmrep.metrics.alignment import cca, kernels, neighbors
from mmrep.metrics.alignment.preprocess import (
    AlignmentInputError,
    as_features,
    check_k,
    check_pair,
    check_q,
    normalize_rows,
    remove_outliers,
)


@dataclass(frozen=True)
class AlignmentOptions:
    """Shared settings of the suite (multimodal_alignment defaults: k = 100, q = 1, exact quantile, σ = 1, 10 CCA
    dims)."""

    k: int = 100
    q: float = 1.0
    exact_quantile: bool = True
    rbf_sigma: float = 1.0
    svcca_dim: int = 10
    svcca_randomized: bool = False
    cmd_contract: str = "feat"
    block_size: int | None = None


class PreparedFeatures:
    """One (N, d) feature matrix after outlier clamping, with its normalised view, its Gram matrix and its kNN
    lists cached, so a suite (or a layer × layer sweep) preprocesses, multiplies and searches neighbours once per
    matrix.

    The dense Gram ``ĤĤᵀ`` of the normalised view is kept where it fits (``neighbors.dense_gram_fits``: up to
    512 MiB, N ≤ 11,585 in float32) and no ``block_size`` was asked for; the kNN search and the RBF kernel both
    read it. Larger N (or an explicit ``block_size``) takes the blocked, memory-bounded paths instead."""

    def __init__(self, H: torch.Tensor, options: AlignmentOptions) -> None:
        self.options = options
        self.raw = remove_outliers(H, options.q, options.exact_quantile)
        self._normalized: torch.Tensor | None = None
        self._gram: torch.Tensor | None = None
        self._neighbors: neighbors.Neighbors | None = None
        self._sorted: neighbors.SortedLists | None = None
        self._centered_norms: dict[bool, torch.Tensor] = {}

    def view(self, normalized: bool) -> torch.Tensor:
        if not normalized:
            return self.raw
        if self._normalized is None:
            self._normalized = normalize_rows(self.raw)
        return self._normalized

    @property
    def dense(self) -> bool:
        """Whether the shared dense Gram matrix is used (else the blocked paths)."""
        return self.options.block_size is None and neighbors.dense_gram_fits(self.raw.shape[0], self.raw.dtype)

    @property
    def gram(self) -> torch.Tensor | None:
        """The dense Gram matrix of the normalised view, computed on first use; None on the blocked path."""
        if self._gram is None and self.dense:
            self._gram = neighbors.gram_matrix(self.view(True))
        return self._gram

    def release_gram(self) -> None:
        """Drop the dense Gram matrix (recomputed if asked for again); the kNN lists stay cached."""
        self._gram = None

    @property
    def neighbors(self) -> neighbors.Neighbors:
        if self._neighbors is None:
            self._neighbors = neighbors.knn(self.view(True), self.options.k, self.options.block_size, self.gram)
        return self._neighbors

    @property
    def sorted_neighbors(self) -> neighbors.SortedLists:
        """The kNN lists sorted within each row (membership tests of mutual / cycle kNN, CKNNA, LCS)."""
        if self._sorted is None:
            self._sorted = neighbors.sort_lists(self.neighbors.indices)
        return self._sorted

    def centered_norms(self, normalized: bool) -> torch.Tensor:
        """``‖h̃_i‖²`` of the column-centred view, (N,)."""
        if normalized not in self._centered_norms:
            self._centered_norms[normalized] = kernels.center_columns(self.view(normalized)).square().sum(1)
        return self._centered_norms[normalized]


class PreparedPair:
    """Two prepared matrices and what their metrics share: the linear-kernel products of each view (linear CKA,
    unbiased CKA and centred CMD all use those of the centred, normalised features), the LCS / edit distances of
    the kNN lists (one pass for both) and the kNN matches (mutual kNN, CKNNA).

    On the blocked path (no dense Gram), when ``metrics`` include RBF CKA and a kNN metric, one sweep over row
    blocks of both similarity matrices gives the kNN lists still missing and the RBF sums: each block product
    serves both, as the dense Gram does for small N."""

    def __init__(
        self, a: PreparedFeatures, b: PreparedFeatures, options: AlignmentOptions, metrics: Iterable[str] = ()
    ) -> None:
        self.a, self.b, self.options = a, b, options
        metrics = set(metrics)
        self._fuse = "rbf_cka" in metrics and any(METRICS[m].uses_k for m in metrics) and not a.dense
        self._linear: dict[tuple[bool, bool], tuple[float, float, float]] = {}
        self._sequences: tuple[torch.Tensor, torch.Tensor] | None = None
        self._match: tuple[torch.Tensor, torch.Tensor] | None = None
        self._rbf: float | None = None

    def _lists(self, f: PreparedFeatures) -> neighbors.Neighbors:
        if self._fuse and self._rbf is None and f._neighbors is None:
            self._sweep()
        return f.neighbors

    @property
    def knn_a(self) -> neighbors.Neighbors:
        return self._lists(self.a)

    @property
    def knn_b(self) -> neighbors.Neighbors:
        return self._lists(self.b)

    @property
    def sorted_a(self) -> neighbors.SortedLists:
        self._lists(self.a)
        return self.a.sorted_neighbors

    @property
    def sorted_b(self) -> neighbors.SortedLists:
        self._lists(self.b)
        return self.b.sorted_neighbors

    @property
    def rbf_cka(self) -> float:
        if self._rbf is None:
            if self._fuse and (self.a._neighbors is None or self.b._neighbors is None):
                self._sweep()
            else:
                a, b, o = self.a, self.b, self.options
                self._rbf = kernels.rbf_cka(a.view(True), b.view(True), o.rbf_sigma, o.block_size, a.gram, b.gram)
        return self._rbf

    def _sweep(self) -> None:
        """Blocked path: row blocks of ``ÂÂᵀ`` and ``B̂B̂ᵀ`` → the missing kNN lists and the RBF CKA, with the
        same blocks (hence the same values) as ``neighbors.knn`` and ``kernels.rbf_cka`` each on their own."""
        a, b, o = self.a, self.b, self.options
        A, B = a.view(True), b.view(True)
        n, k = A.shape[0], o.k
        sums = kernels.RBFSums(A.square().sum(1), B.square().sum(1), o.rbf_sigma)
        missing = [f for f in (a, b) if f._neighbors is None]
        lists = {
            f: neighbors.Neighbors(
                torch.empty(n, k, dtype=torch.long, device=A.device), torch.empty(n, k, dtype=A.dtype, device=A.device)
            )
            for f in missing
        }
        rows = neighbors.block_rows(n, n, o.block_size)
        for start in range(0, n, rows):
            stop = min(n, start + rows)
            blocks = []
            for f, H in ((a, A), (b, B)):
                sims = H[start:stop] @ H.T
                if f in lists:
                    lists[f].values[start:stop], lists[f].indices[start:stop] = neighbors.knn_rows(sims, start, k)
                blocks.append(sims)
            sums.add(start, *blocks, overwrite=True)
        for f, found in lists.items():
            f._neighbors = found
        self._rbf = sums.cka()

    def linear_products(self, normalized: bool, centered: bool) -> tuple[float, float, float]:
        """``(⟨K,L⟩_F, ⟨K,K⟩_F, ⟨L,L⟩_F)`` of the linear kernels of the (centred) views."""
        key = (normalized, centered)
        if key not in self._linear:
            A, B = self.a.view(normalized), self.b.view(normalized)
            if centered:
                A, B = kernels.center_columns(A), kernels.center_columns(B)
                for f, H in ((self.a, A), (self.b, B)):  # unbiased CKA's row norms, while the centred view exists
                    if normalized not in f._centered_norms:
                        f._centered_norms[normalized] = H.square().sum(1)
            self._linear[key] = kernels.linear_kernel_products(A, B)
        return self._linear[key]

    @property
    def sequences(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-row LCS lengths and Levenshtein distances of the two ordered kNN lists, (N,) each."""
        if self._sequences is None:
            self._sequences = neighbors.lcs_and_levenshtein(self.knn_a.indices, self.knn_b.indices, self.sorted_b)
        return self._sequences

    @property
    def match(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``neighbors.match_neighbors`` of the two kNN lists (mutual kNN, CKNNA)."""
        if self._match is None:
            self._match = neighbors.match_neighbors(self.knn_a, self.knn_b, self.sorted_b)
        return self._match


PairFunction = Callable[[PreparedPair], float]


@dataclass(frozen=True)
class MetricInfo:
    """A metric of the suite. ``degenerate``: the :class:`Degeneracy` of either input under which the metric is
    undefined (``direction``: the row-normalised view has zero variance; ``constant``: the raw features have;
    ``zero``: the features are all zero)."""

    compute: PairFunction
    uses_k: bool = False
    summary: str = field(default="", compare=False)
    degenerate: str = "direction"


class Degeneracy(NamedTuple):
    """What a feature matrix (N, d) tells apart: ``zero`` every entry is 0; ``constant`` every row is the same;
    ``direction`` every row is the same after L2-normalising rows (rows differing only by a positive scale, or
    all zero) — the view every metric but the ``*_unnorm`` ones reads."""

    zero: bool
    constant: bool
    direction: bool


def _same_rows(H: torch.Tensor) -> bool:
    """Every row of ``H`` (N, d) equals the first, up to a few ulps of its largest entry (a constant matrix's
    centring leaves round-off, not signal)."""
    scale = float(H.abs().max())
    return float((H - H[:1]).abs().max()) <= 16 * torch.finfo(H.dtype).eps * scale


def degeneracy(H: torch.Tensor) -> Degeneracy:
    """The :class:`Degeneracy` of a floating (N, d) feature matrix (before any outlier clamp)."""
    zero = not bool(H.any())
    return Degeneracy(zero, zero or _same_rows(H), zero or _same_rows(normalize_rows(H)))


def undefined_reason(metric: str, flags: Degeneracy, what: str, n: int) -> str | None:
    """Why ``metric`` has no value on the features ``what`` (e.g. ``"x layer act1"``) of ``n`` samples with the
    :class:`Degeneracy` ``flags``; None where it is defined."""
    info = METRICS[metric]
    if not getattr(flags, info.degenerate):
        return None
    if flags.zero:
        state = f"are all zero over the {n} samples"
    elif flags.constant:
        state = f"are the same for all {n} samples (zero variance)"
    else:
        state = f"point the same way for all {n} samples (zero variance once each row is L2-normalised)"
    outcome = "all similarities tie, so the k-NN lists are arbitrary" if info.uses_k else f"{metric} is 0/0"
    return f"the features of {what} {state}: {outcome}"


def _cmd(normalized: bool, center: bool) -> PairFunction:
    """The CMD variant; ``contract="feat"`` reads the pair's shared linear-kernel products."""

    def compute(p: PreparedPair) -> float:
        if p.options.cmd_contract == "feat":
            return kernels.cmd_from_products(*p.linear_products(normalized, center))
        return kernels.cmd(p.a.view(normalized), p.b.view(normalized), contract=p.options.cmd_contract, center=center)

    return compute


METRICS: dict[str, MetricInfo] = {
    "mutual_knn": MetricInfo(
        lambda p: neighbors.mutual_knn_score(p.knn_a, p.knn_b, p.match[0]),
        uses_k=True,
        summary="shared fraction of k-NN",
    ),
    "cycle_knn": MetricInfo(
        lambda p: neighbors.cycle_knn_score(p.knn_a, p.knn_b, p.sorted_a),
        uses_k=True,
        summary="i among A-neighbours of its B-neighbours",
    ),
    "lcs_knn": MetricInfo(
        lambda p: neighbors.lcs_knn_from_lengths(p.sequences[0]), uses_k=True, summary="mean LCS of ordered k-NN (0..k)"
    ),
    "edit_distance_knn": MetricInfo(
        lambda p: neighbors.edit_distance_knn_from_distances(p.sequences[1], p.options.k),
        uses_k=True,
        summary="1 - mean Levenshtein/k of k-NN lists",
    ),
    "cka": MetricInfo(
        lambda p: kernels.cka_from_products(*p.linear_products(True, True)), summary="linear CKA (biased HSIC)"
    ),
    "rbf_cka": MetricInfo(lambda p: p.rbf_cka, summary="CKA with Gaussian kernels"),
    "unbiased_cka": MetricInfo(
        lambda p: kernels.unbiased_cka_from_products(
            p.linear_products(True, True), p.a.centered_norms(True), p.b.centered_norms(True)
        ),
        summary="linear CKA (unbiased HSIC)",
    ),
    "cknna": MetricInfo(
        lambda p: kernels.cknna_from_neighbors(p.knn_a, p.knn_b, p.sorted_a, p.sorted_b, p.match),
        uses_k=True,
        summary="CKA on mutual k-NN",
    ),
    "svcca": MetricInfo(
        lambda p: cca.svcca(
            p.a.view(True), p.b.view(True), dim=p.options.svcca_dim, randomized=p.options.svcca_randomized
        ),
        summary="mean canonical corr. of top SVD dims",
    ),
    "cmd": MetricInfo(_cmd(True, False), summary="tr(CaCb)/(|Ca||Cb|)", degenerate="zero"),
    "centered_cmd": MetricInfo(_cmd(True, True), summary="cmd, centred"),
    "cmd_unnorm": MetricInfo(_cmd(False, False), summary="cmd, rows not normalised", degenerate="zero"),
    "centered_cmd_unnorm": MetricInfo(
        _cmd(False, True), summary="centred cmd, rows not normalised", degenerate="constant"
    ),
}


def resolve_metrics(metrics: str | Iterable[str], name: str = "metrics") -> list[str]:
    """``"all"``, a comma-separated string or a list of names → validated list of metric names."""
    if isinstance(metrics, str):
        metrics = [m.strip() for m in metrics.split(",") if m.strip()]
    metrics = list(metrics)
    if metrics == ["all"]:
        return list(METRICS)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise AlignmentInputError(
            f"{name}: unknown metric(s) {unknown or metrics}; choose from 'all' or {list(METRICS)}"
        )
    return list(dict.fromkeys(metrics))


def _checked_options(options: AlignmentOptions, metrics: list[str], n: int) -> AlignmentOptions:
    check_q(options.q)
    if any(METRICS[m].uses_k for m in metrics):
        check_k(options.k, n)
    if options.rbf_sigma <= 0:
        raise AlignmentInputError(f"rbf_sigma: must be > 0, got {options.rbf_sigma}")
    return options


def alignment_scores(X, Y, metrics: str | Iterable[str] = "all", **options) -> dict[str, float]:
    """Alignment between paired features X (N, d1) and Y (N, d2) for each requested metric.

    ``options`` are the fields of :class:`AlignmentOptions` (``k``, ``q``, ...). Preprocessing, the Gram matrix
    and the kNN search run once per matrix and are shared by all metrics. Works on any torch device (Y follows X)."""
    X, Y = check_pair(X, Y)
    names = resolve_metrics(metrics)
    opts = _checked_options(AlignmentOptions(**options), names, X.shape[0])
    pair = PreparedPair(PreparedFeatures(X, opts), PreparedFeatures(Y, opts), opts, names)
    return {m: float(METRICS[m].compute(pair)) for m in names}


@dataclass
class LayerAlignment:
    """Alignment of every layer pair for one metric. ``matrix[i, j]``: layer i of A vs layer j of B."""

    metric: str
    matrix: np.ndarray

    @property
    def best(self) -> float:
        """The maximum over layer pairs — the alignment the paper reports (scripts/get_alignment.py)."""
        return float(self.matrix.max())

    @property
    def best_layers(self) -> tuple[int, int]:
        """(i, j) of the maximum, 0-based (first occurrence)."""
        i, j = np.unravel_index(int(self.matrix.argmax()), self.matrix.shape)
        return int(i), int(j)

    @property
    def last(self) -> float:
        """Last layer of A vs last layer of B."""
        return float(self.matrix[-1, -1])


def layerwise_alignment(
    layers_a: Sequence, layers_b: Sequence, metrics: str | Iterable[str] = "all", **options
) -> dict[str, LayerAlignment]:
    """Every metric on every (layer of A, layer of B) pair; each layer is an (N, d_l) matrix of the same N
    samples. Each layer is preprocessed and searched for neighbours once, not once per pair."""
    if not layers_a or not layers_b:
        raise AlignmentInputError("layers: both encoders need at least one layer of features")
    names = resolve_metrics(metrics)
    first_a, first_b = check_pair(layers_a[0], layers_b[0], ("layers_a[0]", "layers_b[0]"))
    opts = _checked_options(AlignmentOptions(**options), names, first_a.shape[0])

    def prepare(layers: Sequence, side: str, first: torch.Tensor) -> list[PreparedFeatures]:
        """Layer 0 was validated with its counterpart; the others are checked against it here."""
        checked = [first]
        for i, H in enumerate(layers[1:], start=1):
            H = as_features(H, f"layers_{side}[{i}]")
            if H.shape[0] != first.shape[0]:
                raise AlignmentInputError(f"layers_{side}[{i}]: has {H.shape[0]} samples, layer 0 has {first.shape[0]}")
            checked.append(H.to(device=first.device, dtype=first.dtype))
        return [PreparedFeatures(H, opts) for H in checked]

    prep_a, prep_b = prepare(layers_a, "a", first_a), prepare(layers_b, "b", first_b)
    matrices = {m: np.empty((len(prep_a), len(prep_b)), dtype=np.float64) for m in names}
    for i, a in enumerate(prep_a):
        for j, b in enumerate(prep_b):
            pair = PreparedPair(a, b, opts, names)
            for m in names:
                matrices[m][i, j] = METRICS[m].compute(pair)
            b.release_gram()  # at most two dense Gram matrices alive; the kNN lists stay cached
        a.release_gram()
    return {m: LayerAlignment(m, matrix) for m, matrix in matrices.items()}
