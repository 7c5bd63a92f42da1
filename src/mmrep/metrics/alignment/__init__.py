"""Representation alignment between two feature matrices (multimodal_alignment utils/align_metrics.py).

Every metric is a pure function ``f(X, Y, ...) -> float`` of paired features X (N, d1), Y (N, d2) — torch
tensors on any device, or numpy arrays — applying the original's preprocessing (outlier clamp at quantile ``q``,
row L2-normalisation except for ``*_unnorm``) before its definition. :func:`alignment_scores` runs several
metrics sharing preprocessing and neighbour search; :func:`layerwise_alignment` does every layer pair.
"""

from __future__ import annotations

from mmrep.metrics.alignment.preprocess import AlignmentInputError, remove_outliers
from mmrep.metrics.alignment.suite import (
    METRICS,
    AlignmentOptions,
    LayerAlignment,
    alignment_scores,
    layerwise_alignment,
    resolve_metrics,
)

__all__ = [
    "METRICS",
    "AlignmentInputError",
    "AlignmentOptions",
    "LayerAlignment",
    "alignment_scores",
    "layerwise_alignment",
    "remove_outliers",
    "resolve_metrics",
    *METRICS,
]


def _single(metric: str):
    def score(X, Y, **options) -> float:
        return alignment_scores(X, Y, [metric], **options)[metric]

    score.__name__ = score.__qualname__ = metric
    score.__doc__ = (
        f"``{metric}`` alignment of paired features X (N, d1) and Y (N, d2): {METRICS[metric].summary}.\n\n"
        "Keyword options as :class:`AlignmentOptions` (k, q, exact_quantile, rbf_sigma, svcca_dim, ...)."
    )
    return score


for _name in METRICS:
    globals()[_name] = _single(_name)
del _name
