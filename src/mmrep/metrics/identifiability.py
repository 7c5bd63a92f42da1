"""``metric=identifiability``: which latents a trained model's representations hold (R²/MCC probes)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from joblib import Parallel, delayed

from mmrep.core.contract import require_samples
from mmrep.core.errors import ConfigError
from mmrep.metrics.common import encode_batches, probe_table
from mmrep.metrics.probes import PROBES, probe_score, standardize, undefined_probe


def _targets(datamodule, batches: list[dict]) -> dict[str, np.ndarray]:
    per_batch = [datamodule.probe_targets(b["latents"]) for b in batches]
    return {k: torch.cat([t[k] for t in per_batch]).double().numpy() for k in per_batch[0]}


class Identifiability:
    """Fit probes from each modality's representation to each ground-truth target.

    Probes are fitted on a fixed "probe_fit" set and scored on a disjoint "probe_eval" set drawn by the datamodule
    (crossmodal_mislaignment main_numeric.py: val and test, 20,480 samples each at paper scale). Returns one row per
    (modality, target, probe) with columns ``metric, probe, modality, target, value, split, n_fit, n_eval``; a
    score that is undefined (constant or non-finite targets, non-finite representations:
    :func:`~mmrep.metrics.probes.undefined_probe`) is NaN with a ``reason``.

    Args:
        probes: subset of ``("linear", "mlp")``.
        n_fit, n_eval: probe set sizes. mlp_hidden, mlp_max_iter: the sklearn MLP probe.
        n_jobs: parallel probe fits (joblib). seed: the MLP probes' random_state.
    """

    def __init__(
        self,
        probes=("linear", "mlp"),
        n_fit: int = 20_480,
        n_eval: int = 20_480,
        mlp_hidden: int = 100,
        mlp_max_iter: int = 10_000,
        n_jobs: int = 1,
        seed: int = 0,
    ) -> None:
        probes = list(probes)
        unknown = [p for p in probes if p not in PROBES]
        if unknown or not probes:
            raise ConfigError(
                f"metric.identifiability.probes: expected a non-empty subset of {list(PROBES)}, got {probes}"
            )
        for key, value in {"n_fit": n_fit, "n_eval": n_eval, "mlp_max_iter": mlp_max_iter}.items():
            if int(value) < 1:
                raise ConfigError(f"metric.identifiability.{key}: must be a positive integer, got {value}")
        self.probes, self.n_fit, self.n_eval = probes, int(n_fit), int(n_eval)
        self.mlp_hidden, self.mlp_max_iter, self.n_jobs, self.seed = mlp_hidden, mlp_max_iter, n_jobs, seed

    def check(self, model, datamodule) -> None:
        """Fail at start-up when the dataset has no latents to probe."""
        if not hasattr(datamodule, "probe_targets"):
            raise ConfigError(
                f"metric=identifiability: dataset {type(datamodule).__name__} has no ground-truth latents to probe"
            )
        require_samples(datamodule, "probe_fit", self.n_fit, 2, "metric.identifiability.n_fit")  # R² needs 2
        require_samples(datamodule, "probe_eval", self.n_eval, 2, "metric.identifiability.n_eval")

    def __call__(self, model, datamodule) -> pd.DataFrame:
        self.check(model, datamodule)
        fit_batches = datamodule.heldout("probe_fit", self.n_fit)
        eval_batches = datamodule.heldout("probe_eval", self.n_eval)
        z_fit, z_eval = encode_batches(model, fit_batches), encode_batches(model, eval_batches)
        y_fit, y_eval = _targets(datamodule, fit_batches), _targets(datamodule, eval_batches)
        reasons = {
            (m, target): undefined_probe(
                z_fit[m], y_fit[target], z_eval[m], y_eval[target], fit="probe_fit", evaluate="probe_eval"
            )
            for m in z_fit
            for target in y_fit
        }
        finite = [m for m in z_fit if np.isfinite(z_fit[m]).all() and np.isfinite(z_eval[m]).all()]
        scaled = {m: standardize(z_fit[m], z_eval[m]) for m in finite}
        jobs = [(m, target, probe) for (m, target), why in reasons.items() if why is None for probe in self.probes]
        scores = Parallel(n_jobs=self.n_jobs)(
            delayed(probe_score)(
                probe,
                scaled[m][0],
                y_fit[target],
                scaled[m][1],
                y_eval[target],
                hidden=self.mlp_hidden,
                max_iter=self.mlp_max_iter,
                seed=self.seed,
            )
            for m, target, probe in jobs
        )
        values = {job: value for job, (_, value) in zip(jobs, scores)}
        return pd.DataFrame(
            [
                {
                    "metric": "r2",
                    "probe": probe,
                    "modality": m,
                    "target": target,
                    "value": values.get((m, target, probe), np.nan),
                    "split": "probe_eval",
                    "n_fit": self.n_fit,
                    "n_eval": self.n_eval,
                }
                | ({"reason": why} if why else {})
                for (m, target), why in reasons.items()
                for probe in self.probes
            ]
        )

    @staticmethod
    def summary(rows: pd.DataFrame):
        """A rich table: targets × (metric, modality, probe)."""
        return probe_table(rows, "held-out probe scores")
