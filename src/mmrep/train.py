"""``mmrep train`` (``python -m mmrep.train``): compose a run from the config groups, train it, measure it, e.g.
``mmrep train bias=selection objective.optimizer.lr=3e-3`` or ``mmrep train -m experiment=numeric_selection``. A run
folder gets ``.hydra/config.yaml``, ``checkpoints/``, ``csv/metrics.csv`` and ``results.csv``. The steps live
in :mod:`mmrep.pipeline`, imported when a run starts: ``--help``, ``--cfg`` and config errors need no torch.
"""

import os
import sys
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig

from mmrep.core.configs import CONF_DIR
from mmrep.pipeline import console, resolvers  # noqa: F401  (resolvers: registers the configs' ${mmrep.…:})

console.quiet_third_party()  # at import: a sweep opens its Optuna storage before main() runs


def run(cfg: DictConfig):
    """Build, fit (unless ``fit: false``), measure and write one run; returns (results, optimised value)."""
    from mmrep.pipeline import preflight

    preflight.check(cfg, preflight.task_overrides())  # config errors answer before torch is imported
    preflight.fit_short_runs(cfg)
    from mmrep.pipeline import build

    with build.session(cfg):  # seeded, this process's share of the cores; loggers finished at the end
        return _build_fit_measure(cfg)


def _build_fit_measure(cfg: DictConfig):
    from mmrep.callbacks import always_on
    from mmrep.pipeline import build, checks, fit, loggers, measure, resume

    datamodule, model = build.build(cfg)
    metrics = build.instantiate_group(cfg.get("metric"))
    checks.check_metrics(metrics, model, datamodule)
    resume.check_resume(cfg, model, found=resume.auto_resume(cfg))
    run_loggers = list(build.instantiate_group(cfg.get("logger")).values())
    callbacks = fit.make_callbacks(cfg, run_loggers, always_on(cfg))
    trainer = build.instantiate(cfg.trainer, callbacks=callbacks, logger=run_loggers or False)
    checks.check_objective(model, datamodule, trainer, cfg.fit)
    loggers.log_config(run_loggers, cfg)
    started = time.perf_counter()
    if cfg.fit:
        fit.fit(trainer, model, datamodule, cfg, callbacks)
    else:
        resume.load_for_evaluation(model, datamodule, cfg.get("ckpt_path"), trainer.strategy.root_device)
    return measure.write_results(metrics, model, datamodule, trainer, run_loggers, cfg, started)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    from hydra_plugins.mmrep_optuna_sweeper.workers import job_heartbeat
    from mmrep.core import preemption
    from mmrep.pipeline.errors import one_line_errors

    preemption.install()  # in a SLURM/submitit job: a preemption notice checkpoints before the requeue
    with one_line_errors(Path(cfg.paths.output_dir), cfg), job_heartbeat():  # a sweep's trial beats while it runs
        console.print_config_tree(cfg)  # stdout and <run>/config_tree.log (print_config=false: neither)
        return run(cfg)[1]


def cli(argv: list[str] | None = None, prog: str | None = None) -> None:
    """Hydra's command line (``argv``: as after ``python -m mmrep.train``), except: ``--help`` lists the config groups
    without composing them; ``--cfg`` beside ``-m`` prints a sweep job's config; this folder's modules import."""
    sys.argv = sys.argv if argv is None else [__file__, *argv]
    if {"--cfg", "-c"} & set(sys.argv) and {"-m", "--multirun"} & set(sys.argv):
        sys.argv = [a for a in sys.argv if a not in ("-m", "--multirun")]
    if {"--help", "-h"} & set(sys.argv):
        print(console.help_text(CONF_DIR, sys.argv[1:]))
        return
    sys.path[:0] = [] if "" in sys.path or os.getcwd() in sys.path else [os.getcwd()]  # as `python -m` does
    main()


if __name__ == "__main__":
    cli()
