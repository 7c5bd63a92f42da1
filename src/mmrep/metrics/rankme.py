"""``metric=rankme``: the effective rank of each representation (RankMe, Garrido et al. 2023, arXiv:2210.02885).

RankMe is the exponential of the entropy of the normalised singular values of the embedding matrix (Eq. 1): it
reaches ``min(n, d)`` when the embeddings spread evenly over every direction and 1 when they collapse onto one.
It needs no labels, so it monitors dimensional collapse on any dataset (``callbacks=rankme`` during training,
:class:`mmrep.callbacks.online_eval.RankMeCallback`).
"""

from __future__ import annotations

import math

import pandas as pd
import torch

from mmrep.core.contract import require_samples
from mmrep.core.errors import ConfigError
from mmrep.metrics.common import encode_on_device, require_heldout


def rankme(z: torch.Tensor, eps: float = 1e-7) -> float:
    """RankMe of the embeddings ``z`` (n, d) (arXiv:2210.02885, Eq. 1).

    With σ the singular values of ``z`` (``min(n, d)`` of them), ``p_k = σ_k / ‖σ‖₁ + eps`` and
    ``RankMe = exp(−Σ_k p_k log p_k)``. The SVD runs in float32 on ``z``'s device; only the scalar comes back.
    A rank-r matrix with r equal singular values gives r (up to ``eps``: its ``min(n, d) − r`` zero singular
    values add about ``(min(n, d) − r) · eps · log(1/eps)``, relatively); an all-zero matrix gives ≈ 1.
    """
    if z.ndim != 2:
        raise ValueError(f"rankme: needs a (n, d) matrix, got shape {tuple(z.shape)}")
    sigma = torch.linalg.svdvals(z.detach().to(torch.float32))  # (min(n, d),)
    p = sigma / sigma.sum().clamp_min(torch.finfo(torch.float32).tiny) + eps
    return float(torch.exp(-torch.special.xlogy(p, p).sum()))  # xlogy: 0 log 0 = 0 (eps = 0, exact zeros)


def rankme_reason(z: torch.Tensor) -> str | None:
    """Why RankMe has no value on the embeddings ``z`` (n, d), None when it has one: non-finite entries, or all
    zero (no singular value to normalise: p = 0/0, which :func:`rankme`'s ``eps`` turns into a rank of 1)."""
    bad = int((~torch.isfinite(z)).any(1).sum())
    if bad:
        return f"{bad} of the {z.shape[0]} embeddings are NaN/inf"
    if not bool(z.any()):
        return f"the {z.shape[0]} embeddings are all zero: RankMe normalises their singular values by their sum, 0"
    return None


class RankMe:
    """RankMe of each encoder's representation of ``n`` held-out samples of ``split``.

    Args:
        n: samples (the split's first ``n``; ``None``: the whole split). RankMe is at most ``min(n, d)``, so ``n``
            should well exceed the embedding width ``d`` (the paper uses ~25 600 samples for d = 8192).
        split: the held-out split (``train``, ``val``, ``test``).
        eps: as :func:`rankme`.

    Rows: ``metric=rankme, modality, split, value, n, dim`` (``dim``: the embedding width d); NaN with a ``reason``
    for embeddings that are all zero or not finite (:func:`rankme_reason`).
    """

    def __init__(
        self, n: int | None = 2048, split: str = "val", config_key: str = "metric.rankme", eps: float = 1e-7
    ) -> None:
        self.key = config_key
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 2):
            raise ConfigError(f"{self.key}.n: an integer >= 2 or null (the whole split), got {n!r}")
        if not float(eps) >= 0:
            raise ConfigError(f"{self.key}.eps: must be >= 0, got {eps!r}")
        self.n, self.split, self.eps = n, str(split), float(eps)

    def check(self, model, datamodule) -> None:
        """Before training: encoders to measure and at least 2 samples in the split."""
        if not getattr(model, "encoders", None):
            raise ConfigError(f"{self.key}: objective {type(model).__name__} has no encoders to measure")
        try:
            require_samples(require_heldout(datamodule, self.key), self.split, self.n, 2, f"{self.key}.n")
        except ConfigError:
            raise
        except ValueError as err:  # an unknown split
            raise ConfigError(f"{self.key}.split: {err}") from None

    def __call__(self, model, datamodule) -> pd.DataFrame:
        self.check(model, datamodule)
        z = encode_on_device(model, datamodule.heldout(self.split, self.n))
        rows = []
        for m, h in z.items():
            reason = rankme_reason(h)
            row = {
                "metric": "rankme",
                "modality": m,
                "split": self.split,
                "value": math.nan if reason else rankme(h, self.eps),
                "n": int(h.shape[0]),
                "dim": int(h.shape[1]),
            }
            rows.append(row | {"reason": reason} if reason else row)
        return pd.DataFrame(rows)
