"""hydra-submitit-launcher on a real SLURM cluster (``pytest -m cluster``; the single-node cluster of
``scripts/services.sh``, through the fixtures of tests/cluster.py): a 4-job sweep, 2-rank DDP started by srun equal to
ddp_spawn, and a job requeued mid-run that resumes from its ``last.ckpt`` to the uninterrupted run's exact results.

Each job is tiny (seconds of training); most of a test's time is Python start-up (~5 s per process on 2 cores).
Without slurmdbd ``sacct`` fails: submitit logs "Bypassing sacct error ... status may be inaccurate" at every poll and
relies on the job's result file, so a job that dies without one would leave the sweep waiting: every sweep runs under
a timeout and its jobs are cancelled afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cluster import slurm  # noqa: F401  (fixture)

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[1]

ENV = {"PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}  # sbatch exports the environment to the jobs


def launcher(tasks: int = 1) -> list[str]:
    """hydra/launcher=slurm sized for the local node (CPUs only, 1 GB)."""
    return [
        "hydra/launcher=slurm",
        "hydra.launcher.gpus_per_node=0",
        f"hydra.launcher.tasks_per_node={tasks}",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=1",
        "hydra.launcher.timeout_min=10",
    ]


def small(tiny: list[str], **values) -> list[str]:
    """conftest's tiny run with linear probes only, no config print, 1 CPU thread; ``values`` replace its keys
    (``trainer__max_steps=...`` for trainer.max_steps)."""
    values = {k.replace("__", "."): v for k, v in values.items()}
    values = {
        "metric.identifiability.probes": "[linear]",
        "print_config": "false",
        "cpu_threads": 1,
        "logger": "none",
        **values,
    }
    kept = [a for a in tiny if a.split("=", 1)[0] not in values]
    return [*kept, *(f"{k}={v}" for k, v in values.items())]


def start(args: list[str], log: Path) -> subprocess.Popen:
    """``python -m mmrep.train ARGS`` in the background (this interpreter: the venv's, which submitit's jobs reuse)."""
    out = open(log, "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mmrep.train", *args],
        cwd=ROOT,
        env={**os.environ, **ENV},
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    out.close()
    proc.log = log
    return proc


def finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    """Wait for ``proc``; its output, asserting it succeeded."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    text = proc.log.read_text()
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{text[-4000:]}"
    return text


def job_ids(sweep: Path) -> list[str]:
    """The SLURM job ids of a sweep: submitit's job folders ``<id>`` or ``<array id>_<task>`` (an array's own
    folder ``<array id>`` holds only the sbatch script)."""
    folder = sweep / ".submitit"
    return sorted(p.parent.name for p in folder.glob("*/*_submitted.pkl")) if folder.is_dir() else []


def cancel(sweep: Path) -> None:
    """Cancel whatever the sweep left in the queue (a failed or timed-out test)."""
    ids = {j.split("_")[0] for j in job_ids(sweep)}
    if ids:
        subprocess.run(["scancel", *sorted(ids)], capture_output=True, timeout=30)


def job_logs(sweep: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted((sweep / ".submitit").glob("*/*_log.*")))


def results(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "results.csv")


def test_slurm_sweep_runs_four_jobs(slurm, tiny, tmp_path):  # noqa: F811
    """seed=0,1,2,3 through hydra-submitit-launcher: 4 SLURM jobs (one array), each writing its results.csv."""
    sweep = tmp_path / "sweep"
    proc = start(["-m", *launcher(), "seed=0,1,2,3", f"hydra.sweep.dir={sweep}", *small(tiny)], tmp_path / "sweep.log")
    try:
        finish(proc)
    finally:
        cancel(sweep)
    for k in range(4):
        assert (sweep / str(k) / "results.csv").is_file(), job_logs(sweep)[-4000:]
    ids = job_ids(sweep)
    assert len(ids) == 4 and len({j.split("_")[0] for j in ids}) == 1, ids  # one array of 4 tasks
    logs = job_logs(sweep)
    assert logs.count("Starting with JobEnvironment(job_id=") == 4, logs[-4000:]
    script = next((sweep / ".submitit").glob("*/*_submission.sh")).read_text()
    assert sys.executable in script  # the jobs ran this venv's python
    seeds = [results(sweep / str(k)).value.to_numpy() for k in range(4)]
    assert all(not np.array_equal(seeds[0], s) for s in seeds[1:])  # 4 different runs, not one copied


def test_srun_ddp_equals_ddp_spawn(slurm, tiny, tmp_path):  # noqa: F811
    """One SLURM job of 2 tasks (srun starts the ranks; Lightning's SLURM environment wires gloo DDP) gives the
    results of the same run under ddp_spawn on 2 local processes: the numeric stream draws batch k of rank r from
    (seed, k, r) in both, and a 2-rank gloo all-reduce is order-independent. Measured: identical (max |Δ| = 0)."""
    if slurm.cpus < 2:
        pytest.skip(f"the local SLURM node has {slurm.cpus} CPU: a 2-task job would never start")
    sweep, local = tmp_path / "sweep", tmp_path / "local"
    args = small(tiny)
    srun = start(
        [
            "-m",
            *launcher(tasks=2),
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            f"hydra.sweep.dir={sweep}",
            *args,
        ],
        tmp_path / "srun.log",
    )
    spawn = start(["trainer=ddp_cpu", f"hydra.run.dir={local}", *args], tmp_path / "spawn.log")  # meanwhile
    try:
        finish(spawn)
        finish(srun)
    finally:
        cancel(sweep)
    logs = job_logs(sweep)
    assert "MEMBER: 1/2" in logs and "MEMBER: 2/2" in logs, logs[-4000:]  # two SLURM tasks, one rank each
    a, b = results(sweep / "0"), results(local)
    assert len(a) == len(b) > 0
    pd.testing.assert_frame_equal(a.drop(columns="value"), b.drop(columns="value"))
    np.testing.assert_allclose(a.value, b.value, rtol=0, atol=1e-6)


def _step(metrics: Path) -> int:
    """The last step written to a run's csv/metrics.csv so far (-1: none)."""
    try:
        steps = pd.read_csv(metrics).step
    except (FileNotFoundError, pd.errors.EmptyDataError, AttributeError):
        return -1
    return int(steps.max()) if len(steps) else -1


def test_requeued_job_resumes_from_its_checkpoint(slurm, tiny, tmp_path):  # noqa: F811
    """``scontrol requeue`` mid-run: SLURM sends SIGTERM, mmrep writes last.ckpt and exits 143, the job goes back to
    the queue (released at once with starttime=now) and reruns in its folder, where ``resume: auto`` continues from
    last.ckpt. results.csv and the curves equal those of the same run uninterrupted."""
    sweep, reference = tmp_path / "sweep", tmp_path / "reference"
    # 1000 steps of 100 (a validation + checkpoint each); requeued past step 100, i.e. mid-epoch 1 (~7 ms a step)
    args = small(
        tiny, trainer__max_steps=1000, dataset__steps_per_epoch=100, trainer__log_every_n_steps=10, logger="csv"
    )
    proc = start(["-m", *launcher(), f"hydra.sweep.dir={sweep}", *args], tmp_path / "sweep.log")
    ref = start([f"hydra.run.dir={reference}", *args], tmp_path / "reference.log")  # meanwhile, locally
    try:
        metrics, deadline = sweep / "0" / "csv" / "metrics.csv", time.monotonic() + 240
        while _step(metrics) < 100:
            assert proc.poll() is None and time.monotonic() < deadline, proc.log.read_text()[-4000:]
            time.sleep(0.1)
        (job,) = job_ids(sweep)
        slurm.requeue(job)
        slurm.release(job)
        finish(proc)
        finish(ref)
    finally:
        cancel(sweep)
        if ref.poll() is None:
            ref.kill()
    logs, run_log = job_logs(sweep), (sweep / "0" / "train.log").read_text()
    stopped = [line for line in logs.splitlines() if "terminated by SIGTERM at step" in line]
    assert len(stopped) == 1 and "last.ckpt" in stopped[0], logs[-4000:]
    step = int(stopped[0].split("at step ")[1].split(";")[0])
    assert 100 <= step < 1000, stopped  # interrupted mid-run, after the first checkpoint
    assert f"resuming from {sweep / '0' / 'checkpoints' / 'last.ckpt'}" in run_log, run_log
    assert f"Restored all states from the checkpoint at {sweep / '0' / 'checkpoints' / 'last.ckpt'}" in logs
    assert logs.count("Starting with JobEnvironment(") == 2  # the job ran twice: first run, requeued rerun

    pd.testing.assert_frame_equal(results(sweep / "0"), results(reference))  # identical, not merely close
    curves, expected = pd.read_csv(metrics), pd.read_csv(reference / "csv" / "metrics.csv")
    assert curves.step.is_monotonic_increasing  # non-decreasing: the rerun appended after the checkpoint's step
    for column in curves.columns.drop(["step", "epoch"]):
        logged = curves.dropna(subset=[column]).step
        assert not logged.duplicated().any(), f"{column}: steps logged twice {logged[logged.duplicated()].tolist()}"
    pd.testing.assert_frame_equal(curves, expected)  # no row lost or repeated around the requeue
