"""Read run and multirun directories into one tidy DataFrame.

A *run folder* is what ``mmrep train`` writes: ``.hydra/config.yaml`` (the resolved config), ``.hydra/overrides.yaml``
(the command-line overrides that made it) and, once measured, ``results.csv`` (one row per number: ``metric``,
``value`` and the columns naming what was measured). A multirun (sweep) folder holds one run folder per job.

* :func:`find_runs` — the measured run folders under a folder;
* :func:`load_runs` — their ``results.csv`` rows in one table, with chosen config values (and, on request, every
  override) as columns — what every study analysis starts from;
* :func:`sweep_table` — the generic table of ``mmrep analyze sweep``: every run's overrides and results, plus the
  run folders it skipped and why.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf


def find_runs(root: Path) -> list[Path]:
    """Every directory under ``root`` (inclusive) holding both ``results.csv`` and ``.hydra/config.yaml``."""
    root = Path(root)
    return sorted(p.parent for p in root.rglob("results.csv") if (p.parent / ".hydra" / "config.yaml").exists())


def _run_name(run: Path, root: Path) -> str:
    return str(run.relative_to(root)) if run != root else "."


def load_runs(root: Path, config_keys: dict[str, str] | None = None, overrides: bool = False) -> pd.DataFrame:
    """Concatenate the ``results.csv`` of every run under ``root`` (:func:`find_runs`) into one tidy table.

    One row per results row, with the ``results.csv`` columns and:

    * ``run`` — the run folder relative to ``root`` (``"."`` when ``root`` is the run);
    * one column per entry of ``config_keys``, output column → dotted config key (``{"theta": "bias.theta"}``): the
      run's resolved value (None where unset; lists become tuples so they can be grouped);
    * with ``overrides``, one column per override key of any run (``.hydra/overrides.yaml``, ``hydra.*`` keys
      left out; e.g. ``objective.optimizer.lr``) placed after ``run``: each run's value as :func:`differing_overrides`
      reads it (the resolved config value, so ``1e-3`` and ``0.001`` agree and a run that did not override the key
      shows its default; config-group choices as text). A key that is also a results or ``config_keys`` column is
      named ``override:<key>``. ``table.attrs["override_columns"]`` lists these columns.

    Raises FileNotFoundError when ``root`` holds no run with both ``results.csv`` and ``.hydra/config.yaml``; a
    ``results.csv`` pandas cannot read raises its error (:func:`sweep_table` skips such runs instead).
    """
    root = Path(root)
    runs = find_runs(root)
    if not runs:
        raise FileNotFoundError(f"{root}: no run directories with results.csv and .hydra/config.yaml found")
    return _table(root, runs, [pd.read_csv(run / "results.csv") for run in runs], config_keys or {}, overrides)


def _table(root: Path, runs: list[Path], results: list[pd.DataFrame], config_keys: dict, overrides: bool):
    configs = [OmegaConf.load(run / ".hydra" / "config.yaml") for run in runs]
    raw = [run_overrides(run) for run in runs] if overrides else [{} for _ in runs]
    keys = [k for k in dict.fromkeys(k for o in raw for k in o) if not k.startswith("hydra.")]
    taken = {c for df in results for c in df.columns} | set(config_keys) | {"run"}
    override_columns = [f"override:{key}" if key in taken else key for key in keys]
    frames = []
    for run, cfg, over, df in zip(runs, configs, raw, results):
        df = df.copy()
        if overrides:  # run and overrides first: the row says which job and which overrides produced it
            front = {"run": _run_name(run, root)}
            for key, column in zip(keys, override_columns):
                front[column] = _override_value(run, cfg, key, over.get(key))
            for position, (column, value) in enumerate(front.items()):
                df.insert(position, column, [value] * len(df))
        else:
            df["run"] = _run_name(run, root)
        for column, key in config_keys.items():
            value = OmegaConf.select(cfg, key, default=None)
            if OmegaConf.is_config(value):
                value = OmegaConf.to_container(value, resolve=True)
            df[column] = [tuple(value) if isinstance(value, list) else value] * len(df)
        frames.append(df)
    table = pd.concat(frames, ignore_index=True)
    table.attrs["override_columns"] = override_columns
    return table


def _reason(err: Exception) -> str:
    return f"{type(err).__name__}: " + (str(err).strip().splitlines() or [""])[0]


def sweep_table(root: Path) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Every run folder under ``root`` in one tidy table, and the folders left out with the reason.

    The table is :func:`load_runs` with ``overrides=True``: one row per (run, ``results.csv`` row) with the
    columns ``run``, one per override key of any run, then the ``results.csv`` columns. A run folder is a folder
    with ``.hydra/config.yaml`` or ``results.csv``; one without ``results.csv`` (not finished, failed, pruned), without
    ``.hydra/config.yaml``, or whose files cannot be read is skipped: ``(run name, why)``. FileNotFoundError when
    ``root`` is no folder or holds no run folder; ValueError when every run folder is skipped.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    candidates = {p.parent.parent for p in root.rglob(".hydra/config.yaml")} | {
        p.parent for p in root.rglob("results.csv")
    }
    candidates = sorted(c for c in candidates if not {".hydra", "wandb"} & set(c.relative_to(root).parts))
    if not candidates:
        raise FileNotFoundError(f"{root}: no run folders (.hydra/config.yaml or results.csv) found")
    runs, results, skipped = [], [], []
    for run in candidates:
        name = _run_name(run, root)
        if not (run / ".hydra" / "config.yaml").is_file():
            skipped.append((name, "no .hydra/config.yaml"))
            continue
        if not (run / "results.csv").is_file():
            skipped.append((name, "no results.csv (not finished, failed or pruned)"))
            continue
        try:
            OmegaConf.load(run / ".hydra" / "config.yaml")
            run_overrides(run)
        except Exception as err:  # a truncated or hand-edited file: say which and go on
            skipped.append((name, f"unreadable .hydra files ({_reason(err)})"))
            continue
        try:
            results.append(pd.read_csv(run / "results.csv"))
        except Exception as err:
            skipped.append((name, f"unreadable results.csv ({_reason(err)})"))
            continue
        runs.append(run)
    if not runs:
        why = "; ".join(f"{name}: {reason}" for name, reason in skipped[:3]) + ("; ..." if len(skipped) > 3 else "")
        raise ValueError(f"{root}: none of its {len(skipped)} run folders has a readable results.csv ({why})")
    return _table(root, runs, results, {}, overrides=True), skipped


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
    :func:`_override_value` reads them. Indexed by the ``run`` names of :func:`load_runs`; no columns (but a row per
    run) when nothing differs.
    """
    root = Path(root)
    runs = find_runs(root)
    names = [str(run.relative_to(root)) if run != root else "." for run in runs]
    overrides = [run_overrides(run) for run in runs]
    ignored = set(ignore)
    keys = [
        k for k in dict.fromkeys(k for o in overrides for k in o) if k not in ignored and not k.startswith("hydra.")
    ]
    columns = {}
    configs = {}
    for key in keys:
        values = []
        for run, over in zip(runs, overrides):
            if run not in configs:
                configs[run] = OmegaConf.load(run / ".hydra" / "config.yaml")
            values.append(_override_value(run, configs[run], key, over.get(key)))
        if len(set(values)) > 1:
            columns[key] = values
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
