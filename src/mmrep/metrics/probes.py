"""Probes that measure how much of a target a representation holds (pure numpy/scikit-learn).

Original: crossmodal_mislaignment main_numeric.py (arXiv:2504.10143; identification R²: ``LinearRegression`` and
``MLPRegressor(max_iter=10000)`` with sklearn defaults, representations standardised with a scaler fitted on the
probe-fit set, raw targets, multi-output R² averaged uniformly) and main_mpi3dreal.py / main_causal3dident.py (discrete
factors: logistic regression and ``MLPClassifier`` scored with Matthews' correlation).
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import matthews_corrcoef, r2_score
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.preprocessing import StandardScaler

PROBES = ("linear", "mlp")


def standardize(fit: np.ndarray, evaluate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale both (N, d) arrays with mean/std estimated on ``fit`` only."""
    scaler = StandardScaler().fit(fit)
    return scaler.transform(fit), scaler.transform(evaluate)


def probe_score(
    probe: str,
    z_fit: np.ndarray,
    y_fit: np.ndarray,
    z_eval: np.ndarray,
    y_eval: np.ndarray,
    *,
    discrete: bool = False,
    hidden: int = 100,
    max_iter: int = 10_000,
    seed: int = 0,
) -> tuple[str, float]:
    """Fit ``probe`` (``linear`` or ``mlp``) on (z_fit → y_fit), score on (z_eval, y_eval).

    Shapes: z (N, d); y (N,) or (N, k) for continuous targets, (N,) integer labels for discrete ones.
    Returns ``("r2", R²)`` for continuous targets (uniform average over k outputs) and ``("mcc", MCC)`` for
    discrete ones. Empty targets give NaN.
    """
    if probe not in PROBES:
        raise ValueError(f"metric.probes: unknown probe {probe!r}; choose from {list(PROBES)}")
    y_fit, y_eval = np.asarray(y_fit), np.asarray(y_eval)
    if y_fit.ndim == 2 and y_fit.shape[1] == 1:
        y_fit, y_eval = y_fit[:, 0], y_eval[:, 0]
    if y_fit.size == 0:
        return ("mcc" if discrete else "r2"), float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if discrete:
            model = (
                LogisticRegression(max_iter=max_iter)
                if probe == "linear"
                else MLPClassifier(hidden_layer_sizes=(hidden,), max_iter=max_iter, random_state=seed)
            )
            model.fit(z_fit, y_fit)
            return "mcc", float(matthews_corrcoef(y_eval, model.predict(z_eval)))
        model = (
            LinearRegression()
            if probe == "linear"
            else MLPRegressor(hidden_layer_sizes=(hidden,), max_iter=max_iter, random_state=seed)
        )
        model.fit(z_fit, y_fit)
        return "r2", float(r2_score(y_eval, model.predict(z_eval)))
