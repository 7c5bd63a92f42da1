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


def nonfinite(values, what: str) -> str | None:
    """``"<k> of the <N> <what> are NaN/inf"`` when ``k`` rows of ``values`` (N, ...) hold a non-finite entry, else
    None."""
    values = np.asarray(values)
    if not np.issubdtype(values.dtype, np.floating) or values.size == 0:
        return None
    bad = int((~np.isfinite(values)).reshape(len(values), -1).any(1).sum())
    return f"{bad} of the {len(values)} {what} are NaN/inf" if bad else None


def undefined_probe(
    z_fit, y_fit, z_eval, y_eval, *, discrete: bool = False, fit: str = "fit", evaluate: str = "eval"
) -> str | None:
    """Why a probe from z to y has no score, None when it has one: an empty set, non-finite representations or
    targets, and targets the score cannot be defined on — R² divides by the variance of the evaluation targets
    (one constant column is enough: sklearn would write 1 or 0 for it), MCC is 0/0 for one evaluation class, and
    a classifier needs two fitting classes. ``fit`` / ``evaluate`` name the two sets in the reason.

    Shapes: z (N, d); y (N,) or (N, k)."""
    y_fit, y_eval = np.asarray(y_fit), np.asarray(y_eval)
    for name, y in ((fit, y_fit), (evaluate, y_eval)):
        if len(y) == 0:
            return f"the {name} set has no samples"
    for values, what in ((z_fit, f"{fit} representations"), (z_eval, f"{evaluate} representations")):
        if reason := nonfinite(values, what):
            return reason
    for values, what in ((y_fit, f"{fit} targets"), (y_eval, f"{evaluate} targets")):
        if reason := nonfinite(values, what):
            return reason
    if discrete:
        if len(classes := np.unique(y_fit)) < 2:
            return f"the {fit} labels hold one class ({classes[0]}): a classifier needs two"
        if len(classes := np.unique(y_eval)) < 2:
            return f"the {evaluate} labels hold one class ({classes[0]}) for all {len(y_eval)} samples: MCC is 0/0"
        return None
    columns = y_eval.reshape(len(y_eval), -1)
    constant = np.flatnonzero((columns == columns[:1]).all(0))
    if len(constant) == 0:
        return None
    if columns.shape[1] == 1:
        return (
            f"the {evaluate} targets are constant ({columns[0, 0]:g} for all {len(columns)} samples): "
            "R² divides by their zero variance"
        )
    return (
        f"{len(constant)} of the {columns.shape[1]} {evaluate} target columns are constant (column "
        f"{int(constant[0])}: {columns[0, constant[0]]:g}): R² divides by their zero variance"
    )


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
    discrete ones; NaN where the score is undefined (:func:`undefined_probe` says why).
    """
    if probe not in PROBES:
        raise ValueError(f"metric.probes: unknown probe {probe!r}; choose from {list(PROBES)}")
    y_fit, y_eval = np.asarray(y_fit), np.asarray(y_eval)
    if y_fit.ndim == 2 and y_fit.shape[1] == 1:
        y_fit, y_eval = y_fit[:, 0], y_eval[:, 0]
    if undefined_probe(z_fit, y_fit, z_eval, y_eval, discrete=discrete) is not None:
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
