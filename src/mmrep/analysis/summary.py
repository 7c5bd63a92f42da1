"""Seed summaries shared by the study analyses: means with Student-t intervals, least-squares trends and table
cells.

Values come as a tidy frame with one row per run and quantity (a ``value`` column); every function groups by the
columns it is given, so the studies only decide what their keys are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from mmrep.analysis.runs import skipped_summary, warn_skipped

SUMMARY_COLUMNS = ("mean", "ci_low", "ci_high", "n_seeds")


def mean_ci(values, level: float = 0.95) -> tuple[float, float, float, int]:
    """(mean, low, high, n) of the finite ``values`` with a Student-t interval at ``level``; NaN bounds for n < 2."""
    x = np.asarray(values, float)
    x = x[np.isfinite(x)]
    n = len(x)
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    mean = float(x.mean())
    if n < 2:
        return mean, float("nan"), float("nan"), n
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * x.std(ddof=1) / np.sqrt(n))
    return mean, mean - half, mean + half, n


def summarize(values: pd.DataFrame, by: Sequence[str], level: float = 0.95) -> pd.DataFrame:
    """Per group of ``by``: ``mean, ci_low, ci_high, n_seeds`` of the ``value`` column (one row per run)."""
    by = list(by)
    rows = [
        {
            **dict(zip(by, key if isinstance(key, tuple) else (key,))),
            **dict(zip(SUMMARY_COLUMNS, mean_ci(part["value"], level))),
        }
        for key, part in values.groupby(by, sort=True, dropna=False)
    ]
    return pd.DataFrame(rows, columns=[*by, *SUMMARY_COLUMNS])


def slope(x, y, level: float = 0.95) -> tuple[float, float, float]:
    """Least-squares slope of ``y`` on ``x`` with its ``level`` t interval; NaN for < 3 finite points or constant x."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 3 or np.ptp(x) == 0:
        return float("nan"), float("nan"), float("nan")
    fit = stats.linregress(x, y)
    half = float(stats.t.ppf(0.5 + level / 2, len(x) - 2) * fit.stderr)
    return float(fit.slope), float(fit.slope) - half, float(fit.slope) + half


def trend(values: pd.DataFrame, x: str, by: Sequence[str], level: float = 0.95) -> pd.DataFrame:
    """Per group of ``by``: the slope of the per-run ``value`` on column ``x`` (:func:`slope`: ``slope``,
    ``slope_low``, ``slope_high``), the seed means at the smallest and largest ``x`` (``at_<x>_min``,
    ``at_<x>_max``), those ``x`` (``<x>_min``, ``<x>_max``) and the run count ``n_runs``."""
    rows = []
    for key, part in values.groupby(list(by), sort=True, dropna=False):
        means = part.groupby(x)["value"].mean()
        s, lo, hi = slope(part[x], part["value"], level)
        rows.append(
            {
                **dict(zip(by, key if isinstance(key, tuple) else (key,))),
                "slope": s,
                "slope_low": lo,
                "slope_high": hi,
                f"at_{x}_min": means.iloc[0],
                f"at_{x}_max": means.iloc[-1],
                f"{x}_min": means.index[0],
                f"{x}_max": means.index[-1],
                "n_runs": int(np.isfinite(part["value"].to_numpy(float)).sum()),
            }
        )
    return pd.DataFrame(rows)


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson's r of each row pair of (B, n) arrays; NaN where a row is constant."""
    a, b = a - a.mean(axis=1, keepdims=True), b - b.mean(axis=1, keepdims=True)
    denominator = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 1e-12, (a * b).sum(axis=1) / denominator, np.nan)


def _residual_rows(a: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Each row of ``a`` minus its least-squares fit on ``[1, c]`` (rows of ``c``); (B, n)."""
    a_c, c_c = a - a.mean(axis=1, keepdims=True), c - c.mean(axis=1, keepdims=True)
    var = (c_c * c_c).sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        beta = np.where(var > 1e-12, (a_c * c_c).sum(axis=1, keepdims=True) / var, 0.0)
    return a_c - beta * c_c


def spearman(x, y, given=None, bootstrap: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """Spearman's ρ of ``x`` and ``y`` — with ``given``, the partial ρ controlling for it (Pearson of the rank
    residuals of linear fits on the ranks of ``given``) — and a percentile-bootstrap ``level`` interval over
    resampled points, vectorised over the resamples. NaN where undefined (< 3 points, or < 4 with ``given``)."""
    columns = [np.asarray(v, float) for v in ((x, y) if given is None else (x, y, given))]
    ok = np.logical_and.reduce([np.isfinite(v) for v in columns])
    columns = [v[ok] for v in columns]
    n = len(columns[0])
    if n < (3 if given is None else 4):
        return float("nan"), float("nan"), float("nan")

    def rho(index: np.ndarray) -> np.ndarray:  # (B, n) resample indices → (B,) ρ
        ranks = [stats.rankdata(v[index], axis=1) for v in columns]
        if given is None:
            return _pearson_rows(*ranks)
        return _pearson_rows(_residual_rows(ranks[0], ranks[2]), _residual_rows(ranks[1], ranks[2]))

    value = float(rho(np.arange(n)[None, :])[0])
    if not bootstrap:
        return value, float("nan"), float("nan")
    draws = rho(np.random.default_rng(seed).integers(0, n, (bootstrap, n)))
    draws = draws[np.isfinite(draws)]
    if not len(draws):
        return value, float("nan"), float("nan")
    lo, hi = np.percentile(draws, [50 * (1 - level), 50 * (1 + level)])
    return value, float(lo), float(hi)


def cell(mean: float, low: float, high: float, digits: int = 2) -> str:
    """``mean ± half-width`` for a table (``mean`` alone without an interval, blank without a mean)."""
    if not np.isfinite(mean):
        return ""
    if not np.isfinite(low):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {max(high - mean, mean - low):.{digits}f}"


def cells(summary: pd.DataFrame, digits: int = 2) -> list[str]:
    """:func:`cell` of every row of a :func:`summarize` frame."""
    return [cell(m, lo, hi, digits) for m, lo, hi in zip(summary["mean"], summary["ci_low"], summary["ci_high"])]


def unmet(runs: Sequence[str], requirements: Sequence[tuple[str, set]]) -> dict[str, str]:
    """Run → the ``why`` of the first requirement ``(why it fails, runs that meet it)`` it does not meet, for each of
    ``runs`` that fails one (in the order of ``runs``)."""
    failing = {}
    for run in runs:
        why = next((why for why, meeting in requirements if run not in meeting), None)
        if why is not None:
            failing[run] = why
    return failing


def earlier_skipped(raw: pd.DataFrame, skipped: Sequence[tuple[str, str]] | None = None) -> str:
    """``; skipped before: <runs and reasons>`` for an error about ``raw`` (from :func:`mmrep.analysis.runs.load_runs`):
    the run folders it left out (``skipped``, else ``raw.attrs["skipped"]``), on one line; empty when there are
    none."""
    skipped = raw.attrs.get("skipped", []) if skipped is None else skipped
    return f"; skipped before: {skipped_summary(skipped)}" if skipped else ""


def keep_runs(
    raw: pd.DataFrame,
    requirements: Sequence[tuple[str, set]],
    root,
    study: str,
    hint: str,
    skipped: Sequence[tuple[str, str]] | None = None,
    found: Callable[[], str] | None = None,
) -> pd.DataFrame:
    """The rows of the runs (column ``run``) that meet every requirement ``(why it fails, runs that meet it)``.

    The others are skipped with one warning naming each run and the ``why`` of the first requirement it fails. None
    left: a ValueError ``<root> holds no <study> runs (<n> runs: <why>); run it on a sweep of <hint>`` with the first
    requirement no run meets, then the run folders :func:`mmrep.analysis.runs.load_runs` skipped before (``skipped``,
    else ``raw.attrs["skipped"]``) and why. ``found``, called only for that error, describes the runs (``found
    dataset=numeric``: ``(<n> runs, found dataset=numeric: <why>)``)."""
    runs = list(dict.fromkeys(raw["run"]))
    failing = unmet(runs, requirements)
    if len(failing) == len(runs):
        keep = set(runs)
        first = None
        for why, meeting in requirements:  # the requirement that leaves no run, not each run's own first failure
            keep &= set(meeting)
            if not keep:
                first = why
                break
        described = f"{len(runs)} run{'s' * (len(runs) != 1)}" + (f", {found()}" if found else "")
        raise ValueError(
            f"{root} holds no {study} runs ({described}: {first}); run it on a sweep of {hint}"
            + earlier_skipped(raw, skipped)
        )
    warn_skipped(root, list(failing.items()), len(runs), f"runs that are not {study} runs")
    return raw[~raw["run"].isin(failing)]


def error_bars(summary: pd.DataFrame) -> list[pd.Series]:
    """``yerr`` for matplotlib from :func:`summarize` rows: the distances from ``mean`` down to ``ci_low`` and up to
    ``ci_high`` (0 where there is no interval, never negative)."""
    return [
        (summary["mean"] - summary["ci_low"]).clip(lower=0).fillna(0),
        (summary["ci_high"] - summary["mean"]).clip(lower=0).fillna(0),
    ]
