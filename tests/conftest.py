import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

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
    env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env_extra or {})}
    env = {k: v for k, v in env.items() if v is not None}  # None in env_extra unsets a variable
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


@pytest.fixture
def tiny():
    return list(TINY)
