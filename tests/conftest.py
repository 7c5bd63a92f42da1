import os
import subprocess
import sys
from pathlib import Path

import pytest

import forkserver

ROOT = Path(__file__).resolve().parents[1]


def _share_the_cores_among_workers() -> None:
    """``pytest -n N`` (the Makefile's default): each worker and the runs it starts get cores ÷ N threads, so N torch
    processes don't oversubscribe the machine. Set before torch and numpy load so their thread pools follow;
    mmrep's ``cpu_threads: auto`` honours ``OMP_NUM_THREADS``. A variable the user set is kept."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 0)
    if workers < 2:
        return
    # mmrep.core.threads.cores() counts the same way, but importing that module loads torch before the variables
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    share = str(max(1, cores // workers))
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(variable, share)
    if "torch" in sys.modules:  # a plugin loaded torch first: its pool is already sized, so resize it
        from mmrep.core.threads import env_cap

        if env_cap():
            sys.modules["torch"].set_num_threads(env_cap())


_share_the_cores_among_workers()

# Small enough for a few seconds per run on 2 CPU cores.
TINY = [
    "trainer.max_steps=40",
    "dataset.steps_per_epoch=20",
    "dataset.batch_size=64",
    "dataset.n_val=128",
    "dataset.n_cond_samples=2000",
    "objective.scheduler.warmup_steps=5",
    "metric.identifiability.n_fit=256",
    "metric.identifiability.n_eval=256",
    "metric.identifiability.mlp_max_iter=30",
    "metric.identifiability.n_jobs=1",
    "callbacks.rich_progress_bar=null",
]


def run_cli(args, cwd=None, env_extra=None, timeout=600, module="mmrep.train"):
    """``python -m <module> <args>``: a CompletedProcess with text stdout/stderr. Forked from this worker's warm
    interpreter when nothing start-up reads changes (tests/forkserver.py), else a fresh interpreter."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env_extra or {})}
    env = {k: v for k, v in env.items() if v is not None}  # None in env_extra unsets a variable
    server = forkserver.SERVER_INSTANCE
    if forkserver.forkable(env) and server.lock.acquire(blocking=False):
        try:
            return server.run(module, args, Path(cwd or ROOT), env, timeout)
        finally:
            server.lock.release()
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd or ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope="session", autouse=True)
def _stop_the_fork_server():
    yield
    forkserver.SERVER_INSTANCE.stop()


@pytest.fixture
def tiny():
    return list(TINY)


def compose_config(overrides=(), output_dir=None):
    """The composed run config, in process (no subprocess, no Hydra run directory)."""
    from hydra import compose, initialize_config_dir

    from mmrep.core.configs import CONF_DIR
    from mmrep.pipeline import resolvers  # noqa: F401  (registers the configs' resolvers)

    extra = [f"paths.output_dir={output_dir}"] if output_dir else ["paths.output_dir=unused"]
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        return compose("train", overrides=[*overrides, *extra])


def run_in_process(overrides, output_dir):
    """``mmrep.train.run`` on a composed config: (results, optimised value); quicker than a CLI subprocess."""
    from mmrep.train import run

    return run(compose_config(overrides, output_dir))


@pytest.fixture
def compose():
    return compose_config


@pytest.fixture
def run_inproc():
    return run_in_process


@pytest.fixture(scope="session")
def external_data(tmp_path_factory):
    """A data directory holding every external dataset's files, as small fixtures in the exact formats."""
    from fixtures import write_all

    root = tmp_path_factory.mktemp("external_data")
    write_all(root)
    return root


def pytest_collection_modifyitems(session, config, items):
    """The slow reproductions start first, spread over the two halves of the collection (pytest-xdist's work
    stealing hands each worker a contiguous share at start): each worker begins with some of them while the fast
    tests fill in, instead of a reproduction of minutes running alone at the end."""
    slow = [item for item in items if item.get_closest_marker("slow") is not None]
    fast = [item for item in items if item.get_closest_marker("slow") is None]
    first, second = slow[0::2], slow[1::2]
    half = max(0, len(items) // 2 - len(first))
    items[:] = [*first, *fast[:half], *second, *fast[half:]]
