"""Helpers shared by several metric modules: encoding held-out batches, fixed held-out inputs, task scores and
the probe table."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
import torchmetrics
from lightning_fabric.utilities.apply_func import move_data_to_device

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


@torch.no_grad()
def encode_batches(model, batches: list[dict]) -> dict[str, np.ndarray]:
    """Run ``model.encode`` over held-out batches on the model's device; {modality: (N, d) float64 array}."""
    was_training = model.training
    model.eval()
    chunks: dict[str, list[np.ndarray]] = {}
    try:
        for batch in batches:
            inputs = move_data_to_device({k: v for k, v in batch.items() if k not in RESERVED_KEYS}, model.device)
            for name, h in model.encode(inputs).items():
                chunks.setdefault(name, []).append(h.detach().to("cpu", torch.float64).numpy())
    finally:
        model.train(was_training)
    return {name: np.concatenate(parts) for name, parts in chunks.items()}


def heldout_inputs(datamodule, modalities: Sequence[str], n: int | None, key: str) -> dict:
    """The fixed alignment samples, ``datamodule.heldout("align", n)``, as one input per modality (a tensor or a
    dict of tensors with N rows; N may be below ``n`` when the dataset's held-out split is smaller; ``None``: all)."""
    if datamodule is None or not hasattr(datamodule, "heldout"):
        raise ConfigError(f"{key}: dataset {type(datamodule).__name__} provides no held-out set (heldout())")
    return concat_batches(datamodule.heldout("align", n), modalities)


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
