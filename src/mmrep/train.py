"""``python -m mmrep.train``: compose a run from the config groups, train it, measure it.

    python -m mmrep.train                                            # the default numeric misalignment run
    python -m mmrep.train bias=selection objective.optimizer.lr=3e-3 # compose and override
    python -m mmrep.train -m experiment=numeric_selection            # a sweep (see README)

The run directory receives ``.hydra/config.yaml`` (the resolved config), ``checkpoints/``, ``csv/metrics.csv``
(training curves) and ``results.csv`` (one row per measured quantity). Returns the ``optimized_metric`` value.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from pathlib import Path

import hydra
import pandas as pd
import pytorch_lightning as pl
from hydra_plugins.mmrep_optuna_sweeper.workers import job_heartbeat
from omegaconf import DictConfig

from mmrep.utils import preemption, preflight, threads
from mmrep.utils.console import print_config_tree, quiet_third_party
from mmrep.utils import resolvers  # noqa: F401  (config resolvers)
from mmrep.utils import run as R
from mmrep.utils.results import write_csv_atomic

log = logging.getLogger("mmrep.train")
# Lightning chatter that says nothing about a run: our stream defines __len__ on purpose (epoch length).
warnings.filterwarnings("ignore", message=".*IterableDataset.*has `__len__` defined.*")
warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated.*")
quiet_third_party()  # at import: a sweep opens its Optuna storage before main() runs
CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")


def run(cfg: DictConfig) -> tuple[pd.DataFrame, float | None]:
    """Build, fit (unless ``fit: false``), measure and write one run; returns the results and the optimised value."""
    preflight.check(cfg, R.task_overrides())
    preflight.fit_short_runs(cfg)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    # this process takes its share of the cores while the run lasts; the count is recorded with the run's config,
    # since results at one seed differ slightly between thread counts (README: Failure and resume)
    R.record_threads(cfg, threads.apply(cfg.get("cpu_threads", "auto")))
    try:
        return _run(cfg)
    finally:
        threads.release()


def _run(cfg: DictConfig) -> tuple[pd.DataFrame, float | None]:
    datamodule, model = R.build(cfg)
    metrics = R.instantiate_group(cfg.get("metric"))
    R.check_metrics(metrics, model, datamodule)
    R.check_resume(cfg, model, found=R.auto_resume(cfg))
    loggers = list(R.instantiate_group(cfg.get("logger")).values())
    callbacks = R.make_callbacks(cfg, loggers)
    trainer: pl.Trainer = R.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    if cfg.fit:
        R.check_objective(model, datamodule, trainer)
    try:
        R.log_config(loggers, cfg)
        started = time.perf_counter()
        if cfg.fit:
            R.fit(trainer, model, datamodule, cfg, callbacks)
        else:
            R.load_for_evaluation(model, datamodule, cfg.get("ckpt_path"), trainer.strategy.root_device)
        if not trainer.is_global_zero:
            return pd.DataFrame(), None
        results, summaries, failed = R.measure(metrics, model, datamodule, trainer)
        out = Path(cfg.paths.output_dir) / "results.csv"
        if not results.empty or not failed:
            write_csv_atomic(results, out)
            R.log_results(loggers, results)
        log.info("%s took %.1fs; results: %s", "training" if cfg.fit else "evaluation", time.perf_counter() - started, out)
        R.print_summaries(summaries)
        if failed:
            raise R.metrics_failed(failed, out, cfg)
        return results, R.optimized_value(results, cfg)
    finally:
        R.finish_loggers()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    preemption.install()  # in a SLURM/submitit job: a preemption notice checkpoints before the requeue
    with R.one_line_errors(Path(cfg.paths.output_dir), cfg), job_heartbeat():  # a sweep's trial beats while it runs
        print_config_tree(cfg)  # stdout and <run>/config_tree.log (print_config=false: neither)
        return run(cfg)[1]


def cli() -> None:
    """The command line: Hydra's, except that ``--cfg`` beside ``-m`` prints the config a sweep's job would get
    (Hydra itself refuses the pair), e.g. ``python -m mmrep.train -m hydra/launcher=slurm --cfg hydra``."""
    if {"--cfg", "-c"} & set(sys.argv) and {"-m", "--multirun"} & set(sys.argv):
        sys.argv = [a for a in sys.argv if a not in ("-m", "--multirun")]
    main()


if __name__ == "__main__":
    cli()
