"""``metric=alignment``: layer-wise representation alignment between a trained model's two encoders.

The pure math is :mod:`mmrep.metrics.alignment`; this module picks the encoders and samples, hooks the layers
and turns the layer × layer matrices into tidy rows (spec rus-alignment §4.1, §4.4).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import pandas as pd
import torch
from torch import nn

from mmrep.encoders.features import layer_features
from mmrep.errors import ConfigError
from mmrep.metrics.alignment import AlignmentInputError, LayerAlignment, layerwise_alignment, resolve_metrics
from mmrep.metrics.alignment.preprocess import check_k, check_q


def encoder_pair(model, modalities: Sequence[str] | None, key: str) -> tuple[tuple[str, str], nn.Module, nn.Module]:
    """The two encoders to compare: ``modalities`` if given, else the model's contrasted pair, else its first two."""
    encoders = getattr(model, "encoders", None)
    if not isinstance(encoders, nn.ModuleDict) or len(encoders) < 2:
        raise ConfigError(f"{key}: objective {type(model).__name__} has no two per-modality encoders to align")
    pair = tuple(modalities) if modalities else tuple(getattr(model, "pair", None) or list(encoders)[:2])
    if len(pair) != 2 or any(m not in encoders for m in pair):
        raise ConfigError(f"{key}.modalities: needs two of the model's encoders {list(encoders)}, got {list(pair)}")
    return pair, encoders[pair[0]], encoders[pair[1]]


def heldout_inputs(datamodule, pair: Sequence[str], n: int, key: str) -> dict[str, torch.Tensor]:
    """The fixed alignment samples, ``datamodule.heldout("align", n)``, as one (N, ...) tensor per modality of
    ``pair`` (N may be below ``n`` when the dataset's held-out split is smaller)."""
    if datamodule is None or not hasattr(datamodule, "heldout"):
        raise ConfigError(f"{key}: dataset {type(datamodule).__name__} provides no held-out set (heldout())")
    batches = datamodule.heldout("align", n)
    return {m: torch.cat([b[m] for b in batches]) for m in pair}


def alignment_rows(
    results: dict[str, LayerAlignment], names_a: list[str], names_b: list[str], per_layer: bool = True, **columns
) -> list[dict]:
    """Tidy rows: per metric the ``max`` over layer pairs (with its layers), the ``last`` pair and, with
    ``per_layer``, every pair (``aggregate="layer"``); ``columns`` are added to every row."""
    rows = []
    for metric, res in results.items():
        i, j = res.best_layers
        rows.append({"metric": metric, "aggregate": "max", "layer_a": names_a[i], "layer_b": names_b[j], "value": res.best, **columns})
        rows.append({"metric": metric, "aggregate": "last", "layer_a": names_a[-1], "layer_b": names_b[-1], "value": res.last, **columns})
        if per_layer:
            for i, la in enumerate(names_a):
                for j, lb in enumerate(names_b):
                    rows.append({"metric": metric, "aggregate": "layer", "layer_a": la, "layer_b": lb, "value": float(res.matrix[i, j]), **columns})
    return rows


class Alignment:
    """Alignment between the layers of two encoders on a fixed held-out set (``datamodule.heldout("align", n)``).

    Args:
        metrics: ``"all"`` or names from :data:`mmrep.metrics.alignment.METRICS`.
        k, q, exact_quantile, rbf_sigma, svcca_dim: the suite's options (spec §4.2–4.3: k = 100, q = 1).
        n: held-out samples (spec §4.1: the first test batch, 512).
        modalities: the two encoders to compare; the model's contrasted pair (or first two) when ``None``.
        include_output: also use each encoder's final output as a layer (the paper hooks activations only).
        per_layer: also write every layer pair's value, not just ``max`` and ``last``.

    Rows: ``metric, modality ("a|b"), aggregate (max|last|layer), layer_a, layer_b, value, split, n, k, q``.
    """

    def __init__(
        self,
        metrics: str | Iterable[str] = "all",
        k: int = 100,
        q: float = 1.0,
        n: int = 512,
        exact_quantile: bool = True,
        rbf_sigma: float = 1.0,
        svcca_dim: int = 10,
        modalities: Sequence[str] | None = None,
        include_output: bool = False,
        per_layer: bool = True,
        config_key: str = "metric.alignment",
    ) -> None:
        self.key = config_key  # error messages name this config node
        if int(n) < 4:
            raise ConfigError(f"{self.key}.n: needs at least 4 held-out samples, got {n}")
        try:  # the library's own checks; their messages start with the argument name
            self.metrics = resolve_metrics(metrics)
            check_k(k, int(n))
            check_q(q)
        except AlignmentInputError as err:
            raise ConfigError(f"{self.key}.{err}") from None
        self.n, self.modalities, self.include_output, self.per_layer = int(n), modalities, include_output, per_layer
        self.options = dict(k=int(k), q=float(q), exact_quantile=exact_quantile, rbf_sigma=rbf_sigma, svcca_dim=svcca_dim)

    def layer_features(self, model, datamodule) -> tuple[tuple[str, str], tuple[list[str], list], tuple[list[str], list]]:
        pair, enc_a, enc_b = encoder_pair(model, self.modalities, self.key)
        inputs = heldout_inputs(datamodule, pair, self.n, self.key)
        a = layer_features(enc_a, [inputs[pair[0]]], self.include_output)
        b = layer_features(enc_b, [inputs[pair[1]]], self.include_output)
        return pair, a, b

    def compute(self, pair, features_a, features_b) -> pd.DataFrame:
        (names_a, layers_a), (names_b, layers_b) = features_a, features_b
        try:
            results = layerwise_alignment(layers_a, layers_b, self.metrics, **self.options)
        except AlignmentInputError as err:
            raise ConfigError(f"{self.key}: {err}") from None
        columns = dict(
            modality=f"{pair[0]}|{pair[1]}", split="align", n=layers_a[0].shape[0], k=self.options["k"], q=self.options["q"]
        )
        return pd.DataFrame(alignment_rows(results, names_a, names_b, per_layer=self.per_layer, **columns))

    def __call__(self, model, datamodule) -> pd.DataFrame:
        return self.compute(*self.layer_features(model, datamodule))
