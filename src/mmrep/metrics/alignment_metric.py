"""``metric=alignment``: layer-wise representation alignment between pairs of a model's encoders.

The pure math is :mod:`mmrep.metrics.alignment`; this module picks the encoder pairs and samples, reads each
encoder's layers and turns the layer × layer matrices into tidy rows, one set per pair (multimodal_alignment
scripts/get_alignment.py, scripts/get_alignment.py; MultiBench pairs 0-1/0-2/1-2, scripts/evaluate_multiseed.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from mmrep.core.contract import heldout_size
from mmrep.core.errors import ConfigError
from mmrep.metrics.alignment import (
    METRICS,
    AlignmentInputError,
    LayerAlignment,
    layerwise_alignment,
    remove_outliers,
    resolve_metrics,
)
from mmrep.metrics.alignment.preprocess import check_k, check_q, max_k
from mmrep.metrics.alignment.suite import Degeneracy, degeneracy, undefined_reason
from mmrep.metrics.common import heldout_inputs
from mmrep.metrics.features import layer_features

log = logging.getLogger(__name__)
MIN_SAMPLES = 4  # the fewest held-out samples any metric of the suite is defined on


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


def alignment_rows(
    results: dict[str, LayerAlignment],
    names_a: list[str],
    names_b: list[str],
    per_layer: bool = True,
    undefined: dict[str, dict[tuple[int, int], str]] | None = None,
    **columns,
) -> list[dict]:
    """Tidy rows: per metric the ``max`` over layer pairs (with its layers), the ``last`` pair and, with
    ``per_layer``, every pair (``aggregate="layer"``); ``columns`` are added to every row.

    ``undefined``: per metric, ``{(i, j): reason}`` for the layer pairs (i of A, j of B) where the metric has no
    value; those rows are NaN with a ``reason``, and ``max`` is taken over the other pairs (NaN with the reason
    when there are none)."""
    rows = []
    for metric, res in results.items():
        reasons = (undefined or {}).get(metric, {})
        matrix = np.array(res.matrix, dtype=np.float64)
        for i, j in reasons:
            matrix[i, j] = np.nan

        def row(aggregate: str, i: int | None, j: int | None, value: float, reason: str | None = None) -> dict:
            out = {
                "metric": metric,
                "aggregate": aggregate,
                "layer_a": None if i is None else names_a[i],
                "layer_b": None if j is None else names_b[j],
                "value": float(value),
                **columns,
            }
            if reason:
                out["reason"] = reason
            return out

        if np.isfinite(matrix).any():
            i, j = np.unravel_index(int(np.nanargmax(matrix)), matrix.shape)
            rows.append(row("max", int(i), int(j), matrix[i, j]))
        else:
            rows.append(row("max", None, None, np.nan, _none_defined(reasons)))
        last = (len(names_a) - 1, len(names_b) - 1)
        rows.append(row("last", *last, matrix[last], reasons.get(last)))
        if per_layer:
            for i in range(len(names_a)):
                for j in range(len(names_b)):
                    rows.append(row("layer", i, j, matrix[i, j], reasons.get((i, j))))
    return rows


def _none_defined(reasons: dict[tuple[int, int], str]) -> str | None:
    """The reason of a ``max`` over layer pairs none of which has a value: their one reason, or the first."""
    distinct = list(dict.fromkeys(reasons.values()))
    if len(distinct) > 1:
        return f"no layer pair is defined, e.g. {distinct[0]}"
    return distinct[0] if distinct else None


def undefined_pairs(
    metrics: Iterable[str], side_a: dict[str, Degeneracy], side_b: dict[str, Degeneracy], n: int
) -> dict[str, dict[tuple[int, int], str]]:
    """Per metric, ``{(i, j): reason}`` for the layer pairs where either side's features leave it undefined
    (:func:`~mmrep.metrics.alignment.suite.undefined_reason`); ``side_a`` / ``side_b``: each layer's
    :class:`~mmrep.metrics.alignment.suite.Degeneracy` by its name in the reason (``"x layer act1"``), in order."""
    out: dict[str, dict[tuple[int, int], str]] = {}
    for metric in metrics:
        reasons_a = [undefined_reason(metric, flags, what, n) for what, flags in side_a.items()]
        reasons_b = [undefined_reason(metric, flags, what, n) for what, flags in side_b.items()]
        reasons = {(i, j): ra or rb for i, ra in enumerate(reasons_a) for j, rb in enumerate(reasons_b) if ra or rb}
        if reasons:
            out[metric] = reasons
    return out


class Alignment:
    """Alignment between the layers of pairs of encoders on a fixed held-out set (``datamodule.heldout("align", n)``).

    Args:
        metrics: ``"all"`` or names from :data:`mmrep.metrics.alignment.METRICS`.
        k, q, exact_quantile, rbf_sigma, svcca_dim: the suite's options (utils/align_metrics.py: k = 100, q = 1).
        n: held-out samples (scripts/get_alignment.py: the first test batch, 512).
        pairs: the encoder pairs to compare, e.g. ``[[text, vision], [text, audio]]``; every pair of the model's
            encoders when ``None`` (MMCL: its contrasted pair; unimodal: all trained modalities).
        include_output: also use each encoder's final output as a layer (the paper hooks activations only).
        per_layer: also write every layer pair's value, not just ``max`` and ``last``.
        concat_layers: add a layer ``all``, every layer side by side (the vision–language code's layer −1,
            platonic-rep-unique measure_alignment.py).
        clamp: ``layer`` clamps outliers per layer (utils/align_metrics.py); ``encoder`` clamps each encoder's layers
        together,
            one threshold per encoder (the vision–language code's ``remove_outliers`` on [N, L, D],
            measure_alignment.py).

    Rows, per pair: ``metric, modality ("a|b"), aggregate (max|last|layer), layer_a, layer_b, value, split, n, k, q``
    and ``reason`` where a metric is undefined on a layer (see :func:`alignment_rows`).
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
        try:  # the library's own checks; their messages start with the argument name. k <= n - 2 here; the
            self.metrics = resolve_metrics(metrics)  # held-out split's own size is checked once known (check, adapt)
            if any(METRICS[m].uses_k for m in self.metrics):
                check_k(k, int(n))
            check_q(q)
            if isinstance(svcca_dim, bool) or int(svcca_dim) != svcca_dim or int(svcca_dim) < 1:
                raise AlignmentInputError(f"svcca_dim: must be a positive integer, got {svcca_dim!r}")
        except AlignmentInputError as err:
            raise ConfigError(f"{self.key}.{err}") from None
        if clamp not in ("layer", "encoder"):
            raise ConfigError(f"{self.key}.clamp: layer or encoder, got {clamp!r}")
        self.n, self.pairs, self.include_output, self.per_layer = int(n), pairs, include_output, per_layer
        self.concat_layers, self.clamp = concat_layers, clamp
        self.options = dict(
            k=int(k), q=float(q), exact_quantile=exact_quantile, rbf_sigma=rbf_sigma, svcca_dim=int(svcca_dim)
        )
        self._warned: set[str] = set()

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

    def adapt(
        self, n_samples: int, widths: dict[str, list[int]], pairs, split: str = "align"
    ) -> dict[tuple[str, str], dict]:
        """The suite's options per pair, fitted to the data: ``svcca_dim`` at most the narrowest layer of either
        encoder and N − 1 (the SVCCA of ``platonic-rep`` takes min(dim, width) directions), one warning per capped
        key. A ConfigError for fewer than 4 samples (nothing in the suite is defined there) and, with a kNN metric,
        for ``k`` > N − 2 (:meth:`check_k_fits`): ``split`` names the held-out set in that message."""
        if n_samples < MIN_SAMPLES:
            raise ConfigError(
                f"{self.key}.n: the held-out alignment set has {n_samples} samples; alignment needs at "
                f"least {MIN_SAMPLES} (a larger test split, or leave metric alignment out)"
            )
        self.check_k_fits(n_samples, split)
        out = {}
        for a, b in pairs:
            options = dict(self.options)
            if "svcca" in self.metrics:
                narrowest = min(min(widths[a]), min(widths[b]))
                dim = min(self.options["svcca_dim"], narrowest, n_samples - 1)
                if dim < self.options["svcca_dim"]:
                    self._warn(
                        f"{self.key}.svcca_dim: {self.options['svcca_dim']} exceeds what {a}|{b} allows (narrowest "
                        f"layer {narrowest} features, {n_samples} samples); using svcca_dim = {dim}"
                    )
                options["svcca_dim"] = dim
            out[(a, b)] = options
        return out

    def check_k_fits(self, n_samples: int, split: str = "align") -> None:
        """ConfigError unless ``k`` <= N − 2 for N held-out samples, when a kNN metric is selected: with
        k >= N − 1 every other sample is a neighbour, and mutual kNN is 1 for any two representations. Not
        capped: a k that small data forces changes what the metric measures, so the run says so instead."""
        k = self.options["k"]
        if any(METRICS[m].uses_k for m in self.metrics) and k > max_k(n_samples):
            raise ConfigError(
                f"{self.key}.k: {k} neighbours need at least k + 2 = {k + 2} held-out samples; the alignment set "
                f"has {n_samples} (split {split}): with k >= N - 1 every other sample is a neighbour, so the "
                "neighbour sets of any two representations agree (mutual kNN is 1 for any features); lower "
                f"{self.key}.k to at most {max_k(n_samples)}, or use a bigger held-out set ({self.key}.n / dataset)"
            )

    def _warn(self, message: str) -> None:
        if message not in self._warned:  # once per run, whether found before training or at the measurement
            self._warned.add(message)
            log.warning(message)

    def compute(self, pairs, features: dict, split: str = "align") -> pd.DataFrame:
        """Rows for ``pairs`` from ``features`` (:meth:`features`); a layer pair where a metric is undefined
        (:func:`~mmrep.metrics.alignment.suite.undefined_reason`, e.g. a dead ReLU layer) is NaN with a reason."""
        n_samples = next(iter(features.values()))[1][0].shape[0]
        widths = {m: [h.shape[1] for h in layers] for m, (_, layers) in features.items()}
        per_pair = self.adapt(n_samples, widths, pairs, split)
        flags = {m: {f"{m} layer {name}": degeneracy(h) for name, h in zip(*f)} for m, f in features.items()}
        frames = []
        for a, b in pairs:
            (names_a, layers_a), (names_b, layers_b) = features[a], features[b]
            options = per_pair[(a, b)]
            if self.clamp == "encoder":
                options = {**options, "q": 1.0}  # clamped already
            try:
                results = layerwise_alignment(layers_a, layers_b, self.metrics, **options)
            except AlignmentInputError as err:
                raise ConfigError(f"{self.key}: {a}|{b}: {err}") from None
            undefined = undefined_pairs(self.metrics, flags[a], flags[b], n_samples)
            columns = dict(modality=f"{a}|{b}", split="align", n=n_samples, k=options["k"], q=self.options["q"])
            rows = alignment_rows(results, names_a, names_b, per_layer=self.per_layer, undefined=undefined, **columns)
            frames.append(pd.DataFrame(rows))
        return pd.concat(frames, ignore_index=True)

    def check(self, model, datamodule) -> None:
        """Before training: the objective has a pair of encoders to align (configured pairs exist), the held-out
        set has enough samples for the suite and for ``k`` (a ConfigError otherwise), and ``svcca_dim`` fits its
        size and the layer widths (read on a stand-in batch of zeros; capped with one warning, as :meth:`adapt`
        does at the measurement)."""
        pairs = encoder_pairs(model, self.pairs, self.key)
        if datamodule is None or not hasattr(datamodule, "heldout"):
            raise ConfigError(f"{self.key}: dataset {type(datamodule).__name__} provides no held-out set (heldout())")
        n_samples = heldout_size(datamodule, "align", self.n)
        modalities = list(dict.fromkeys(m for pair in pairs for m in pair))
        widths = {m: [1 << 30] for m in modalities}  # unknown widths never cap
        if "svcca" in self.metrics:
            try:
                widths = {
                    m: [h.shape[1] for h in self.features(model, {m: stand_in_batch(model.data.modalities[m])})[m][1]]
                    for m in modalities
                }
            except Exception:  # noqa: BLE001 - an encoder that cannot take zeros: the measurement will say what is wrong
                pass
        self.adapt(n_samples, widths, pairs, heldout_split(datamodule))

    def __call__(self, model, datamodule) -> pd.DataFrame:
        pairs = encoder_pairs(model, self.pairs, self.key)
        modalities = list(dict.fromkeys(m for pair in pairs for m in pair))
        inputs = heldout_inputs(datamodule, modalities, self.n, self.key)
        return self.compute(pairs, self.features(model, inputs), heldout_split(datamodule))

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
            table.add_row(
                pair, metric, f"{best['value']:.4f}", f"{best['layer_a']}/{best['layer_b']}", f"{last['value']:.4f}"
            )
        return table


def heldout_split(datamodule) -> str:
    """The split ``heldout("align", n)`` reads (``align_split`` of the in-memory datamodules), else ``align``."""
    return str(getattr(datamodule, "align_split", "align"))


def stand_in_batch(spec, n: int = 4):
    """``n`` samples of zeros shaped as the modality ``spec`` describes (bytes and a full mask for text)."""
    if spec.kind == "text":
        return {
            "x": torch.zeros(n, *spec.shape, dtype=torch.uint8),
            "mask": torch.ones(n, spec.shape[0], dtype=torch.bool),
        }
    x = torch.zeros(n, *spec.shape)
    return {"x": x, "mask": torch.ones(n, spec.shape[0], dtype=torch.bool)} if spec.masked else x
