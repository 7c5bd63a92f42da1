"""``metric=lm_performance`` (part of ``metric=vl_alignment``): a language model's performance on the held-out
texts as bits per byte (platonic-rep-unique measure_alignment.py): each text's summed next-token cross-entropy in nats ×
log2(e) divided by its UTF-8 byte count, averaged over texts; performance = −bpb."""

from __future__ import annotations

import math

import pandas as pd
import torch

from mmrep.core.errors import ConfigError
from mmrep.metrics.common import heldout_inputs


class LanguageModelPerformance:
    """Rows ``metric (bits_per_byte | lm_performance), modality, value, split, n`` for every encoder that scores
    text (``bits_per_byte()``, e.g. ``encoder=hf_lm``). ``n``: held-out texts (``None``: the dataset's align set).
    NaN with a ``reason`` when a text's cross-entropy is not finite."""

    def __init__(self, n: int | None = None) -> None:
        if n is not None and int(n) < 1:
            raise ConfigError(f"metric.lm_performance.n: a positive number of texts or null, got {n}")
        self.n = None if n is None else int(n)

    @staticmethod
    def _scorers(model) -> list[str]:
        return [m for m, enc in getattr(model, "encoders", {}).items() if hasattr(enc, "bits_per_byte")]

    def check(self, model, datamodule) -> None:
        if not self._scorers(model):
            raise ConfigError("metric.lm_performance: no encoder scores text (use encoder=hf_lm on a text modality)")

    def __call__(self, model, datamodule) -> pd.DataFrame:
        rows = []
        for m in self._scorers(model):
            x = heldout_inputs(datamodule, [m], self.n, "metric.lm_performance")[m]
            bpb = model.encoders[m].bits_per_byte(x)
            bad = int((~torch.isfinite(bpb)).sum())
            reason = f"{bad} of the {len(bpb)} texts have a non-finite cross-entropy under {m}" if bad else None
            for metric, value in (("bits_per_byte", bpb.mean()), ("lm_performance", -bpb.mean())):
                row = {"metric": metric, "modality": m, "value": float(value), "split": "align", "n": len(bpb)}
                rows.append(row | {"value": math.nan, "reason": reason} if reason else row)
        return pd.DataFrame(rows)
