"""Helpers shared by several metric modules: encoding held-out batches, fixed held-out inputs, task scores and
the probe table."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import pandas as pd
import torch
import torchmetrics
from lightning_fabric.utilities.apply_func import move_data_to_device
from torch import nn

from mmrep.core.contract import RESERVED_KEYS, concat_batches
from mmrep.core.errors import ConfigError

CLASSIFICATION = ("accuracy", "f1")
REGRESSION = ("mae", "pearson", "sign_accuracy")


def make_task_metric(name: str, num_classes: int | None):
    """A fresh torchmetrics object for one task metric name (see ``CLASSIFICATION`` / ``REGRESSION``)."""
    if name == "accuracy":
        return torchmetrics.classification.MulticlassAccuracy(num_classes, average="micro")
    if name == "f1":
        return torchmetrics.classification.MulticlassF1Score(num_classes, average="macro")
    if name == "mae":
        return torchmetrics.MeanAbsoluteError()
    if name == "pearson":
        return torchmetrics.PearsonCorrCoef()
    if name == "sign_accuracy":
        return torchmetrics.classification.BinaryAccuracy()
    raise ValueError(name)


def update_task_metric(name: str, metric, out: torch.Tensor, y: torch.Tensor) -> None:
    """Feed one batch of predictions ``out`` and targets ``y`` to ``metric`` (regression values flattened;
    ``sign_accuracy`` compares ``out > 0`` with ``y > 0``)."""
    if name in CLASSIFICATION:
        metric.update(out, y)
        return
    pred, target = out.reshape(-1).float(), y.reshape(-1).float()
    if name == "sign_accuracy":
        metric.update((pred > 0).long(), (target > 0).long())
    else:
        metric.update(pred, target)


def score_predictions(names, outputs: torch.Tensor, y: torch.Tensor, num_classes: int | None) -> dict[str, float]:
    """``{metric: value}`` for predictions ``outputs`` (logits/probabilities (N, C), or regression values (N,) /
    (N, 1)) against targets ``y``."""
    scores = {}
    for name in names:
        metric = make_task_metric(name, num_classes).to(outputs.device)
        update_task_metric(name, metric, outputs, y)
        scores[name] = float(metric.compute())
    return scores


class PredictionStats:
    """What decides whether a task score is defined, accumulated over batches: the sample count, the non-finite
    predictions and targets, and the range of regression predictions and targets (a constant one has min = max)."""

    def __init__(self) -> None:
        self.n = self.bad_pred = self.bad_target = 0
        self.pred_range = self.target_range = (math.inf, -math.inf)

    def update(self, out: torch.Tensor, y: torch.Tensor, regression: bool) -> None:
        """One batch: ``out`` (B, C) logits/probabilities or (B,)/(B, 1) regression values, ``y`` (B,) targets."""
        self.n += int(y.shape[0])
        self.bad_pred += int((~torch.isfinite(out.detach())).reshape(out.shape[0], -1).any(1).sum())
        if y.is_floating_point():
            self.bad_target += int((~torch.isfinite(y)).reshape(y.shape[0], -1).any(1).sum())
        if regression and y.shape[0]:
            self.pred_range = _widen(self.pred_range, out.detach().reshape(-1))
            self.target_range = _widen(self.target_range, y.reshape(-1))


def _widen(bounds: tuple[float, float], values: torch.Tensor) -> tuple[float, float]:
    return min(bounds[0], float(values.min())), max(bounds[1], float(values.max()))


def task_reason(name: str, stats: PredictionStats, modality: str, split: str) -> str | None:
    """Why the task metric ``name`` has no value for ``modality``'s predictions on ``split``, None when it has one:
    no samples, non-finite targets or predictions, or — for Pearson r, which divides by both standard deviations —
    fewer than 2 samples or constant predictions or targets."""
    if stats.n == 0:
        return f"the {split} split has no samples"
    if stats.bad_target:
        return f"{stats.bad_target} of the {stats.n} {split} targets are NaN/inf"
    if stats.bad_pred:
        return f"{stats.bad_pred} of the {stats.n} predictions of {modality} on {split} are NaN/inf"
    if name != "pearson":
        return None
    if stats.n < 2:
        return f"Pearson r needs at least 2 samples; {split} has {stats.n}"
    sides = (f"the predictions of {modality}", stats.pred_range), ("the targets", stats.target_range)
    constant = [
        f"{what} are constant ({low:g} for all {stats.n} samples)" for what, (low, high) in sides if low == high
    ]
    if not constant:
        return None
    return f"{' and '.join(constant)} on {split}: Pearson r divides by their zero standard deviation"


def score_predictions_with_reasons(
    names, outputs: torch.Tensor, y: torch.Tensor, num_classes: int | None, modality: str, split: str
) -> dict[str, tuple[float, str | None]]:
    """:func:`score_predictions` with :func:`task_reason`: ``{metric: (value, reason)}``, NaN where there is a
    reason (``num_classes`` None: a regression task)."""
    stats = PredictionStats()
    stats.update(outputs, y, regression=num_classes is None)
    reasons = {name: task_reason(name, stats, modality, split) for name in names}
    scored = [name for name in names if reasons[name] is None]
    scores = score_predictions(scored, outputs, y, num_classes) if scored else {}
    return {name: (scores.get(name, math.nan), reasons[name]) for name in names}


@torch.no_grad()
@contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """``module`` and all its submodules in eval mode for the block; afterwards exactly the submodules that were in
    training mode are again (a submodule an objective keeps in eval mode, e.g. a frozen encoder, stays so)."""
    training = [m for m in module.modules() if m.training]
    for m in training:
        m.training = False
    try:
        yield
    finally:
        for m in training:
            m.training = True


@torch.no_grad()
def encode_on_device(
    model, batches: list[dict], dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> dict[str, torch.Tensor]:
    """``model.encode`` over held-out batches in eval mode: ``{modality: (N, d)}`` of ``dtype`` on ``device``
    (default: the model's, nothing copied to the host)."""
    chunks: dict[str, list[torch.Tensor]] = {}
    with eval_mode(model):
        for batch in batches:
            inputs = move_data_to_device({k: v for k, v in batch.items() if k not in RESERVED_KEYS}, model.device)
            for name, h in model.encode(inputs).items():
                chunks.setdefault(name, []).append(h.detach().to(device or h.device, dtype))
    return {name: torch.cat(parts) for name, parts in chunks.items()}


def encode_batches(model, batches: list[dict]) -> dict[str, np.ndarray]:
    """Run ``model.encode`` over held-out batches on the model's device; {modality: (N, d) float64 array}."""
    return {name: z.numpy() for name, z in encode_on_device(model, batches, torch.float64, "cpu").items()}


def require_heldout(datamodule, key: str):
    """``datamodule``, or a ConfigError naming ``key`` when it offers no held-out set (``heldout()``)."""
    if datamodule is None or not hasattr(datamodule, "heldout"):
        raise ConfigError(f"{key}: dataset {type(datamodule).__name__} provides no held-out set (heldout())")
    return datamodule


def heldout_inputs(datamodule, modalities: Sequence[str], n: int | None, key: str) -> dict:
    """The fixed alignment samples, ``datamodule.heldout("align", n)``, as one input per modality (a tensor or a
    dict of tensors with N rows; N may be below ``n`` when the dataset's held-out split is smaller; ``None``: all)."""
    return concat_batches(require_heldout(datamodule, key).heldout("align", n), modalities)


def probe_table(rows: pd.DataFrame, title: str):
    """Rows with a ``probe`` column as a rich table: targets × (metric/modality/probe[/split])."""
    from rich.table import Table

    if rows.empty:
        return None
    columns = ["metric", "modality", "probe"] + (["split"] if rows["split"].nunique() > 1 else [])
    pivot = rows.pivot_table(index="target", columns=columns, values="value", sort=False)
    table = Table(title=title)
    table.add_column("target")
    for col in pivot.columns:
        table.add_column("/".join(map(str, col)), justify="right")
    for target, row in pivot.iterrows():
        table.add_row(str(target), *[f"{v:.3f}" for v in row.values])
    return table
