"""``metric=linear_probe``: how much of the dataset's task each frozen representation holds, for any objective.

A linear model (logistic regression for classification, least squares for regression) is fitted on the
standardised representations of the train split and scored on the other splits with the task's metrics
(:mod:`mmrep.metrics.task`: accuracy and F1, or MAE, Pearson r and sign accuracy). This is what makes a
contrastive run on a labelled dataset end with a task number (``dataset=mosei objective=mmcl``).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import numpy as np
import pandas as pd
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.preprocessing import StandardScaler

from mmrep.core.contract import require_samples
from mmrep.core.errors import ConfigError
from mmrep.metrics.common import encode_batches, score_predictions_with_reasons
from mmrep.metrics.probes import nonfinite
from mmrep.metrics.task import TaskMetrics


def unprobed(y_fit: np.ndarray, encoded: dict[str, np.ndarray], modality: str) -> str | None:
    """Why no linear probe can be fitted and scored for ``modality``: non-finite training targets (n_fit,) or
    representations (N, d) of any split in ``encoded`` (``{split: z}``); None when it can."""
    reasons = [nonfinite(y_fit, "train targets")]
    reasons += [nonfinite(z, f"{split} representations of {modality}") for split, z in encoded.items()]
    return next((r for r in reasons if r), None)


class LinearProbe:
    """Linear probes from each encoder's representation to ``y``.

    Args:
        splits: where to score (fitted on ``train``). metrics: as :class:`~mmrep.metrics.task.TaskMetrics`
            (``None``: all of the task's). n_fit: train samples to fit on (``None``: the whole split).
        max_iter: of the logistic regression.

    Rows: ``metric, probe=linear, modality, split, value, n, n_fit`` (and a ``reason`` where a score is undefined,
    e.g. Pearson r of constant predictions: :func:`~mmrep.metrics.common.task_reason`).
    """

    def __init__(
        self,
        splits: Iterable[str] = ("val", "test"),
        metrics: Iterable[str] | None = None,
        n_fit: int | None = None,
        max_iter: int = 1000,
        config_key: str = "metric.linear_probe",
    ) -> None:
        self.splits, self.key = list(splits), config_key
        if not self.splits or "train" in self.splits and len(self.splits) == 1:
            raise ConfigError(f"{self.key}.splits: score on held-out splits (val, test), got {self.splits}")
        self.task_metrics = TaskMetrics(self.splits, metrics, config_key)  # validates and resolves metric names
        self.n_fit, self.max_iter = (None if n_fit is None else int(n_fit)), int(max_iter)

    def check(self, model, datamodule) -> None:
        """Before training: a task to probe, encoders to probe, at least 2 fitting samples (of 2 classes for a
        classification task: a logistic regression needs both) and a non-empty scoring split each."""
        task = datamodule.spec.task
        if task not in ("classification", "regression"):
            raise ConfigError(f"{self.key}: needs a dataset with a classification or regression task, got {task!r}")
        if not getattr(model, "encoders", None):
            raise ConfigError(f"{self.key}: objective {type(model).__name__} has no encoders to probe")
        self.task_metrics._names(task)
        require_samples(datamodule, "train", self.n_fit, 2, f"{self.key}.n_fit")
        for split in self.splits:
            require_samples(datamodule, split, None, 1, f"{self.key}.splits")
        if task == "classification":
            classes = self._fit_labels(datamodule).unique()
            if len(classes) < 2:
                raise ConfigError(
                    f"{self.key}.n_fit: the probe's training samples hold one class "
                    f"({classes.tolist()}); a classifier needs at least two"
                )

    def _fit_labels(self, datamodule) -> torch.Tensor:
        """The probe's training labels (n_fit,): read from the stored split where there is one, without building the
        modalities' batches (a whole MultiBench train split is ~1 GB of features)."""
        if hasattr(datamodule, "split"):
            return datamodule.split("train").data["y"][: self.n_fit]
        return torch.cat([b["y"] for b in datamodule.heldout("train", self.n_fit)])

    def __call__(self, model, datamodule) -> pd.DataFrame:
        self.check(model, datamodule)
        spec = datamodule.spec
        names = self.task_metrics._names(spec.task)
        fit_batches = datamodule.heldout("train", self.n_fit)
        z_fit, y_fit = encode_batches(model, fit_batches), torch.cat([b["y"] for b in fit_batches]).numpy()
        held_out = {}  # each split encoded once, for all modalities
        for split in self.splits:
            batches = datamodule.heldout(split)
            held_out[split] = (encode_batches(model, batches), torch.cat([b["y"] for b in batches]))
        rows = []
        for m, z in z_fit.items():
            encoded = {"train": z, **{split: z_split[m] for split, (z_split, _) in held_out.items()}}
            broken = unprobed(y_fit, encoded, m)
            if broken:  # e.g. a diverged encoder: no probe to fit, every score has the reason
                for split, (_, y) in held_out.items():
                    for metric in names:
                        row = {"metric": metric, "probe": "linear", "modality": m, "split": split, "value": np.nan}
                        rows.append(row | {"n": len(y), "n_fit": len(y_fit), "reason": broken})
                continue
            scaler = StandardScaler().fit(z)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                probe = (
                    LogisticRegression(max_iter=self.max_iter) if spec.task == "classification" else LinearRegression()
                ).fit(scaler.transform(z), y_fit)
            for split, (z_split, y) in held_out.items():
                z_eval = scaler.transform(z_split[m])
                if spec.task == "classification":
                    proba = np.zeros((len(z_eval), spec.num_classes))
                    proba[:, probe.classes_] = probe.predict_proba(z_eval)  # classes absent from the fit stay 0
                    outputs = torch.from_numpy(proba)
                else:
                    outputs = torch.from_numpy(probe.predict(z_eval))
                scores = score_predictions_with_reasons(names, outputs, y, spec.num_classes, m, split)
                for metric, (value, reason) in scores.items():
                    row = {
                        "metric": metric,
                        "probe": "linear",
                        "modality": m,
                        "split": split,
                        "value": value,
                        "n": len(y),
                        "n_fit": len(y_fit),
                    }
                    rows.append(row | {"reason": reason} if reason else row)
        return pd.DataFrame(rows)

    @staticmethod
    def summary(rows: pd.DataFrame):
        """A rich table: (metric, modality) × split."""
        table = TaskMetrics.summary(rows)
        if table is not None:
            table.title = "linear probes on frozen representations"
        return table
