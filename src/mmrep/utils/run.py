"""The pieces of one run that ``mmrep.train`` composes: instantiate, build, load, measure, report, clean up."""

from __future__ import annotations

import errno
import inspect
import logging
import os
import re
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate as _hydra_instantiate
from hydra_plugins.mmrep_optuna_sweeper.resumable import TRIAL_ENV
from omegaconf import DictConfig, OmegaConf, open_dict
from lightning_fabric.utilities.rank_zero import rank_zero_only
from pytorch_lightning.utilities.exceptions import SIGTERMException

from mmrep.data.contract import MultimodalDataModule
from mmrep.errors import ConfigError
from mmrep.utils import checkpoints, preemption
from mmrep.utils.results import select_value, tidy
from mmrep.utils.threads import ThreadBudget

log = logging.getLogger("mmrep.train")


UNEXPECTED_ARGUMENT = re.compile(r"unexpected keyword argument '(\w+)'")


def unknown_key_error(err: TypeError, key: str, target) -> ConfigError | None:
    """``<key>.<arg>: not a parameter of <target>`` for a TypeError about an unexpected keyword (a typo'd or
    ``+``-added key), else None."""
    match = UNEXPECTED_ARGUMENT.search(str(err))
    if match is None:
        return None
    if isinstance(target, str):
        from hydra._internal.utils import _locate  # Hydra's own lookup of a _target_ path

        target = _locate(target)
    name = getattr(target, "__name__", str(target).rsplit(".", 1)[-1])
    try:
        params = [p for p in inspect.signature(target).parameters if p not in ("self", "args", "kwargs")]
        known = f" (its parameters: {', '.join(params)})"
    except (TypeError, ValueError):
        known = ""
    return ConfigError(f"{key}.{match.group(1)}: not a parameter of {name}{known}")


def instantiate(config, *args, **kwargs):
    """``hydra.utils.instantiate`` that surfaces our ConfigError (Hydra wraps it) with its one-line message, and
    turns an unknown key of the node (``+dataset.batchsize=8``) into a ConfigError naming it."""
    try:
        return _hydra_instantiate(config, *args, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        while cause is not None and not isinstance(cause, ConfigError):
            if isinstance(cause, TypeError) and OmegaConf.is_config(config):
                typo = unknown_key_error(cause, config._get_full_key(None), config.get("_target_"))
                if typo is not None:
                    raise typo from None
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise


def instantiate_group(section: DictConfig | None) -> dict[str, object]:
    """``{name: object}`` for each entry of a ``name: {_target_: ...}`` section (metric, callbacks, logger)."""
    return {name: instantiate(c, _convert_="all") for name, c in (section or {}).items() if c is not None and "_target_" in c}


def make_callbacks(cfg: DictConfig, loggers: list) -> list:
    """The ``callbacks`` group (none without training); a learning-rate monitor is left out when nothing logs."""
    if not cfg.fit:
        return []
    from pytorch_lightning.callbacks import LearningRateMonitor

    callbacks = list(instantiate_group(cfg.get("callbacks")).values())
    callbacks.append(ThreadBudget(cfg.get("cpu_threads", "auto")))
    if TRIAL_ENV in os.environ:  # a trial of an mmrep_optuna sweep (optuna is imported only then)
        from mmrep.callbacks import optuna_pruning

        callbacks.append(optuna_pruning.from_sweep())
    callbacks.append(checkpoints.RunBookkeeping(cfg))
    return [c for c in callbacks if c is not None and (loggers or not isinstance(c, LearningRateMonitor))]


def fit(trainer, model, datamodule, cfg: DictConfig, callbacks: list) -> None:
    """``trainer.fit`` (resuming ``ckpt_path``); SIGTERM ends it with :class:`checkpoints.Terminated` after the
    bookkeeping callback wrote ``last.ckpt``, and a pruned Optuna trial with ``optuna.TrialPruned``."""
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    except SIGTERMException:
        terminated = next((c.terminated for c in callbacks if getattr(c, "terminated", None)), None)
        raise terminated or checkpoints.Terminated(trainer.global_step, None) from None
    raise_if_pruned(callbacks)


def raise_if_pruned(callbacks: list) -> None:
    """A pruned Optuna trial ends its job with ``optuna.TrialPruned`` (the sweeper records it PRUNED), unmeasured."""
    for callback in callbacks:
        if getattr(callback, "pruned_at", None) is not None:
            import optuna

            raise optuna.TrialPruned(f"pruned at step {callback.pruned_at} on {callback.monitor}")


def build(cfg: DictConfig):
    """Instantiate bias, datamodule and objective from ``cfg`` (no training). Raises ConfigError on bad input.

    The objective receives the datamodule's whole ``spec`` and the ``encoders`` map (one factory per modality)."""
    bias = instantiate(cfg.bias, _convert_="all") if cfg.get("bias") else None
    datamodule = instantiate(cfg.dataset, bias=bias, _convert_="all")
    if not isinstance(datamodule, MultimodalDataModule):
        raise ConfigError(f"dataset: {type(datamodule).__name__} does not follow the datamodule contract "
                          "(a `spec: DataSpec` and `heldout(purpose, n)`; see README, Contracts)")
    encoders = instantiate(cfg.get("encoders") or {}, _convert_="all")
    objective = instantiate(cfg.objective, _partial_=True, _convert_="all")  # the spec must reach it as is
    try:
        model = objective(data=datamodule.spec, encoders=encoders)
    except TypeError as err:
        raise unknown_key_error(err, "objective", objective.func) or err from None
    compile_encoders(model, cfg.get("compile_encoders"))
    return datamodule, model


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


def compile_encoders(model, mode: str | None) -> None:
    """``torch.compile`` each encoder in place (its state-dict keys and checkpoints unchanged); ``None``: eager."""
    if mode is None:
        return
    if mode not in COMPILE_MODES:
        raise ConfigError(f"compile_encoders: null or one of {list(COMPILE_MODES)}, got {mode!r}")
    for encoder in getattr(model, "encoders", {}).values():
        encoder.compile(mode=mode)


def check_metrics(metrics: dict, model, datamodule) -> None:
    """Each metric's ``check(model, datamodule)``: a metric that cannot work on this run fails before training."""
    for metric in metrics.values():
        if hasattr(metric, "check"):
            metric.check(model, datamodule)


def check_objective(model, datamodule, trainer) -> None:
    """The objective's own data checks (e.g. MMCL's batch of at least two pairs), before training; then the batch
    a step trains on is stated (``dataset.batch_size`` is per device)."""
    if hasattr(model, "check_data"):
        model.check_data(datamodule, trainer.world_size)
    batch = getattr(datamodule, "batch_size", None)
    if batch is None or not trainer.is_global_zero:  # ranks started by srun share the run's log
        return
    world = trainer.world_size
    if world == 1:
        log.info("batch: %d samples per step (dataset.batch_size, per device)", batch)
        return
    gather = getattr(model, "hparams", {}).get("gather")
    contrast = {"global": "; the contrastive loss takes its negatives from the global batch (objective.gather=global)",
                "local": "; the contrastive loss takes its negatives from each device's batch only "
                         "(objective.gather=local)"}.get(gather, "")
    log.info("batch: dataset.batch_size is per device: %d devices × %d samples = %d samples per step%s",
             world, batch, world * batch, contrast)


RESUME_MODES = ("auto", "never")


def auto_resume(cfg: DictConfig) -> Path | None:
    """``resume: auto`` and no ``ckpt_path``: a run whose folder already holds ``checkpoints/last.ckpt`` (a SLURM
    requeue, a preempted submitit job, a sweep job started again) continues from it; returns that path (else None).
    The checkpoint then goes through the same checks as an explicit ``ckpt_path``."""
    mode = cfg.get("resume", "auto")
    if mode is False or mode is None:
        mode = "never"
    if mode not in RESUME_MODES:
        raise ConfigError(f"resume: one of {list(RESUME_MODES)}, got {mode!r}")
    if mode == "never" or not cfg.fit or cfg.get("ckpt_path"):
        return None
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return None
    with open_dict(cfg):
        cfg.ckpt_path = str(last)
    log.info("resuming from %s: the run's folder holds a checkpoint (resume=auto; resume=never starts over)", last)
    return last


def check_resume(cfg: DictConfig, model, found: Path | None = None) -> None:
    """``fit: true`` with ``ckpt_path``: the checkpoint is readable, fits the model, and was trained on the same
    data and model settings — checked before any training starts. ``found``: the checkpoint ``resume: auto`` found
    in the run's folder (the error then says how to start over instead)."""
    if not (cfg.fit and cfg.get("ckpt_path")):
        return
    try:
        checkpoint = checkpoints.read_checkpoint(cfg.ckpt_path)
        checkpoints.check_fits(model, checkpoint, cfg.ckpt_path)
        checkpoints.check_resume(cfg, checkpoint, cfg.ckpt_path)
        if found is not None:
            checkpoints.check_same_run(cfg, checkpoint, cfg.ckpt_path)
    except ConfigError as err:
        if found is None:
            raise
        raise ConfigError(f"resume: the run's folder holds {found}, which this run cannot continue ({err}); start "
                          "over with resume=never or in another folder (hydra.run.dir=…)") from None


def load_for_evaluation(model, datamodule, ckpt_path: str | None, device) -> None:
    """``fit: false``: load the weights of ``ckpt_path`` (if any) into ``model``, move it to ``device`` and set up
    the data, so metrics measure the encoders as built or as trained in an earlier run."""
    if ckpt_path:
        checkpoint = checkpoints.read_checkpoint(ckpt_path)
        checkpoints.check_fits(model, checkpoint, ckpt_path)
        model.load_state_dict(checkpoint["state_dict"])
        model.on_load_checkpoint(checkpoint)
        model.prepare_for_evaluation()
    model.to(device)
    datamodule.prepare_data()
    datamodule.setup("validate")


class MetricsFailed(RuntimeError):
    """Some metrics failed after training; the others' rows and the checkpoints were kept (the message says where)."""


def measure(metrics: dict, model, datamodule, trainer) -> tuple[pd.DataFrame, list, dict[str, BaseException]]:
    """Every metric's rows (+ the validation-loss row, named by the objective), each metric's summary table and the
    metrics that failed (``{name: error}``): one failing metric does not cost the others' rows."""
    frames, summaries, failed = [], [], {}
    for name, metric in metrics.items():
        try:
            rows = metric(model, datamodule)
        except Exception as err:  # noqa: BLE001 - reported with its name once the other rows are written
            if one_line_message(err, None) is None:  # a bug: keep its traceback in the log
                log.error("metric.%s failed", name, exc_info=err)
            failed[name] = err
            continue
        frames.append(rows)
        if hasattr(metric, "summary") and not rows.empty:
            summaries.append(metric.summary(rows))
    val_loss = trainer.callback_metrics.get("val/loss")
    if val_loss is not None:
        frames.append(pd.DataFrame([{"metric": "loss", "target": getattr(model, "loss_name", "loss"), "split": "val",
                                     "value": float(val_loss)}]))
    return tidy(frames), [s for s in summaries if s is not None], failed


def metrics_failed(failed: dict[str, BaseException], results_path: Path, cfg: DictConfig) -> MetricsFailed:
    """One line naming each failed metric and its error, where the rest went and how to measure again."""
    errors = "; ".join(f"metric.{name}: {one_line_message(err, None) or f'{type(err).__name__}: {err}'}"
                       for name, err in failed.items())
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


def log_config(loggers: list, config: DictConfig) -> None:
    """The resolved run config as every logger's hyper-parameters."""
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(config, resolve=True))


def result_key(row: pd.Series) -> str:
    """A row's summary name from its identifying columns, e.g. ``r2/mlp/x/s_inv`` or ``mutual_knn/x0|x1/max``."""
    parts = [row.get(c) for c in ("metric", "probe", "modality", "target", "aggregate", "split")]
    return "/".join(str(p) for p in parts if p is not None and not (isinstance(p, float) and pd.isna(p)))


def log_results(loggers: list, results: pd.DataFrame) -> None:
    """The final results to the loggers: W&B gets a ``results`` table and one summary value per row (the CSV
    logger's table is ``results.csv`` itself); TensorBoard gets each row as a scalar at the last step."""
    for logger in loggers:
        if hasattr(logger, "log_table"):
            logger.log_table(key="results", dataframe=results.astype(object).where(results.notna(), None))
            summary = logger.experiment.summary
            for _, row in results.iterrows():
                summary[f"results/{result_key(row)}"] = float(row["value"])
        elif type(logger).__name__ == "TensorBoardLogger":
            logger.log_metrics({f"results/{result_key(row)}": float(row["value"]) for _, row in results.iterrows()})


def finish_loggers() -> None:
    """End the W&B run, so the next job of a multirun starts its own (W&B would reuse an unfinished run)."""
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()


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


BOOKKEEPING = (".hydra", "wandb")  # folders a run writes before it has produced anything


def cleanup_failed_start(out_dir: Path) -> None:
    """Remove the directory of a run that failed before producing anything: no results, no checkpoints, no logged
    metrics — only Hydra's and the loggers' bookkeeping (config, logs, hyper-parameters)."""
    if not out_dir.is_dir():
        return
    for path in out_dir.rglob("*"):
        if not path.is_file() or path.suffix == ".log" or path.name == "hparams.yaml":
            continue
        if path.relative_to(out_dir).parts[0] not in BOOKKEEPING:
            return
    shutil.rmtree(out_dir, ignore_errors=True)


def task_overrides() -> list[str]:
    """The command line's overrides of this run (empty outside Hydra)."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def record_threads(cfg: DictConfig, count: int) -> None:
    """``cpu_threads_used`` in the run's config (the checkpoints', the loggers' and ``.hydra/config.yaml``)."""
    with open_dict(cfg):
        cfg.cpu_threads_used = int(count)
    saved = Path(cfg.paths.output_dir) / ".hydra" / "config.yaml"
    if HydraConfig.initialized() and saved.is_file() and rank_zero_only.rank == 0:  # DDP ranks share the folder
        OmegaConf.save(cfg, saved)


OOM_SIZE = re.compile(r"tried to allocate\s+(\d+ bytes|[\d.]+\s*[KMGT]?i?B)", re.IGNORECASE)


def one_line_message(err: BaseException, cfg: DictConfig | None) -> str | None:
    """The one line that explains a failure the user can fix, or None for a bug (shown with its traceback)."""
    if isinstance(err, (ConfigError, FloatingPointError, MetricsFailed)):
        return str(err)
    text = str(err)
    if isinstance(err, MemoryError) or (isinstance(err, RuntimeError) and (
            "can't allocate memory" in text or "out of memory" in text.lower())):
        size = OOM_SIZE.search(text)
        needed = ""
        if size:
            amount = size.group(1)
            if amount.endswith(" bytes"):
                amount = f"{int(amount.split()[0]) / 2**30:.1f} GiB"
            needed = f" (one allocation needed {amount})"
        batch = OmegaConf.select(cfg, "dataset.batch_size", default=None) if cfg is not None else None
        lower = f"lower dataset.batch_size (now {batch})" if batch is not None else "lower the batch size"
        return f"out of memory{needed}: {lower} or the model size"
    if isinstance(err, OSError) and err.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.ENOTDIR):
        where = err.filename or "a file"
        return (f"cannot write or read {where}: {err.strerror}; the run directory and paths.data_dir must be "
                "accessible (and writable for outputs)")
    return None


@contextmanager
def one_line_errors(out_dir: Path, cfg: DictConfig | None = None):
    """Bad input (ConfigError), a diverged loss, running out of memory or an unwritable directory end the run with
    one ``mmrep: error: ...`` line (exit 1); any failure leaves no run directory unless the run produced something
    (results, checkpoints, curves). In a multirun the error propagates so the sweeper records the failure. SIGTERM
    ends the run (and a sweep) with exit code 143 after writing a resumable checkpoint."""
    try:
        yield
    except checkpoints.Terminated as err:  # a cluster's notice: the job (or the whole sweep) ends, resumable
        if preemption.received():  # checkpointed: now the job system requeues the job (it resumes: resume=auto)
            log.warning("preempted at step %d, checkpoint %s; handing over to the job system", err.step, err.path)
            preemption.hand_over()
        print(f"mmrep: error: {err}", file=sys.stderr)
        sys.exit(143)  # 128 + SIGTERM, as a shell reports a terminated process
    except Exception as err:
        cleanup_failed_start(out_dir)
        message = one_line_message(err, cfg)
        if message is None:
            raise
        print(f"mmrep: error: {message}", file=sys.stderr)
        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            raise
        sys.exit(1)
