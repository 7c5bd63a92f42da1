"""A cluster's preemption notice inside a run: checkpoint first, then let the job system requeue the job.

On SLURM a job about to be preempted or to reach its time limit gets a user signal (``sbatch --signal=USR2@90``;
submitit's jobs use ``SIGUSR2``, plain SLURM jobs under Lightning ``SIGUSR1``). submitit's own handler requeues the
job and exits at once, wherever training is: the requeued job would restart from the last epoch's checkpoint, or
from step 0. :func:`install` puts mmrep's handler in front of it:

* while training runs the notice takes the SIGTERM route (:class:`~mmrep.callbacks.bookkeeping.RunBookkeeping`):
  every rank stops between two training batches and ``last.ckpt`` is written there; then :func:`hand_over` calls
  the job system's requeue (submitit's handler on rank 0, or ``scontrol requeue`` for a plain SLURM job);
* before training (set-up) or after it (measuring) the requeue runs at once: the requeued job resumes from the
  folder's ``last.ckpt`` (``resume: auto``), if any, and goes on from there.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable

log = logging.getLogger("mmrep.train")

_previous: dict[int, Callable | int | None] = {}  # the handler ours replaced, per signal (submitit's requeue)
_received: int | None = None  # the notice received, if any
_fitting = False  # True while training runs (the notice then becomes a SIGTERM: a checkpoint between two batches)


def _submitit_signal() -> int | None:
    """submitit's preemption signal when this process is a submitit job, else None."""
    if "SUBMITIT_EXECUTOR" not in os.environ and "SUBMITIT_FOLDER" not in os.environ:
        return None
    try:
        from submitit import JobEnvironment
    except ImportError:
        return None
    return int(JobEnvironment._usr_sig())  # submitit's choice (SUBMITIT_PREEMPT_SIGNAL, default USR2)


def _slurm_batch_job() -> bool:
    """A SLURM batch job (not an interactive allocation, where a requeue has no meaning)."""
    return "SLURM_JOB_ID" in os.environ and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive")


def install() -> int | None:
    """Put mmrep's preemption handler in front of the job system's; returns the signal watched (None: not a
    cluster job, nothing installed)."""
    signum = _submitit_signal()
    if signum is None and _slurm_batch_job():
        signum = int(signal.SIGUSR1)  # Lightning's SLURM requeue signal (sbatch --signal=USR1@90)
    if signum is None:
        return None
    current = signal.getsignal(signum)
    if current is not _notice:
        _previous[signum] = current
        signal.signal(signum, _notice)
    return signum


def _notice(signum, frame) -> None:
    global _received
    _received = signum
    log.warning("received %s (preemption or time limit): checkpointing, then requeueing", signal.Signals(signum).name)
    if _fitting:
        os.kill(os.getpid(), signal.SIGTERM)  # Lightning's SIGTERM route: every rank stops at the next step
    else:
        hand_over()


def fitting(active: bool) -> None:
    """Called by the bookkeeping callback when training starts and ends."""
    global _fitting
    _fitting = active


def received() -> bool:
    """Whether a preemption notice arrived (the SIGTERM that ended training was ours)."""
    return _received is not None


def hand_over() -> None:
    """Requeue the job through the job system and exit (the checkpoint is written by now)."""
    signum = _received
    previous = _previous.get(signum) if signum is not None else None
    if callable(previous):  # submitit: rank 0 dumps the job, requeues it and exits; other ranks return
        previous(signum, None)
    elif signum is not None and os.environ.get("SLURM_PROCID", "0") == "0" and _slurm_batch_job():
        job = os.environ.get("SLURM_ARRAY_JOB_ID")
        job = f"{job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if job else os.environ["SLURM_JOB_ID"]
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
        log.warning(
            "requeued SLURM job %s" if done.returncode == 0 else "requeueing SLURM job %s failed: %s",
            job,
            done.stderr.strip(),
        )
    sys.exit(143)  # a rank that did not requeue (or a requeue that returned) ends like a SIGTERM'd process
