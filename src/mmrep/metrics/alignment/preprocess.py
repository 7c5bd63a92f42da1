"""Input checks and the preprocessing every alignment metric applies first (multimodal_alignment
utils/align_metrics.py)."""

from __future__ import annotations

import numpy as np
import torch


class AlignmentInputError(ValueError):
    """Bad input to an alignment function; the message starts with the offending argument's name."""


def as_features(H, name: str) -> torch.Tensor:
    """``H`` as a floating (N, d) tensor; raises :class:`AlignmentInputError` naming ``name`` otherwise."""
    if isinstance(H, np.ndarray):
        H = torch.from_numpy(np.ascontiguousarray(H))
    if not isinstance(H, torch.Tensor):
        raise AlignmentInputError(f"{name}: expected a tensor or numpy array, got {type(H).__name__}")
    if H.ndim != 2:
        raise AlignmentInputError(f"{name}: expected a 2-D (N, d) feature matrix, got shape {tuple(H.shape)}")
    if H.shape[0] < 4 or H.shape[1] < 1:
        raise AlignmentInputError(f"{name}: needs at least 4 samples and 1 feature, got shape {tuple(H.shape)}")
    if not H.is_floating_point():
        H = H.float()
    if not bool(torch.isfinite(H).all()):
        bad = (~torch.isfinite(H)).sum().item()
        raise AlignmentInputError(f"{name}: contains {bad} NaN/inf entries; alignment needs finite features")
    return H


def check_pair(X, Y, names: tuple[str, str] = ("X", "Y")) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a paired feature pair: both (N, ·) with the same N; Y is moved to X's device and dtype."""
    X, Y = as_features(X, names[0]), as_features(Y, names[1])
    if X.shape[0] != Y.shape[0]:
        raise AlignmentInputError(
            f"{names[0]}, {names[1]}: sample counts differ ({X.shape[0]} vs {Y.shape[0]}); "
            "row i of both must be the same sample"
        )
    dtype = torch.promote_types(X.dtype, Y.dtype)
    return X.to(dtype), Y.to(device=X.device, dtype=dtype)


def max_k(n: int) -> int:
    """The most nearest neighbours that still leave N samples a non-neighbour each: N − 2 (see :func:`check_k`)."""
    return n - 2


def check_k(k: int, n: int, name: str = "k") -> int:
    """``k`` nearest neighbours of N samples need 1 <= k <= N − 2. The sample itself never counts as a neighbour,
    so with k >= N − 1 every other sample is one: the neighbour sets of any two representations agree and mutual
    kNN is 1 whatever the features."""
    if isinstance(k, bool) or int(k) != k or not 1 <= int(k) <= max_k(n):
        why = ""
        if not isinstance(k, bool) and int(k) == k and int(k) >= max(n - 1, 1):
            why = (
                f" (N = {n} samples: with k >= N-1 every other sample is a neighbour, so the neighbour sets of any "
                "two representations agree and mutual kNN is 1 for any features)"
            )
        raise AlignmentInputError(f"{name}: must be an integer in [1, N-2] = [1, {max_k(n)}], got {k!r}{why}")
    return int(k)


def check_q(q: float, name: str = "q") -> float:
    if not 0.0 < float(q) <= 1.0:
        raise AlignmentInputError(f"{name}: the outlier quantile must be in (0, 1], got {q!r}")
    return float(q)


def _row_quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """Per-row ``q``-quantile with linear interpolation (``torch.quantile``'s default, without its size limit)."""
    ordered = values.sort(dim=1).values
    position = q * (values.shape[1] - 1)
    lo, frac = int(position), position - int(position)
    hi = min(lo + 1, values.shape[1] - 1)
    return ordered[:, lo] + frac * (ordered[:, hi] - ordered[:, lo])


def remove_outliers(H: torch.Tensor, q: float = 1.0, exact: bool = True) -> torch.Tensor:
    """Clamp ``H`` (N, d) to ``[-v, v]`` (align_metrics.py ``remove_outliers``); ``q = 1`` returns ``H`` unchanged.

    ``exact``: ``v`` is the entry at index ``int(q * numel)`` of the ascending |H| (multimodal_alignment);
    otherwise the mean over rows of each row's ``q``-quantile of |H| (the platonic vision–language code)."""
    q = check_q(q)
    if q == 1.0:
        return H
    magnitude = H.abs()
    if exact:
        flat = magnitude.flatten()
        v = torch.kthvalue(flat, min(int(q * flat.numel()), flat.numel() - 1) + 1).values  # kthvalue is 1-based
    else:
        v = _row_quantile(magnitude, q).mean()
    return H.clamp(-v, v)


def normalize_rows(H: torch.Tensor) -> torch.Tensor:
    """Unit L2 norm per row (align_metrics.py; zero rows stay zero, as ``F.normalize``)."""
    return torch.nn.functional.normalize(H, dim=-1)
