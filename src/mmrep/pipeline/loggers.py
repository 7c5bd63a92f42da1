"""Logger factories that pick sensible modes for the machine they run on."""

from __future__ import annotations

import csv
import logging
import os
import sys
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment

from mmrep.core.files import atomic_write
from mmrep.core.results import not_finite, result_key

log = logging.getLogger(__name__)


def wandb_has_credentials() -> bool:
    """True when an API key is configured (env var or ~/.netrc entry for the W&B host)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def _hydra_run_names(task_name: str) -> tuple[str, str | None]:
    """(group, name) for W&B: in a multirun the group is ``<task>/<sweep dir>`` and each job is named by its number
    and overrides; a single run is grouped under its task."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return task_name, None
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return task_name, None
    overrides = ",".join(hc.overrides.task)
    return f"{task_name}/{Path(hc.sweep.dir).name}", f"{hc.job.num}:{overrides}" if overrides else str(hc.job.num)


def choice_tags() -> list[str]:
    """``group=option`` for the run's chosen config groups (``dataset=rus``, ``objective=unimodal``, ...)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    choices = HydraConfig.get().runtime.choices
    return [
        f"{group}={option}"
        for group, option in choices.items()
        if option and not group.startswith("hydra") and "@" not in group and group not in ("paths", "callbacks")
    ]


def wandb_logger(
    offline: bool | str = "auto",
    task_name: str = "train",
    group: str | None = None,
    name: str | None = None,
    tags: list[str] | None = None,
    **kwargs,
):
    """A ``WandbLogger``; ``offline="auto"`` goes offline when no API key is configured and ``WANDB_MODE`` is unset.

    ``group``/``name`` default to the experiment (``task_name``) and, in a multirun, the sweep and the job, so every
    job of a sweep is its own W&B run and a sweep is one group; ``tags`` default to the chosen group options.
    Offline runs land in
    ``<save_dir>/wandb/offline-run-*``; upload them later with ``wandb sync``.
    """
    from pytorch_lightning.loggers import WandbLogger

    mode = os.environ.get("WANDB_MODE")
    if offline == "auto":
        offline = mode is None and not wandb_has_credentials()
        if offline:
            log.info("W&B: no API key configured, logging offline (sync later with `wandb sync`)")
    if (not offline and mode in (None, "online", "run")) and not wandb_has_credentials():
        from mmrep.core.errors import ConfigError

        asked = f"WANDB_MODE={mode}" if mode else "logger.wandb.offline=false"
        raise ConfigError(
            f"logger.wandb: {asked} but no W&B API key is configured; run `wandb login` or set "
            "WANDB_API_KEY, or log offline (WANDB_MODE=offline, sync later with `wandb sync`)"
        )
    default_group, default_name = _hydra_run_names(task_name)
    return WandbLogger(
        offline=bool(offline),
        group=group or default_group,
        name=name or default_name,
        tags=list(tags) if tags is not None else choice_tags(),
        **kwargs,
    )


class _ResumableExperimentWriter(ExperimentWriter):
    """Lightning's CSV experiment writer, except that an existing ``metrics.csv`` is kept (not deleted on creation)
    until :meth:`keep_until` says which of its rows the resumed run continues from."""

    def _check_log_dir_exists(self) -> None:
        self._earlier_rows, self._earlier_keys = [], []
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                reader = csv.DictReader(file)
                self._earlier_rows, self._earlier_keys = list(reader), list(reader.fieldnames or [])

    def keep_until(self, step: int) -> None:
        """Keep the earlier rows logged at steps ≤ ``step`` (the resumed checkpoint's), drop the rest (a fresh run,
        ``step`` 0: all of them), so the file reads as one run."""
        kept = [
            r for r in self._earlier_rows if step > 0 and r.get("step") not in (None, "") and float(r["step"]) <= step
        ]
        if not kept:
            if self._fs.isfile(self.metrics_file_path):
                self._fs.rm_file(self.metrics_file_path)
            return
        self.metrics_keys = sorted(set(self._earlier_keys) | set(self.metrics_keys))
        with atomic_write(Path(self.metrics_file_path), "w") as file:
            writer = csv.DictWriter(file, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(kept)


class ResumableCSVLogger(CSVLogger):
    """Lightning's ``CSVLogger`` whose ``csv/metrics.csv`` survives a resume in the same run directory: rows up to
    the checkpoint's step stay, the resumed run's rows are appended (Lightning deletes the file)."""

    @property
    @rank_zero_experiment
    def experiment(self):
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ResumableExperimentWriter(log_dir=self.log_dir)
        return self._experiment

    def keep_rows_until(self, step: int) -> None:
        writer = self.experiment
        if hasattr(writer, "keep_until"):  # rank 0 (elsewhere a dummy experiment)
            writer.keep_until(step)


def log_config(loggers: list, config: DictConfig) -> None:
    """The resolved run config as every logger's hyper-parameters."""
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(config, resolve=True))


def log_results(loggers: list, results: pd.DataFrame) -> None:
    """The final results to the loggers: W&B gets a ``results`` table (every row, with its ``reason``) and one
    summary value per computed row (the CSV logger's table is ``results.csv`` itself); TensorBoard gets each
    computed row as a scalar at the last step. A row without a value (NaN, named with its reason in the warning
    of :func:`mmrep.pipeline.measure.measure`) is no number to chart."""
    computed = results[~not_finite(results["value"])] if "value" in results else results
    for logger in loggers:
        if hasattr(logger, "log_table"):
            logger.log_table(key="results", dataframe=results.astype(object).where(results.notna(), None))
            summary = logger.experiment.summary
            for _, row in computed.iterrows():
                summary[f"results/{result_key(row)}"] = float(row["value"])
        elif type(logger).__name__ == "TensorBoardLogger":
            logger.log_metrics({f"results/{result_key(row)}": float(row["value"]) for _, row in computed.iterrows()})


def finish_loggers() -> None:
    """End the W&B run, so the next job of a multirun starts its own (W&B would reuse an unfinished run)."""
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()
