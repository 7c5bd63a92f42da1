"""Run outputs: the tidy results table and selecting the optimised metric from it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from mmrep.core.errors import ConfigError
from mmrep.core.files import atomic_write

RESULT_COLUMNS = ["metric", "probe", "modality", "target", "value", "split", "reason"]
"""The standard columns of results.csv, first and in this order; ``reason`` says why a row's value could not be
computed (NaN), and is empty for every computed row."""


def tidy(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate metric frames; the standard columns come first, in a fixed order."""
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=RESULT_COLUMNS)
    for col in RESULT_COLUMNS:
        if col not in df:
            df[col] = pd.NA
    df["reason"] = df["reason"].astype(object).where(df["reason"].notna(), pd.NA)  # None, NaN: computed rows
    return df[RESULT_COLUMNS + [c for c in df.columns if c not in RESULT_COLUMNS]]


def not_finite(values: pd.Series) -> np.ndarray:
    """Which entries of a value column are not finite numbers (NaN, ±inf, missing or not numeric)."""
    numbers = pd.to_numeric(values, errors="coerce").astype(float)
    return ~np.isfinite(numbers.to_numpy())


def fill_reasons(rows: pd.DataFrame, source: str) -> pd.DataFrame:
    """``rows`` (a metric's frame) with a ``reason`` on every row whose value is not finite and has none:
    ``value is not finite (<source> returned nan)``. ``source`` names the metric, e.g. ``metric.task``."""
    if rows.empty or "value" not in rows:
        return rows
    reason = rows["reason"] if "reason" in rows else pd.Series(pd.NA, index=rows.index, dtype=object)
    missing = not_finite(rows["value"]) & (reason.isna() | (reason.astype(str) == "")).to_numpy()
    if not missing.any():
        return rows
    rows = rows.assign(reason=reason.astype(object))
    rows.loc[missing, "reason"] = [f"value is not finite ({source} returned {v})" for v in rows["value"][missing]]
    return rows


def result_key(row: pd.Series) -> str:
    """A row's summary name from its identifying columns, e.g. ``r2/mlp/x/s_inv`` or ``mutual_knn/x0|x1/max``."""
    parts = [row.get(c) for c in ("metric", "probe", "modality", "target", "aggregate", "split")]
    return "/".join(str(p) for p in parts if p is not None and not pd.isna(p))  # NaN and pd.NA: no such column


def uncomputed(results: pd.DataFrame, shown: int = 3) -> str | None:
    """One line naming the rows that could not be computed (non-finite value) and why, grouped by reason with at
    most ``shown`` row names each; None when every row has a value."""
    if results.empty:
        return None
    bad = results[not_finite(results["value"])]
    if bad.empty:
        return None
    groups = []
    for reason, group in bad.groupby(bad["reason"].fillna("no reason given"), sort=False):
        names = [result_key(row) for _, row in group.head(shown).iterrows()]
        more = f" and {len(group) - shown} more" if len(group) > shown else ""
        groups.append(f"{', '.join(names)}{more}: {reason}")
    return (
        f"{len(bad)} of the {len(results)} results rows could not be computed (results.csv: no value, the reason "
        f"column says why): {'; '.join(groups)}"
    )


def write_csv_atomic(df: pd.DataFrame, path: Path) -> None:
    """Write ``df`` to ``path`` via a temporary file and rename, so a crash never leaves half a table."""
    with atomic_write(path) as fh:
        df.to_csv(fh, index=False, float_format="%.10g")


def select_value(
    results: pd.DataFrame, selector: Mapping[str, object] | None, key: str = "optimized_metric"
) -> float | None:
    """Mean ``value`` of the rows whose columns equal every non-null entry of ``selector`` (None → None)."""
    if not selector:
        return None
    mask = pd.Series(True, index=results.index)
    selector = {k: v for k, v in selector.items() if v is not None}  # null keys: not constrained
    for column, wanted in selector.items():
        if column not in results:
            raise ConfigError(
                f"{key}.{column}: results.csv has no column {column!r}; columns are {list(results.columns)}"
            )
        mask &= results[column].astype(str) == str(wanted)
    if not mask.any():
        raise ConfigError(f"{key}: no results row matches {dict(selector)}")
    value = float(results.loc[mask, "value"].mean())
    return value if math.isfinite(value) else float("nan")
