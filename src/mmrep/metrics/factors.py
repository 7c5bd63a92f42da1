"""``metric=factors``: which generative factors each representation holds, per factor and role
(crossmodal_mislaignment main_mpi3dreal.py, main_causal3dident.py): discrete factors by logistic-regression and
MLP-classifier MCC, continuous ones by linear and MLP-regressor R², fitted on the probe-fit split (val) and scored on
the probe-eval split (test), on representations standardised with the fit split's statistics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from joblib import Parallel, delayed

from mmrep.core.contract import require_samples
from mmrep.core.errors import ConfigError
from mmrep.metrics.common import encode_batches, probe_table
from mmrep.metrics.probes import PROBES, probe_score, standardize, undefined_probe


class FactorProbes:
    """Rows ``metric (mcc|r2), probe (linear|mlp), modality, target (factor), role, setting, value, split, n_fit,
    n_eval``; ``setting`` is the dataset's ``bias_label`` (the paper setting id, e.g. ``perturbation_3``). A score
    that is undefined (one class, constant or non-finite targets: :func:`~mmrep.metrics.probes.undefined_probe`)
    is NaN with a ``reason``.

    The dataset provides ``factor_roles()`` (invariant / perturbed / omitted / image-specific) and
    ``factor_kinds()`` (discrete / continuous), and held-out batches with ``latents[factor]`` (N, 1).

    Args:
        probes: subset of ``linear, mlp``. n_fit, n_eval: samples (``None``: the whole splits).
        mlp_hidden, mlp_max_iter: the sklearn MLP probes (main_mpi3dreal.py: 100 hidden, max_iter 10,000). n_jobs, seed.
    """

    def __init__(
        self,
        probes=("linear", "mlp"),
        n_fit: int | None = None,
        n_eval: int | None = None,
        mlp_hidden: int = 100,
        mlp_max_iter: int = 1000,
        n_jobs: int = 1,
        seed: int = 0,
    ) -> None:
        self.probes = list(probes)
        if not self.probes or any(p not in PROBES for p in self.probes):
            raise ConfigError(f"metric.factors.probes: a non-empty subset of {list(PROBES)}, got {self.probes}")
        self.n_fit, self.n_eval = n_fit, n_eval
        self.mlp_hidden, self.mlp_max_iter, self.n_jobs, self.seed = int(mlp_hidden), int(mlp_max_iter), n_jobs, seed

    def check(self, model, datamodule) -> None:
        if not hasattr(datamodule, "factor_roles") or not hasattr(datamodule, "factor_kinds"):
            raise ConfigError(f"metric=factors: dataset {type(datamodule).__name__} has no generative factors to probe")
        require_samples(datamodule, "probe_fit", self.n_fit, 2, "metric.factors.n_fit")  # a probe's fit and R² need 2
        require_samples(datamodule, "probe_eval", self.n_eval, 2, "metric.factors.n_eval")

    def __call__(self, model, datamodule) -> pd.DataFrame:
        self.check(model, datamodule)
        fit, evaluate = datamodule.heldout("probe_fit", self.n_fit), datamodule.heldout("probe_eval", self.n_eval)
        z_fit, z_eval = encode_batches(model, fit), encode_batches(model, evaluate)
        roles, kinds = datamodule.factor_roles(), datamodule.factor_kinds()
        setting = getattr(datamodule, "bias_label", None)

        def targets(batches, factor):
            y = torch.cat([b["latents"][factor] for b in batches]).numpy()[:, 0]
            return y.astype(np.int64) if kinds[factor] == "discrete" else y.astype(np.float64)

        y_fit = {f: targets(fit, f) for f in roles}
        y_eval = {f: targets(evaluate, f) for f in roles}
        reasons = {
            (m, f): undefined_probe(
                z_fit[m],
                y_fit[f],
                z_eval[m],
                y_eval[f],
                discrete=kinds[f] == "discrete",
                fit="probe_fit",
                evaluate="probe_eval",
            )
            for m in z_fit
            for f in roles
        }
        finite = [m for m in z_fit if np.isfinite(z_fit[m]).all() and np.isfinite(z_eval[m]).all()]
        scaled = {m: standardize(z_fit[m], z_eval[m]) for m in finite}
        jobs = [(m, f, p) for (m, f), why in reasons.items() if why is None for p in self.probes]
        scores = Parallel(n_jobs=self.n_jobs)(
            delayed(probe_score)(
                p,
                scaled[m][0],
                y_fit[f],
                scaled[m][1],
                y_eval[f],
                discrete=kinds[f] == "discrete",
                hidden=self.mlp_hidden,
                max_iter=self.mlp_max_iter,
                seed=self.seed,
            )
            for m, f, p in jobs
        )
        values = {job: value for job, (_, value) in zip(jobs, scores)}
        return pd.DataFrame(
            [
                {
                    "metric": "mcc" if kinds[f] == "discrete" else "r2",
                    "probe": p,
                    "modality": m,
                    "target": f,
                    "role": roles[f],
                    "setting": setting,
                    "value": values.get((m, f, p), np.nan),
                    "split": "probe_eval",
                    "n_fit": len(y_fit[f]),
                    "n_eval": len(y_eval[f]),
                }
                | ({"reason": why} if why else {})
                for (m, f), why in reasons.items()
                for p in self.probes
            ]
        )

    @staticmethod
    def summary(rows: pd.DataFrame):
        table = probe_table(rows.assign(target=rows["target"] + " (" + rows["role"] + ")"), "factor probes (MCC / R²)")
        return table
