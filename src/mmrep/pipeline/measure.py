"""Measure the trained model: every metric's rows, the failed ones named, the value an Optuna sweep optimises."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import pandas as pd
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mmrep.core.errors import ConfigError, MetricsFailed
from mmrep.core.results import fill_reasons, select_value, tidy, uncomputed
from mmrep.pipeline.errors import one_line_message

log = logging.getLogger("mmrep.train")


def measure(metrics: dict, model, datamodule, trainer) -> tuple[pd.DataFrame, list, dict[str, BaseException]]:
    """Every metric's rows (+ the validation-loss row, named by the objective), each metric's summary table and the
    metrics that failed (``{name: error}``): one failing metric does not cost the others' rows. A row whose value is
    not finite keeps its metric's ``reason`` or gets ``value is not finite (metric.<name> returned nan)``; one
    warning names those rows and why."""
    frames: list[pd.DataFrame] = []
    summaries: list = []
    failed: dict[str, BaseException] = {}
    for name, metric in metrics.items():
        try:
            rows = metric(model, datamodule)
        except Exception as err:  # noqa: BLE001 - reported with its name once the other rows are written
            if one_line_message(err, None) is None:  # a bug: keep its traceback in the log
                log.error("metric.%s failed", name, exc_info=err)
            failed[name] = err
            continue
        frames.append(fill_reasons(rows, f"metric.{name}"))
        if hasattr(metric, "summary") and not rows.empty:
            summaries.append(metric.summary(rows))
    val_loss = trainer.callback_metrics.get("val/loss")
    if val_loss is not None:
        value = float(val_loss)
        loss: dict[str, object] = {
            "metric": "loss",
            "target": getattr(model, "loss_name", "loss"),
            "split": "val",
            "value": value,
        }
        if not math.isfinite(value):
            loss["reason"] = f"the validation loss of the last epoch is {value} (the training diverged)"
        frames.append(pd.DataFrame([loss]))
    results = tidy(frames)
    if (message := uncomputed(results)) is not None:
        log.warning(message)
    return results, [s for s in summaries if s is not None], failed


def metrics_failed(failed: dict[str, BaseException], results_path: Path, cfg: DictConfig) -> MetricsFailed:
    """One line naming each failed metric and its error, where the rest went and how to measure again."""
    errors = "; ".join(
        f"metric.{name}: {one_line_message(err, None) or f'{type(err).__name__}: {err}'}"
        for name, err in failed.items()
    )
    kept = f"the other metrics' rows are in {results_path}" if results_path.is_file() else "no other metric ran"
    again = ""
    if cfg.fit:
        ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
        if ckpt.is_file():
            again = f"; measure again without training: fit=false ckpt_path={ckpt}"
    return MetricsFailed(f"after training, {errors} ({kept}{again})")


def print_summaries(summaries: list) -> None:
    from rich.console import Console

    console = Console(stderr=True)
    for table in summaries:
        console.print(table)


def optimized_value(results: pd.DataFrame, cfg: DictConfig) -> float | None:
    """The value an Optuna sweep optimises; outside one, a missing row is a warning, not a failed run."""
    try:
        return select_value(results, cfg.get("optimized_metric"))
    except ConfigError as err:
        if optuna_sweep():
            raise
        log.warning("%s (set optimized_metric to a results.csv row to return a value)", err)
        return None


def optuna_sweep() -> bool:
    if not HydraConfig.initialized():
        return False
    return "optuna" in str(HydraConfig.get().sweeper.get("_target_", "")).lower()


def write_results(metrics: dict, model, datamodule, trainer, loggers: list, cfg: DictConfig, started: float):
    """Measure (rank 0), write ``results.csv`` atomically, log it; returns (results, optimised value), (None, None)
    on the other ranks. Failed metrics end the run with one line naming them, after the others' rows are written."""
    if not trainer.is_global_zero:
        return None, None
    from mmrep.core.results import write_csv_atomic
    from mmrep.pipeline.loggers import log_results

    results, summaries, failed = measure(metrics, model, datamodule, trainer)
    out = Path(cfg.paths.output_dir) / "results.csv"
    if not results.empty or not failed:
        write_csv_atomic(results, out)
        log_results(loggers, results)
    log.info("%s took %.1fs; results: %s", "training" if cfg.fit else "evaluation", time.perf_counter() - started, out)
    print_summaries(summaries)
    if failed:
        raise metrics_failed(failed, out, cfg)
    return results, optimized_value(results, cfg)
