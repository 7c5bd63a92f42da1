"""``metric=alignment``: layer-wise representation alignment between pairs of a model's encoders.

The pure math is :mod:`mmrep.metrics.alignment`; this module picks the encoder pairs and samples, reads each
encoder's layers and turns the layer × layer matrices into tidy rows, one set per pair (spec rus-alignment §4.1,
§4.4; MultiBench pairs 0-1/0-2/1-2, §5.2).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import pandas as pd
import torch
from torch import nn

from mmrep.data.contract import concat_batches
from mmrep.encoders.features import layer_features
from mmrep.errors import ConfigError
from mmrep.metrics.alignment import (AlignmentInputError, LayerAlignment, layerwise_alignment, remove_outliers,
                                    resolve_metrics)
from mmrep.metrics.alignment.preprocess import check_k, check_q


def encoder_pairs(model, pairs: Sequence[Sequence[str]] | None, key: str) -> list[tuple[str, str]]:
    """The encoder pairs to compare: ``pairs`` if given, else every pair of the model's encoders (dataset order)."""
    encoders = getattr(model, "encoders", None)
    if not isinstance(encoders, nn.ModuleDict) or len(encoders) < 2:
        raise ConfigError(f"{key}: objective {type(model).__name__} has no two per-modality encoders to align")
    names = list(encoders)
    if pairs is None:
        return [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    out = []
    for pair in pairs:
        pair = tuple(pair)
        if len(pair) != 2 or pair[0] == pair[1] or any(m not in encoders for m in pair):
            raise ConfigError(f"{key}.pairs: each pair needs two of the model's encoders {names}, got {list(pair)}")
        out.append(pair)
    if not out:
        raise ConfigError(f"{key}.pairs: empty; give pairs like [[{names[0]}, {names[1]}]] or null for all")
    return out


def heldout_inputs(datamodule, modalities: Sequence[str], n: int | None, key: str) -> dict:
    """The fixed alignment samples, ``datamodule.heldout("align", n)``, as one input per modality (a tensor or a
    dict of tensors with N rows; N may be below ``n`` when the dataset's held-out split is smaller; ``None``: all)."""
    if datamodule is None or not hasattr(datamodule, "heldout"):
        raise ConfigError(f"{key}: dataset {type(datamodule).__name__} provides no held-out set (heldout())")
    return concat_batches(datamodule.heldout("align", n), modalities)


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
    """Alignment between the layers of pairs of encoders on a fixed held-out set (``datamodule.heldout("align", n)``).

    Args:
        metrics: ``"all"`` or names from :data:`mmrep.metrics.alignment.METRICS`.
        k, q, exact_quantile, rbf_sigma, svcca_dim: the suite's options (spec §4.2–4.3: k = 100, q = 1).
        n: held-out samples (spec §4.1: the first test batch, 512).
        pairs: the encoder pairs to compare, e.g. ``[[text, vision], [text, audio]]``; every pair of the model's
            encoders when ``None`` (MMCL: its contrasted pair; unimodal: all trained modalities).
        include_output: also use each encoder's final output as a layer (the paper hooks activations only).
        per_layer: also write every layer pair's value, not just ``max`` and ``last``.
        concat_layers: add a layer ``all``, every layer side by side (the vision–language code's layer −1, spec
            rus-alignment §7.3).
        clamp: ``layer`` clamps outliers per layer (spec §4.2); ``encoder`` clamps each encoder's layers together,
            one threshold per encoder (the vision–language code's ``remove_outliers`` on [N, L, D], §7.3).

    Rows, per pair: ``metric, modality ("a|b"), aggregate (max|last|layer), layer_a, layer_b, value, split, n, k, q``.
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
        pairs: Sequence[Sequence[str]] | None = None,
        include_output: bool = False,
        per_layer: bool = True,
        concat_layers: bool = False,
        clamp: str = "layer",
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
        if clamp not in ("layer", "encoder"):
            raise ConfigError(f"{self.key}.clamp: layer or encoder, got {clamp!r}")
        self.n, self.pairs, self.include_output, self.per_layer = int(n), pairs, include_output, per_layer
        self.concat_layers, self.clamp = concat_layers, clamp
        self.options = dict(k=int(k), q=float(q), exact_quantile=exact_quantile, rbf_sigma=rbf_sigma, svcca_dim=svcca_dim)

    def features(self, model, inputs: dict) -> dict[str, tuple[list[str], list[torch.Tensor]]]:
        """Per-layer features of each modality's encoder on its held-out inputs (clamped per encoder and with the
        ``all`` layer when so configured)."""
        out = {}
        for m, x in inputs.items():
            names, layers = layer_features(model.encoders[m], [x], self.include_output)
            if self.clamp == "encoder":
                widths = [h.shape[1] for h in layers]
                clamped = remove_outliers(torch.cat(layers, dim=1), self.options["q"], self.options["exact_quantile"])
                layers = list(torch.split(clamped, widths, dim=1))
            if self.concat_layers:
                names, layers = ["all", *names], [torch.cat(layers, dim=1), *layers]  # first, as the code's -1
            out[m] = (names, layers)
        return out

    def compute(self, pairs, features: dict) -> pd.DataFrame:
        frames = []
        for a, b in pairs:
            (names_a, layers_a), (names_b, layers_b) = features[a], features[b]
            options = {**self.options, "q": 1.0} if self.clamp == "encoder" else self.options  # clamped already
            try:
                results = layerwise_alignment(layers_a, layers_b, self.metrics, **options)
            except AlignmentInputError as err:
                raise ConfigError(f"{self.key}: {a}|{b}: {err}") from None
            columns = dict(modality=f"{a}|{b}", split="align", n=layers_a[0].shape[0], k=self.options["k"], q=self.options["q"])
            frames.append(pd.DataFrame(alignment_rows(results, names_a, names_b, per_layer=self.per_layer, **columns)))
        return pd.concat(frames, ignore_index=True)

    def check(self, model, datamodule) -> None:
        """Fail at start-up when the objective has no pair of encoders to align (or a configured pair is unknown),
        or when SVCCA is asked for on layers narrower than ``svcca_dim`` (found on a stand-in batch of zeros)."""
        pairs = encoder_pairs(model, self.pairs, self.key)
        if "svcca" not in self.metrics:
            return
        modalities = list(dict.fromkeys(m for pair in pairs for m in pair))
        try:
            widths = {m: [h.shape[1] for h in self.features(model, {m: stand_in_batch(model.data.modalities[m])})[m][1]]
                      for m in modalities}
        except Exception:  # an encoder that cannot take zeros: the measurement itself will say what is wrong
            return
        dim = self.options["svcca_dim"]
        for a, b in pairs:
            for m in (a, b):
                if min(widths[m]) < dim:
                    raise ConfigError(f"{self.key}: {a}|{b}: svcca needs layers of at least svcca_dim={dim} features; "
                                      f"{m} has a layer of {min(widths[m])} (set {self.key}.svcca_dim or leave svcca "
                                      "out of its metrics)")

    def __call__(self, model, datamodule) -> pd.DataFrame:
        pairs = encoder_pairs(model, self.pairs, self.key)
        modalities = list(dict.fromkeys(m for pair in pairs for m in pair))
        inputs = heldout_inputs(datamodule, modalities, self.n, self.key)
        return self.compute(pairs, self.features(model, inputs))

    @staticmethod
    def summary(rows: pd.DataFrame):
        """A rich table: per pair and metric, the max over layer pairs (with its layers) and the last pair."""
        from rich.table import Table

        aligned = rows[rows["aggregate"].isin(["max", "last"])] if "aggregate" in rows else rows.iloc[0:0]
        if aligned.empty:
            return None
        table = Table(title="alignment (max over layer pairs, last layers)")
        for col in ("pair", "metric", "max", "at layers", "last"):
            table.add_column(col, justify="left" if col in ("pair", "metric") else "right")
        for (pair, metric), group in aligned.groupby(["modality", "metric"], sort=False):
            best = group[group["aggregate"] == "max"].iloc[0]
            last = group[group["aggregate"] == "last"].iloc[0]
            table.add_row(pair, metric, f"{best['value']:.4f}", f"{best['layer_a']}/{best['layer_b']}", f"{last['value']:.4f}")
        return table


def stand_in_batch(spec, n: int = 4):
    """``n`` samples of zeros shaped as the modality ``spec`` describes (bytes and a full mask for text)."""
    if spec.kind == "text":
        return {"x": torch.zeros(n, *spec.shape, dtype=torch.uint8), "mask": torch.ones(n, spec.shape[0], dtype=torch.bool)}
    x = torch.zeros(n, *spec.shape)
    return {"x": x, "mask": torch.ones(n, spec.shape[0], dtype=torch.bool)} if spec.masked else x
