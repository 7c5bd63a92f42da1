"""Run outputs: the tidy results table and selecting the optimised metric from it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from mmrep.core.errors import ConfigError
from mmrep.core.files import atomic_write

RESULT_COLUMNS = ["metric", "probe", "modality", "target", "value", "split"]


def tidy(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate metric frames; the standard columns come first, in a fixed order."""
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=RESULT_COLUMNS)
    for col in RESULT_COLUMNS:
        if col not in df:
            df[col] = pd.NA
    return df[RESULT_COLUMNS + [c for c in df.columns if c not in RESULT_COLUMNS]]


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
