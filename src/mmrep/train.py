"""``python -m mmrep.train``: compose a run from the five config groups, train it, measure it.

    python -m mmrep.train                                   # the default numeric misalignment run
    python -m mmrep.train bias=selection objective.lr=3e-3  # compose and override
    python -m mmrep.train -m experiment=numeric_selection   # a sweep (see README)

The run directory receives ``.hydra/config.yaml`` (the resolved config), ``checkpoints/``, ``csv/metrics.csv``
(training curves) and ``results.csv`` (one row per measured quantity). The return value is the configured
``optimized_metric`` (for Optuna sweeps).
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
import warnings
from pathlib import Path

import hydra
import pandas as pd
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.errors import InstantiationException
from hydra.utils import instantiate as _hydra_instantiate
from omegaconf import DictConfig, OmegaConf

from mmrep.errors import ConfigError
from mmrep.utils.results import select_value, tidy, write_csv_atomic

log = logging.getLogger("mmrep.train")
# Lightning chatter that says nothing about a run: our stream defines __len__ on purpose (epoch length).
warnings.filterwarnings("ignore", message=".*IterableDataset.*has `__len__` defined.*")
warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated.*")
CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")


def instantiate(config, *args, **kwargs):
    """``hydra.utils.instantiate`` that surfaces our ConfigError (Hydra wraps it) with its one-line message."""
    try:
        return _hydra_instantiate(config, *args, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        while cause is not None and not isinstance(cause, ConfigError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise


def _instantiate_all(section: DictConfig | None) -> list:
    return [instantiate(c) for c in (section or {}).values() if c is not None and "_target_" in c]


def build(cfg: DictConfig):
    """Instantiate bias, datamodule and model from ``cfg`` (no training). Raises ConfigError on bad input."""
    bias = instantiate(cfg.bias, _convert_="all") if cfg.get("bias") else None
    datamodule = instantiate(cfg.dataset, bias=bias, _convert_="all")
    encoding_size = cfg.objective.get("encoding_size") or getattr(datamodule, "default_encoding_size", None)
    extra = {}
    if "num_classes" in cfg.objective and cfg.objective.num_classes is None:
        extra["num_classes"] = getattr(datamodule, "num_classes", None)  # classification objectives
    model = instantiate(
        cfg.objective,
        encoder=instantiate(cfg.encoder),
        modalities=datamodule.modalities,
        encoding_size=encoding_size,
        _convert_="all",
        **extra,
    )
    return datamodule, model


def run(cfg: DictConfig) -> tuple[pd.DataFrame, float | None]:
    """Train and evaluate one composed run; returns the results table and the optimised value."""
    out_dir = Path(cfg.paths.output_dir)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule, model = build(cfg)
    metrics = _instantiate_all(cfg.get("metric"))
    callbacks = _instantiate_all(cfg.get("callbacks"))
    loggers = _instantiate_all(cfg.get("logger"))
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    started = time.perf_counter()
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    train_seconds = time.perf_counter() - started
    if not trainer.is_global_zero:
        return pd.DataFrame(), None

    frames = [m(model, datamodule) for m in metrics]
    val_loss = trainer.callback_metrics.get("val/loss")
    if val_loss is not None:
        frames.append(pd.DataFrame([{"metric": "loss", "target": "contrastive", "split": "val", "value": float(val_loss)}]))
    results = tidy(frames)
    write_csv_atomic(results, out_dir / "results.csv")
    log.info("training took %.1fs; results: %s", train_seconds, out_dir / "results.csv")
    _print_summary(results)
    try:
        return results, select_value(results, cfg.get("optimized_metric"))
    except ConfigError as err:
        if _optuna_sweep():
            raise
        # a plain run or grid sweep does not need the value: say so instead of failing a finished run
        log.warning("%s (set optimized_metric to a results.csv row to return a value)", err)
        return results, None


def _optuna_sweep() -> bool:
    if not HydraConfig.initialized():
        return False
    return "optuna" in str(HydraConfig.get().sweeper.get("_target_", "")).lower()


def _print_summary(results: pd.DataFrame) -> None:
    """Compact rich tables: probe scores (targets × modality/probe), accuracy (modality × split) and alignment
    (metric × max/last)."""
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True)
    scored = results[results["probe"].notna()]
    if not scored.empty:
        pivot = scored.pivot_table(index="target", columns=["metric", "modality", "probe"], values="value", sort=False)
        table = Table(title="held-out probe scores")
        table.add_column("target")
        for col in pivot.columns:
            table.add_column("/".join(map(str, col)), justify="right")
        for target, row in pivot.iterrows():
            table.add_row(str(target), *[f"{v:.3f}" for v in row.values])
        console.print(table)
    accuracy = results[results["metric"] == "accuracy"]
    if not accuracy.empty:
        pivot = accuracy.pivot_table(index="modality", columns="split", values="value", sort=False)
        table = Table(title="accuracy (best-validation weights)")
        table.add_column("modality")
        for split in pivot.columns:
            table.add_column(str(split), justify="right")
        for modality, row in pivot.iterrows():
            table.add_row(str(modality), *[f"{v:.3f}" for v in row.values])
        console.print(table)
    if "aggregate" in results:
        aligned = results[results["aggregate"].isin(["max", "last"])]
        if not aligned.empty:
            table = Table(title=f"alignment {aligned['modality'].iloc[0]} (max over layer pairs, last layers)")
            for col in ("metric", "max", "at layers", "last"):
                table.add_column(col, justify="left" if col == "metric" else "right")
            for metric, rows in aligned.groupby("metric", sort=False):
                best = rows[rows["aggregate"] == "max"].iloc[0]
                last = rows[rows["aggregate"] == "last"].iloc[0]
                table.add_row(metric, f"{best['value']:.4f}", f"{best['layer_a']}/{best['layer_b']}", f"{last['value']:.4f}")
            console.print(table)


def _cleanup_failed_start(out_dir: Path) -> None:
    """Remove a run directory that holds nothing but Hydra's bookkeeping (a run that failed at start-up)."""
    if not out_dir.is_dir():
        return
    produced = [p for p in out_dir.iterdir() if p.name != ".hydra" and p.suffix != ".log"]
    if not produced:
        shutil.rmtree(out_dir, ignore_errors=True)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    out_dir = Path(cfg.paths.output_dir)
    try:
        _, value = run(cfg)
        return value
    except (ConfigError, FloatingPointError) as err:
        multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
        if isinstance(err, ConfigError):
            _cleanup_failed_start(out_dir)
        print(f"mmrep: error: {err}", file=sys.stderr)
        if multirun:
            raise
        sys.exit(1)


if __name__ == "__main__":
    main()
