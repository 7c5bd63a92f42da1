"""The alignment suite: metric registry, shared preprocessing and caches, layer × layer aggregation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

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
    """Shared settings of the suite (spec §4.3 defaults: k = 100, q = 1, exact quantile, σ = 1, 10 CCA dims)."""

    k: int = 100
    q: float = 1.0
    exact_quantile: bool = True
    rbf_sigma: float = 1.0
    svcca_dim: int = 10
    svcca_randomized: bool = False
    cmd_contract: str = "feat"
    block_size: int | None = None


class PreparedFeatures:
    """One (N, d) feature matrix after outlier clamping, with its normalised view and kNN lists cached, so a
    suite (or a layer × layer sweep) preprocesses and searches neighbours once per matrix."""

    def __init__(self, H: torch.Tensor, options: AlignmentOptions) -> None:
        self.options = options
        self.raw = remove_outliers(H, options.q, options.exact_quantile)
        self._normalized: torch.Tensor | None = None
        self._neighbors: neighbors.Neighbors | None = None

    def view(self, normalized: bool) -> torch.Tensor:
        if not normalized:
            return self.raw
        if self._normalized is None:
            self._normalized = normalize_rows(self.raw)
        return self._normalized

    @property
    def neighbors(self) -> neighbors.Neighbors:
        if self._neighbors is None:
            self._neighbors = neighbors.knn(self.view(True), self.options.k, self.options.block_size)
        return self._neighbors


PairFunction = Callable[[PreparedFeatures, PreparedFeatures, AlignmentOptions], float]


@dataclass(frozen=True)
class MetricInfo:
    compute: PairFunction
    uses_k: bool = False
    summary: str = field(default="", compare=False)


def _on_neighbors(score: Callable[[neighbors.Neighbors, neighbors.Neighbors], float]) -> PairFunction:
    return lambda a, b, o: score(a.neighbors, b.neighbors)


def _on_views(fn, normalized: bool = True, options: dict[str, str] | None = None, **fixed) -> PairFunction:
    """``fn(A, B, **fixed, **{arg: getattr(opts, field)})`` on the normalised (or raw, spec §4.2 step 2) views."""
    options = options or {}
    return lambda a, b, o: fn(
        a.view(normalized), b.view(normalized), **fixed, **{arg: getattr(o, name) for arg, name in options.items()}
    )


METRICS: dict[str, MetricInfo] = {
    "mutual_knn": MetricInfo(_on_neighbors(neighbors.mutual_knn_score), uses_k=True, summary="shared fraction of k-NN"),
    "cycle_knn": MetricInfo(
        lambda a, b, o: neighbors.cycle_knn_score(a.neighbors, b.neighbors, o.block_size),
        uses_k=True,
        summary="i among A-neighbours of its B-neighbours",
    ),
    "lcs_knn": MetricInfo(_on_neighbors(neighbors.lcs_knn_score), uses_k=True, summary="mean LCS of ordered k-NN (0..k)"),
    "edit_distance_knn": MetricInfo(
        _on_neighbors(neighbors.edit_distance_knn_score), uses_k=True, summary="1 - mean Levenshtein/k of k-NN lists"
    ),
    "cka": MetricInfo(_on_views(kernels.linear_cka), summary="linear CKA (biased HSIC)"),
    "rbf_cka": MetricInfo(
        _on_views(kernels.rbf_cka, options={"sigma": "rbf_sigma", "block_size": "block_size"}),
        summary="CKA with Gaussian kernels",
    ),
    "unbiased_cka": MetricInfo(_on_views(kernels.unbiased_cka), summary="linear CKA (unbiased HSIC)"),
    "cknna": MetricInfo(_on_neighbors(kernels.cknna_from_neighbors), uses_k=True, summary="CKA on mutual k-NN"),
    "svcca": MetricInfo(
        _on_views(cca.svcca, options={"dim": "svcca_dim", "randomized": "svcca_randomized"}),
        summary="mean canonical corr. of top SVD dims",
    ),
    "cmd": MetricInfo(_on_views(kernels.cmd, options={"contract": "cmd_contract"}), summary="tr(CaCb)/(|Ca||Cb|)"),
    "centered_cmd": MetricInfo(
        _on_views(kernels.cmd, options={"contract": "cmd_contract"}, center=True), summary="cmd, centred"
    ),
    "cmd_unnorm": MetricInfo(
        _on_views(kernels.cmd, normalized=False, options={"contract": "cmd_contract"}),
        summary="cmd, rows not normalised",
    ),
    "centered_cmd_unnorm": MetricInfo(
        _on_views(kernels.cmd, normalized=False, options={"contract": "cmd_contract"}, center=True),
        summary="centred cmd, rows not normalised",
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
        raise AlignmentInputError(f"{name}: unknown metric(s) {unknown or metrics}; choose from 'all' or {list(METRICS)}")
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

    ``options`` are the fields of :class:`AlignmentOptions` (``k``, ``q``, ...). Preprocessing and the kNN
    search run once per matrix and are shared by all metrics. Works on any torch device (Y follows X)."""
    X, Y = check_pair(X, Y)
    names = resolve_metrics(metrics)
    opts = _checked_options(AlignmentOptions(**options), names, X.shape[0])
    a, b = PreparedFeatures(X, opts), PreparedFeatures(Y, opts)
    return {m: float(METRICS[m].compute(a, b, opts)) for m in names}


@dataclass
class LayerAlignment:
    """Alignment of every layer pair for one metric. ``matrix[i, j]``: layer i of A vs layer j of B."""

    metric: str
    matrix: np.ndarray

    @property
    def best(self) -> float:
        """The maximum over layer pairs — the alignment the paper reports (spec §4.4)."""
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
    results = {}
    for m in names:
        matrix = np.array([[METRICS[m].compute(a, b, opts) for b in prep_b] for a in prep_a], dtype=np.float64)
        results[m] = LayerAlignment(m, matrix)
    return results
