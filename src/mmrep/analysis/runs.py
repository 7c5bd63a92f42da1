"""Read run and multirun directories into one tidy DataFrame.

A *run folder* is what ``mmrep train`` writes: ``.hydra/config.yaml`` (the resolved config), ``.hydra/overrides.yaml``
(the command-line overrides that made it) and, once measured, ``results.csv`` (one row per number: ``metric``,
``value`` and the columns naming what was measured). A multirun (sweep) folder holds one run folder per job.

* :func:`find_runs` — the measured run folders under a folder;
* :func:`read_runs` — every run folder under a folder read once: the usable ones, and the others with the reason
  they are skipped (no ``results.csv``, unreadable files, a ``results.csv`` that is not a results table);
* :func:`load_runs` — the usable runs' ``results.csv`` rows in one table, with chosen config values (and, on request,
  every override) as columns — what every study analysis starts from; it warns once, naming each skipped run;
* :func:`sweep_table` — the generic table of ``mmrep analyze sweep``: every run's overrides and results, plus the
  run folders it skipped and why.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

RESULT_COLUMNS = ("metric", "value")  # what makes a results.csv a results table; other columns are the study's
NO_RESULTS = "no results.csv (not finished, failed or pruned)"
LISTED_PER_REASON = 10  # run names an error line gives per reason before "and n more"


def find_runs(root: Path) -> list[Path]:
    """Every directory under ``root`` (inclusive) holding both ``results.csv`` and ``.hydra/config.yaml``."""
    root = Path(root)
    return sorted(p.parent for p in root.rglob("results.csv") if (p.parent / ".hydra" / "config.yaml").exists())


def _run_name(run: Path, root: Path) -> str:
    return str(run.relative_to(root)) if run != root else "."


@dataclass(frozen=True)
class RunFolder:
    """One usable run folder, read: its path, its name relative to the folder it was found under (``"."`` for that
    folder itself), its resolved config, its overrides (:func:`run_overrides`) and its ``results.csv``."""

    path: Path
    name: str
    config: DictConfig
    overrides: dict[str, str]
    results: pd.DataFrame


def _reason(err: Exception) -> str:
    return f"{type(err).__name__}: " + (str(err).strip().splitlines() or [""])[0]


def _candidates(root: Path) -> list[Path]:
    """The folders under ``root`` (inclusive) with ``.hydra/config.yaml`` or ``results.csv``, outside ``.hydra`` and
    ``wandb`` folders; FileNotFoundError when ``root`` is no folder or holds none."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    found = {p.parent.parent for p in root.rglob(".hydra/config.yaml")} | {p.parent for p in root.rglob("results.csv")}
    candidates = sorted(c for c in found if not {".hydra", "wandb"} & set(c.relative_to(root).parts))
    if not candidates:
        raise FileNotFoundError(f"{root}: no run folders (.hydra/config.yaml or results.csv) found")
    return candidates


def read_results(path: Path) -> pd.DataFrame:
    """A ``results.csv`` as a table, or ValueError with a one-line reason: ``unreadable results.csv (...)`` (pandas
    cannot parse it, or it is empty) or ``results.csv is not a results table (...)`` (no rows, no ``metric`` or
    ``value`` column, or a ``value`` that is text). Empty ``value`` cells (numbers that could not be computed) and
    extra columns are fine; ``value`` comes back numeric."""
    try:
        table = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise ValueError("unreadable results.csv (empty file)") from None
    except Exception as err:  # a parser, decoding or I/O error: one line naming it
        raise ValueError(f"unreadable results.csv ({_reason(err)})") from None
    missing = [c for c in RESULT_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"results.csv is not a results table (no {' or '.join(map(repr, missing))} column)")
    if table.empty:
        raise ValueError("results.csv is not a results table (a header without rows)")
    value = pd.to_numeric(table["value"], errors="coerce")
    text = table["value"][value.isna() & table["value"].notna()]
    if len(text):
        raise ValueError(
            f"results.csv is not a results table (value {str(text.iloc[0])[:40]!r} on line {text.index[0] + 2} is "
            "not a number)"
        )
    return table.assign(value=value)


def _read_run(run: Path, name: str) -> RunFolder:
    """One candidate run folder read, or ValueError with the one-line reason it is not usable."""
    config_path = run / ".hydra" / "config.yaml"
    if not config_path.is_file():
        raise ValueError("no .hydra/config.yaml")
    if not (run / "results.csv").is_file():
        raise ValueError(NO_RESULTS)
    try:
        config = OmegaConf.load(config_path)
    except Exception as err:  # a truncated or hand-edited file
        raise ValueError(f"unreadable .hydra/config.yaml ({_reason(err)})") from None
    if not isinstance(config, DictConfig):
        raise ValueError(".hydra/config.yaml is not a config (a list, not a mapping)")
    try:
        overrides = run_overrides(run)
    except Exception as err:
        raise ValueError(f"unreadable .hydra/overrides.yaml ({_reason(err)})") from None
    return RunFolder(run, name, config, overrides, read_results(run / "results.csv"))


def read_runs(root: Path) -> tuple[list[RunFolder], list[tuple[str, str]]]:
    """Every run folder under ``root`` (inclusive) read once: the usable ones and the skipped ones as ``(run name,
    why)``.

    A run folder is a folder with ``.hydra/config.yaml`` or ``results.csv``. It is skipped without ``results.csv``
    (not finished, failed or pruned), without a readable ``.hydra/config.yaml`` or ``.hydra/overrides.yaml``, or
    when its ``results.csv`` is unreadable or not a results table (:func:`read_results`). FileNotFoundError when
    ``root`` is no folder or holds no run folder; ValueError, one line naming ``root`` and every reason, when every run
    folder is skipped.
    """
    root = Path(root)
    runs, skipped = [], []
    for run in _candidates(root):
        name = _run_name(run, root)
        try:
            runs.append(_read_run(run, name))
        except ValueError as err:
            skipped.append((name, str(err)))
    if not runs:
        raise ValueError(f"{root}: none of its {len(skipped)} run folders is usable ({skipped_summary(skipped)})")
    return runs, skipped


def skipped_summary(skipped: Sequence[tuple[str, str]]) -> str:
    """The skipped runs on one line, grouped by reason: ``4, 7: no results.csv (...); 5: unreadable results.csv
    (...)`` (at most :data:`LISTED_PER_REASON` names per reason, then ``and n more``)."""
    by_reason: dict[str, list[str]] = {}
    for name, why in skipped:
        by_reason.setdefault(why, []).append(name)
    parts = []
    for why, names in by_reason.items():
        more = len(names) - LISTED_PER_REASON
        listed = ", ".join(names[:LISTED_PER_REASON]) + (f" and {more} more" if more > 0 else "")
        parts.append(f"{listed}: {why}")
    return "; ".join(parts)


def skipped_listing(skipped: Sequence[tuple[str, str]]) -> str:
    """One line per skipped run, ``  <name>: <why>``, for a warning."""
    return "\n".join(f"  {name}: {why}" for name, why in skipped)


def warn_skipped(root: Path, skipped: Sequence[tuple[str, str]], total: int, what: str = "run folders") -> None:
    """One warning naming every skipped run and why: ``<root>: skipping 2 of 12 <what>:`` then a line per run."""
    if skipped:
        log.warning("%s: skipping %d of %d %s:\n%s", root, len(skipped), total, what, skipped_listing(skipped))


def usable_runs(root: Path) -> tuple[list[RunFolder], list[tuple[str, str]]]:
    """:func:`read_runs` (and its errors) with one warning naming each skipped run folder and why."""
    root = Path(root)
    runs, skipped = read_runs(root)
    warn_skipped(root, skipped, len(runs) + len(skipped))
    return runs, skipped


def load_runs(root: Path, config_keys: dict[str, str] | None = None, overrides: bool = False) -> pd.DataFrame:
    """Concatenate the ``results.csv`` of every usable run under ``root`` (:func:`read_runs`) into one tidy table.

    One row per results row, with the ``results.csv`` columns and:

    * ``run`` — the run folder relative to ``root`` (``"."`` when ``root`` is the run);
    * one column per entry of ``config_keys``, output column → dotted config key (``{"theta": "bias.theta"}``): the
      run's resolved value (None where unset; lists become tuples so they can be grouped);
    * with ``overrides``, one column per override key of any run (``.hydra/overrides.yaml``, ``hydra.*`` keys
      left out; e.g. ``objective.optimizer.lr``) placed after ``run``: each run's value as :func:`differing_overrides`
      reads it (the resolved config value, so ``1e-3`` and ``0.001`` agree and a run that did not override the key
      shows its default; config-group choices as text). A key that is also a results or ``config_keys`` column is
      named ``override:<key>``. ``table.attrs["override_columns"]`` lists these columns.

    The run folders left out are in ``table.attrs["skipped"]`` as ``(run name, why)`` and named, with their reason,
    in one warning. FileNotFoundError when ``root`` is no folder or holds no run folder; ValueError naming every
    reason when no run folder is usable.
    """
    runs, skipped = usable_runs(root)
    table = _table(runs, config_keys or {}, overrides)
    table.attrs["skipped"] = skipped
    return table


def _table(runs: list[RunFolder], config_keys: dict, overrides: bool) -> pd.DataFrame:
    keys = [k for k in dict.fromkeys(k for run in runs for k in run.overrides) if not k.startswith("hydra.")]
    keys = keys if overrides else []
    taken = {c for run in runs for c in run.results.columns} | set(config_keys) | {"run"}
    override_columns = [f"override:{key}" if key in taken else key for key in keys]
    frames = []
    for run in runs:
        df = run.results.copy()
        if overrides:  # run and overrides first: the row says which job and which overrides produced it
            front = {"run": run.name}
            for key, column in zip(keys, override_columns):
                front[column] = _override_value(run.path, run.config, key, run.overrides.get(key))
            for position, (column, value) in enumerate(front.items()):
                df.insert(position, column, [value] * len(df))
        else:
            df["run"] = run.name
        for column, key in config_keys.items():
            value = OmegaConf.select(run.config, key, default=None)
            if OmegaConf.is_config(value):
                value = OmegaConf.to_container(value, resolve=True)
            df[column] = [tuple(value) if isinstance(value, list) else value] * len(df)
        frames.append(df)
    table = pd.concat(frames, ignore_index=True)
    table.attrs["override_columns"] = override_columns
    return table


def sweep_table(root: Path) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Every run folder under ``root`` in one tidy table, and the folders left out with the reason.

    The table is :func:`load_runs` with ``overrides=True``: one row per (run, ``results.csv`` row) with the
    columns ``run``, one per override key of any run, then the ``results.csv`` columns. The run folders are those of
    :func:`read_runs`, and so are the skipped ones, ``(run name, why)``, and the errors: FileNotFoundError when
    ``root`` is no folder or holds no run folder; ValueError when every run folder is skipped.
    """
    runs, skipped = read_runs(Path(root))
    return _table(runs, {}, overrides=True), skipped


OVERRIDE_UNSET = "(default)"


def run_overrides(run: Path) -> dict[str, str]:
    """The command-line overrides Hydra saved for ``run`` (``.hydra/overrides.yaml``) as key → raw value text.

    ``+key=v`` and ``++key=v`` count as ``key=v``; ``~key`` as ``key`` with the value ``(deleted)``; a run
    without the file has none.
    """
    path = Path(run) / ".hydra" / "overrides.yaml"
    if not path.exists():
        return {}
    out = {}
    for item in OmegaConf.to_container(OmegaConf.load(path)) or []:
        text = str(item).strip()
        if text.startswith("~"):
            out[text[1:].split("=", 1)[0]] = "(deleted)"
            continue
        key, sep, value = text.lstrip("+").partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def _run_choices(run: Path) -> dict:
    """Hydra's config-group choices of ``run`` (``.hydra/hydra.yaml``: ``hydra.runtime.choices``), or {}."""
    path = Path(run) / ".hydra" / "hydra.yaml"
    if not path.exists():
        return {}
    choices = OmegaConf.select(OmegaConf.load(path), "hydra.runtime.choices", default=None)
    return OmegaConf.to_container(choices) if OmegaConf.is_config(choices) else {}


def _list_text(value: list) -> str:
    return "[" + ", ".join(_list_text(v) if isinstance(v, list) else str(v) for v in value) + "]"


def _override_value(run: Path, cfg, key: str, raw: str | None):
    """One run's value of an override key, comparable across runs.

    A config value (``objective.optimizer.lr``) is read from the run's resolved config, so ``1e-3`` and ``0.001``
    are equal and a run that did not override the key contributes its default; a config-group choice
    (``bias=perturbation``, ``encoder@encoders.x=mlp``) is the override's text, else the run's recorded choice.
    Lists become text (``[0, 1]``) so the value can be grouped; an unknown value is ``(default)``.
    """
    if "@" not in key and raw != "(deleted)":
        try:
            value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        except Exception:  # an interpolation that needs Hydra's runtime (${hydra:...}): fall back to the text
            value = None
        if OmegaConf.is_config(value):
            container = OmegaConf.to_container(value, resolve=False)
            if isinstance(container, list):
                return _list_text(container)
        elif value is not None:
            return value
    if raw is not None:
        return raw
    return _run_choices(run).get(key) or OVERRIDE_UNSET


def differing_overrides(root: Path, ignore=()) -> pd.DataFrame:
    """The override keys whose values differ between the runs under ``root``, one column each.

    The keys are those of every run's ``.hydra/overrides.yaml`` (Hydra's record of the job's command-line
    overrides, e.g. ``objective.optimizer.lr=0.001``), minus ``ignore`` and ``hydra.*``; the values are compared as
    :func:`_override_value` reads them. Indexed by the ``run`` names of :func:`load_runs` (its usable runs, those of
    :func:`read_runs`); no columns (but a row per run) when nothing differs.
    """
    runs, _ = read_runs(Path(root))
    ignored = set(ignore)
    keys = [
        k
        for k in dict.fromkeys(k for run in runs for k in run.overrides)
        if k not in ignored and not k.startswith("hydra.")
    ]
    columns = {}
    for key in keys:
        values = [_override_value(run.path, run.config, key, run.overrides.get(key)) for run in runs]
        if len(set(values)) > 1:
            columns[key] = values
    names = [run.name for run in runs]
    return pd.DataFrame(columns, index=pd.Index(names, name="run"))


def _cell(value, floatfmt: str) -> str:
    if value is None or (isinstance(value, (float, np.floating)) and np.isnan(value)) or value is pd.NA:
        return ""
    if isinstance(value, (float, np.floating)):
        text = format(float(value), floatfmt)
    elif isinstance(value, tuple):
        text = " · ".join(str(v) for v in value)
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(table: pd.DataFrame, floatfmt: str = ".3f") -> str:
    """``table`` as a Markdown pipe table (no extra package): the index first, a header row, a ``|---|`` separator.

    Index levels with names head their column (unnamed: blank); the labels of multi-level columns are joined with
    `` · ``; floats are written with ``floatfmt`` (3 decimals), missing values blank, ``|`` escaped. Numbers are
    right-aligned within the padding so the plain text reads as a table too.
    """
    index = table.index
    n_index = index.nlevels
    header = [_cell(name, floatfmt) if name is not None else "" for name in index.names]
    header += [_cell(col, floatfmt) for col in table.columns]
    body = []
    for label, values in zip(index, table.itertuples(index=False, name=None)):
        labels = label if n_index > 1 else (label,)
        body.append([_cell(v, floatfmt) for v in (*labels, *values)])
    numeric = [False] * n_index + [
        pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype) for dtype in table.dtypes
    ]
    widths = [max([3, len(h)] + [len(row[i]) for row in body]) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        padded = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)]
        return "| " + " | ".join(padded) + " |"

    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, body)])


def save_figure(fig, ax, path: Path) -> Path:
    """Legend, tight layout, write ``path`` (PNG, 120 dpi), close the figure."""
    import matplotlib.pyplot as plt

    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
