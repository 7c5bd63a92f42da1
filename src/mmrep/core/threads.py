"""CPU threads per process: the machine's cores shared among the mmrep processes running on it.

Two torch processes that each use every core slow each other far more than they share it (OpenMP threads spin
waiting for cores the other process holds): on 2 cores, two concurrent 300-step default runs took 30 s each with 2
threads, but 9.5 s with 1 thread (6.5 s solo with 2). So every mmrep process (a run, a DDP rank, a parallel sweep
job) registers itself in a per-user folder, and ``cpu_threads: auto`` gives each ``cores ÷ live mmrep processes``
threads, re-checked every ``every_n_steps`` training steps so a run speeds up again when the others finish.
``OMP_NUM_THREADS``, when set (a cluster task's allocation, a parallel test runner), caps what ``auto`` gives.
"""

from __future__ import annotations

import atexit
import logging
import os
import tempfile
from pathlib import Path

from mmrep.core.errors import ConfigError

log = logging.getLogger(__name__)
REGISTRY = Path(tempfile.gettempdir()) / f"mmrep-{os.getuid()}-processes"


def cores() -> int:
    """CPU cores this process may use (its affinity mask, e.g. a SLURM allocation)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (signal 0 reaches it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def register() -> None:
    """Enter this process in the registry (once; removed at exit)."""
    path = REGISTRY / str(os.getpid())
    if path.exists():
        return
    try:
        REGISTRY.mkdir(parents=True, exist_ok=True)
        path.touch()
        atexit.register(lambda: path.unlink(missing_ok=True))
    except OSError as err:  # a read-only temp dir only costs the sharing
        log.debug("cannot register in %s: %s", REGISTRY, err)


def release() -> None:
    """Leave the registry (a run ended: an idle process, e.g. a test runner between runs, takes no share)."""
    (REGISTRY / str(os.getpid())).unlink(missing_ok=True)


def live_processes() -> int:
    """Registered mmrep processes still running (stale entries of killed processes are removed); at least 1."""
    count = 0
    try:
        entries = list(REGISTRY.iterdir())
    except OSError:
        return 1
    for entry in entries:
        if entry.name.isdigit() and process_alive(int(entry.name)):
            count += 1
        else:
            entry.unlink(missing_ok=True)
    return max(1, count)


def env_cap() -> int | None:
    """The thread count ``OMP_NUM_THREADS`` asks for (None when unset or not a positive integer)."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def budget(setting) -> int:
    """Threads for this process: ``auto`` = cores ÷ live mmrep processes (at least 1, at most ``OMP_NUM_THREADS``
    when that is set), or a positive integer."""
    if setting in (None, "auto"):
        share = max(1, cores() // live_processes())
        cap = env_cap()
        return min(share, cap) if cap else share
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < 1:
        raise ConfigError(f"cpu_threads: 'auto' or a positive number of threads, got {setting!r}")
    return setting


def apply(setting) -> int:
    """Register this process and set torch's intra-op threads from ``setting``; returns the thread count."""
    import torch  # here: the registry needs no torch (a run's config errors answer before it is imported)

    register()
    threads = budget(setting)
    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    return threads
