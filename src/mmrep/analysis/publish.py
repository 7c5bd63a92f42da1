"""Log an analysis command's tables and figures to W&B, next to the runs of the sweep it read (``--wandb``).

One W&B run per command, ``job_type="analysis"``, named ``analysis:<analysis>`` and tagged ``analysis=<analysis>``,
in the group and project the sweep's runs used (:func:`sweep_group`; project ``logger.wandb.project`` of their
config, else ``mmrep``). What goes where:

* each table → a ``wandb.Table`` under ``tables/<name>`` (NaN as empty cells, tuples as text);
* each figure → a ``wandb.Image`` under ``figures/<file stem>``;
* the run's files → ``<sweep>/wandb/offline-run-*`` offline (upload later with ``wandb sync``),
  ``<sweep>/wandb/run-*`` online.

Offline ``"auto"`` is as for training runs (:func:`mmrep.pipeline.loggers.wandb_logger`): offline when no API key is
configured and ``WANDB_MODE`` is unset.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from mmrep.analysis.runs import find_runs
from mmrep.pipeline.loggers import wandb_has_credentials

DEFAULT_PROJECT = "mmrep"
DEFAULT_TASK = "train"  # conf/train.yaml's task_name


def _select(cfg, key: str):
    return OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)


def _sweep_config(sweep: Path) -> tuple[list[Path], object]:
    runs = find_runs(sweep)
    if not runs:
        raise FileNotFoundError(f"{sweep}: no run directories with results.csv and .hydra/config.yaml found")
    return runs, OmegaConf.load(runs[0] / ".hydra" / "config.yaml")


def sweep_group(sweep: Path) -> str:
    """The W&B group of the runs under ``sweep``, as :func:`mmrep.pipeline.loggers.wandb_logger` named it:
    ``logger.wandb.group`` where the runs' config sets one, else ``<task_name>/<sweep dir name>`` for a multirun
    folder and ``<task_name>`` for a single run directory."""
    sweep = Path(sweep).resolve()
    runs, cfg = _sweep_config(sweep)
    explicit = _select(cfg, "logger.wandb.group")
    if explicit:
        return str(explicit)
    task = _select(cfg, "task_name") or DEFAULT_TASK
    return str(task) if runs == [sweep] else f"{task}/{sweep.name}"


def _wandb_table(df: pd.DataFrame):
    import wandb

    if not isinstance(df.index, pd.RangeIndex):
        df = df.reset_index()
    df = df.map(lambda v: str(v) if isinstance(v, tuple) else v)
    df = df.astype(object).where(df.notna(), None)  # after map(), which would infer float columns again
    df.columns = [" · ".join(map(str, c)) if isinstance(c, tuple) else str(c) for c in df.columns]
    return wandb.Table(dataframe=df)


def _publish(
    sweep: Path,
    tables: dict[str, pd.DataFrame],
    figures: list[Path],
    analysis: str,
    project: str | None = None,
    offline: bool | str = "auto",
) -> tuple[str, Path | None, str | None]:
    """:func:`publish_to_wandb`, returning (group, local run directory, url: None offline)."""
    import wandb

    sweep = Path(sweep)
    group = sweep_group(sweep)
    cfg = _sweep_config(sweep)[1]
    if offline == "auto":
        offline = os.environ.get("WANDB_MODE") is None and not wandb_has_credentials()
    with wandb.init(
        project=project or _select(cfg, "logger.wandb.project") or DEFAULT_PROJECT,
        entity=_select(cfg, "logger.wandb.entity"),
        group=group,
        job_type="analysis",
        name=f"analysis:{analysis}",
        tags=[f"analysis={analysis}"],
        dir=str(sweep),
        config={"analysis": analysis, "sweep": str(sweep.resolve())},
        mode="offline" if offline else None,
        settings=wandb.Settings(console="off", silent=True),
    ) as run:
        if getattr(run, "disabled", False):
            return group, None, None
        run_dir, url = Path(run.dir).parent, (None if run.offline else run.url)
        run.log(
            {
                **{f"tables/{name}": _wandb_table(df) for name, df in tables.items()},
                **{f"figures/{Path(path).stem}": wandb.Image(str(path)) for path in figures},
            }
        )
    return group, run_dir, url


def publish_to_wandb(
    sweep: Path,
    tables: dict[str, pd.DataFrame],
    figures: list[Path],
    analysis: str,
    project: str | None = None,
    offline: bool | str = "auto",
) -> Path | None:
    """Log ``tables`` (name → DataFrame) and ``figures`` (image files) as one W&B run of ``job_type="analysis"``
    in the group of the runs under ``sweep`` (see the module docstring); returns the run's local directory
    (``<sweep>/wandb/offline-run-*`` offline), None with ``WANDB_MODE=disabled``; W&B's service may still be
    writing its files (``wandb.teardown()`` waits). Raises W&B's errors (e.g. no API key with ``WANDB_MODE=online``)."""
    return _publish(sweep, tables, figures, analysis, project, offline)[1]


def publish_cli(prog: str, sweep: Path, tables: dict[str, pd.DataFrame], figures: list[Path], analysis: str) -> int:
    """``--wandb`` of the analysis commands: publish, print ``logged to W&B: <group> (<dir or url>)`` and return 0;
    on a W&B error print one line ``<prog>: error: W&B: ...`` to stderr and return 1 (the local outputs stay)."""
    import wandb

    try:
        group, run_dir, url = _publish(sweep, tables, [p for p in figures if Path(p).exists()], analysis)
    except (wandb.errors.Error, OSError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0].rstrip(".")
        print(
            f"{prog.removeprefix('python -m ')}: error: W&B: {reason}; set WANDB_API_KEY or WANDB_MODE=offline",
            file=sys.stderr,
        )
        return 1
    finally:
        if wandb.run is None:  # no other run in this process: wait for W&B's service to write the run's files
            wandb.teardown()
    print(f"logged to W&B: {group} ({url or run_dir or 'disabled'})")
    return 0
