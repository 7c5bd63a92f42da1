"""``metric=task`` / ``metric=accuracy``: how well each modality's predictor does the dataset's task, per split.

Classification (multimodal_alignment training_structures/unimodal_supervised.py): ``accuracy`` and macro ``f1``.
Regression (MOSI/MOSEI, training_structures/unimodal_supervised.py): ``mae``, ``pearson`` and ``sign_accuracy`` — the
accuracy of ``pred > 0`` against ``label > 0`` over all samples (zero labels count as negative), the original's
"posneg-classification". All from torchmetrics.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import pandas as pd
import torch
from lightning_fabric.utilities.apply_func import move_data_to_device

from mmrep.core.contract import require_samples
from mmrep.core.errors import ConfigError
from mmrep.metrics.common import (
    CLASSIFICATION,
    REGRESSION,
    PredictionStats,
    make_task_metric,
    task_reason,
    update_task_metric,
)


class TaskMetrics:
    """Scores of ``model.predict(batch)[modality]`` against ``batch["y"]`` on ``datamodule.heldout(split)``.

    Args:
        splits: which splits (default train, val, test — training_structures/unimodal_supervised.py reports all three
        from the best weights).
        metrics: names among ``accuracy, f1`` (classification) or ``mae, pearson, sign_accuracy`` (regression);
            ``None`` = all of the dataset's task.

    Rows: ``metric, modality, split, value, n``; a score that is undefined on the split (constant predictions or
    targets for Pearson r, non-finite ones) is NaN with a ``reason``
    (:func:`~mmrep.metrics.common.task_reason`).
    """

    def __init__(
        self,
        splits: Iterable[str] = ("train", "val", "test"),
        metrics: Iterable[str] | None = None,
        config_key: str = "metric.task",
    ) -> None:
        self.splits, self.key = list(splits), config_key
        if not self.splits:
            raise ConfigError(f"{self.key}.splits: needs at least one split")
        self.metrics = None if metrics is None else list(metrics)
        unknown = [m for m in self.metrics or [] if m not in CLASSIFICATION + REGRESSION]
        if unknown:
            raise ConfigError(f"{self.key}.metrics: unknown {unknown}; choose from {list(CLASSIFICATION + REGRESSION)}")

    def _names(self, task: str) -> list[str]:
        allowed = CLASSIFICATION if task == "classification" else REGRESSION
        names = list(allowed) if self.metrics is None else self.metrics
        wrong = [m for m in names if m not in allowed]
        if wrong:
            raise ConfigError(f"{self.key}.metrics: {wrong} do not apply to a {task} task; use {list(allowed)}")
        return names

    def check(self, model, datamodule) -> None:
        """Fail at start-up unless the dataset has a task and the objective predicts it."""
        spec = datamodule.spec
        if spec.task not in ("classification", "regression") or not hasattr(model, "predict"):
            raise ConfigError(
                f"{self.key}: needs a classification/regression dataset and an objective with prediction heads "
                f"(objective=unimodal); got task={spec.task!r}, objective {type(model).__name__}"
            )
        self._names(spec.task)
        for split in self.splits:
            require_samples(datamodule, split, None, 1, f"{self.key}.splits")

    @torch.no_grad()
    def __call__(self, model, datamodule) -> pd.DataFrame:
        self.check(model, datamodule)
        spec = datamodule.spec
        names = self._names(spec.task)
        was_training = model.training
        model.eval()
        rows = []
        try:
            for split in self.splits:
                scores: dict[str, dict] = {}
                inputs: dict[str, PredictionStats] = {}
                total = 0
                for batch in datamodule.heldout(split):
                    batch = move_data_to_device(batch, model.device)
                    for m, out in model.predict(batch).items():
                        per = scores.setdefault(
                            m, {n: make_task_metric(n, spec.num_classes).to(model.device) for n in names}
                        )
                        for n, metric in per.items():
                            update_task_metric(n, metric, out, batch["y"])
                        inputs.setdefault(m, PredictionStats()).update(out, batch["y"], spec.task == "regression")
                    total += batch["y"].shape[0]
                for m, per in scores.items():
                    for n, metric in per.items():
                        reason = task_reason(n, inputs[m], m, split)
                        value = math.nan if reason else float(metric.compute())
                        row = {"metric": n, "modality": m, "split": split, "value": value, "n": total}
                        rows.append(row | {"reason": reason} if reason else row)
        finally:
            model.train(was_training)
        return pd.DataFrame(rows)

    @staticmethod
    def summary(rows: pd.DataFrame):
        """A rich table: (metric, modality) × split."""
        from rich.table import Table

        if rows.empty:
            return None
        pivot = rows.pivot_table(index=["metric", "modality"], columns="split", values="value", sort=False)
        table = Table(title="task performance (best-validation weights)")
        for col in ("metric", "modality", *map(str, pivot.columns)):
            table.add_column(col, justify="left" if col in ("metric", "modality") else "right")
        for (metric, modality), row in pivot.iterrows():
            table.add_row(metric, str(modality), *[f"{v:.3f}" for v in row.values])
        return table
