"""How a run fails: one ``mmrep: error: ...`` line for what a user can fix, exit 143 for SIGTERM, and no run folder
left behind by a run that produced nothing."""

from __future__ import annotations

import errno
import logging
import re
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from mmrep.core import preemption
from mmrep.core.errors import ConfigError, MetricsFailed, Terminated

log = logging.getLogger("mmrep.train")


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


OOM_SIZE = re.compile(r"tried to allocate\s+(\d+ bytes|[\d.]+\s*[KMGT]?i?B)", re.IGNORECASE)


def one_line_message(err: BaseException, cfg: DictConfig | None) -> str | None:
    """The one line that explains a failure the user can fix, or None for a bug (shown with its traceback)."""
    if isinstance(err, (ConfigError, FloatingPointError, MetricsFailed)):
        return str(err)
    text = str(err)
    if isinstance(err, MemoryError) or (
        isinstance(err, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower())
    ):
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
        return (
            f"cannot write or read {where}: {err.strerror}; the run directory and paths.data_dir must be "
            "accessible (and writable for outputs)"
        )
    return None


@contextmanager
def one_line_errors(out_dir: Path, cfg: DictConfig | None = None):
    """Bad input (ConfigError), a diverged loss, running out of memory or an unwritable directory end the run with
    one ``mmrep: error: ...`` line (exit 1); any failure leaves no run directory unless the run produced something
    (results, checkpoints, curves). In a multirun the error propagates so the sweeper records the failure. SIGTERM
    ends the run (and a sweep) with exit code 143 after writing a resumable checkpoint."""
    try:
        yield
    except Terminated as err:  # a cluster's notice: the job (or the whole sweep) ends, resumable
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
