"""``resume: auto``: a run started again in its folder (a SLURM requeue, a preempted submitit job, a sweep job run
again) continues from the folder's ``last.ckpt`` and ends as an uninterrupted run would."""

import os
import re
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import pytorch_lightning as pl
import torch

from conftest import ROOT, TINY

# one thread in every run: results at one seed are bit-identical only at the same thread count (README)
ARGS = [a for a in TINY if not a.startswith("trainer.max_steps")] + [
    "trainer.log_every_n_steps=5",
    "cpu_threads=1",
    "+logger.csv.flush_logs_every_n_steps=1",
]
STEPS = 160


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The folder of the run the interrupted ones must end as: STEPS steps in one go."""
    from conftest import run_cli

    run = tmp_path_factory.mktemp("resume") / "whole"
    res = run_cli([*ARGS, f"trainer.max_steps={STEPS}", f"hydra.run.dir={run}"])
    assert res.returncode == 0, res.stderr[-3000:]
    return run


def _start(run, *extra):
    return subprocess.Popen(
        [sys.executable, "-m", "mmrep.train", *ARGS, *extra, f"hydra.run.dir={run}"],
        cwd=ROOT,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_run_killed_mid_training_and_started_again_in_its_folder_ends_as_an_uninterrupted_run(
    cli, tmp_path, uninterrupted
):
    run = tmp_path / "run"
    proc = _start(run, f"trainer.max_steps={STEPS}")
    metrics, deadline = run / "csv" / "metrics.csv", time.time() + 120
    while proc.poll() is None and time.time() < deadline:  # past the first epoch (20 steps), before the end
        if metrics.exists() and (pd.read_csv(metrics).step.max() if metrics.stat().st_size > 100 else 0) >= 45:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-3000:]
    last = run / "checkpoints" / "last.ckpt"
    stopped_at = torch.load(last, weights_only=False)["global_step"]
    assert 0 < stopped_at < STEPS and stopped_at % 20 != 0  # mid-epoch: the SIGTERM checkpoint, not an epoch's
    assert stderr.strip().splitlines()[-1] == (
        f"mmrep: error: terminated by SIGTERM at step {stopped_at}; resume with ckpt_path={last}"
    )

    again = cli([*ARGS, f"trainer.max_steps={STEPS}", f"hydra.run.dir={run}"])  # the same command: no ckpt_path
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming from {run / 'checkpoints' / 'last.ckpt'}" in again.stdout + again.stderr
    pd.testing.assert_frame_equal(pd.read_csv(run / "results.csv"), pd.read_csv(uninterrupted / "results.csv"))
    curve = pd.read_csv(metrics)
    assert curve.step.is_monotonic_increasing and curve.step.max() >= STEPS - 5
    # the same curves, row for row: the rows after the checkpoint's step were dropped and logged again once
    pd.testing.assert_frame_equal(curve, pd.read_csv(uninterrupted / "csv" / "metrics.csv"))


def test_a_folder_holding_another_runs_checkpoint_is_one_line_and_resume_never_starts_over(run_inproc, tmp_path):
    from mmrep.core.errors import ConfigError

    run = tmp_path / "run"
    run_inproc([*ARGS, "trainer.max_steps=20"], run)
    last = run / "checkpoints" / "last.ckpt"
    with pytest.raises(ConfigError) as err:
        run_inproc([*ARGS, "trainer.max_steps=20", "dataset.n_cond_samples=3000"], run)
    assert str(err.value).startswith(
        f"resume: the run's folder holds {last}, which this run cannot continue (ckpt_path: "
    ), err.value
    assert "dataset.n_cond_samples (checkpoint 2000, now 3000)" in str(err.value) and str(err.value).endswith(
        "start over with resume=never or in another folder (hydra.run.dir=…)"
    )
    # settings a resume may change on purpose (the optimiser) still mark another run here, e.g. another sweep trial
    with pytest.raises(
        ConfigError,
        match=r"written by a run with other settings: objective\.optimizer\.lr "
        r"\(checkpoint 0\.003, now 0\.01\)\); start over with resume=never",
    ):
        run_inproc([*ARGS, "trainer.max_steps=20", "objective.optimizer.lr=0.01"], run)
    run_inproc([*ARGS, "trainer.max_steps=20", "dataset.n_cond_samples=3000", "resume=never"], run)  # starts over
    assert torch.load(last, weights_only=False)["mmrep_config"]["dataset"]["n_cond_samples"] == 3000
    with pytest.raises(ConfigError, match=r"^resume: one of \['auto', 'never'\], got 'sometimes'$"):
        run_inproc([*ARGS, "resume=sometimes"], tmp_path / "bad")


@pytest.mark.parametrize("mode", ["never", "auto"])
def test_resume_is_a_documented_top_level_key(compose, mode):
    assert compose([f"resume={mode}"]).resume == mode
    assert compose([]).resume == "auto"


def test_a_preempted_submitit_job_checkpoints_is_requeued_and_ends_as_an_uninterrupted_run(tmp_path, uninterrupted):
    """hydra/launcher=submitit_local runs the job under submitit's own signal handling and requeue (the SLURM
    executor's, with a local controller). SIGUSR2 mid-training — submitit's preemption signal — must checkpoint at
    that step, then requeue; the requeued job resumes (resume=auto) and writes the uninterrupted run's results."""
    sweep = tmp_path / "sweep"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mmrep.train",
            "-m",
            "hydra/launcher=submitit_local",
            *ARGS,
            f"trainer.max_steps={STEPS}",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics, deadline = sweep / "0" / "csv" / "metrics.csv", time.time() + 180
    while proc.poll() is None and time.time() < deadline:
        if metrics.exists() and (pd.read_csv(metrics).step.max() if metrics.stat().st_size > 100 else 0) >= 45:
            break
        time.sleep(0.1)
    task = subprocess.run(["pgrep", "-f", f"submitit.core._submit {sweep}"], capture_output=True, text=True)
    pids = task.stdout.split()
    assert len(pids) == 1, (task, proc.poll())
    os.kill(int(pids[0]), signal.SIGUSR2)
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stderr[-3000:]
    logs = "".join(p.read_text() for p in (sweep / ".submitit").rglob("*.err")) + "".join(
        p.read_text() for p in (sweep / ".submitit").rglob("*.out")
    )
    assert "received SIGUSR2 (preemption or time limit): checkpointing, then requeueing" in logs, logs[-3000:]
    assert "this job is preempted" in logs and "resuming from" in logs, logs[-3000:]
    step = int(re.search(r"preempted at step (\d+), checkpoint \S+last\.ckpt", logs).group(1))
    assert step >= 45  # written when the signal came (after step 45), by mmrep's handler before submitit's requeue
    pd.testing.assert_frame_equal(pd.read_csv(sweep / "0" / "results.csv"), pd.read_csv(uninterrupted / "results.csv"))
    curve = pd.read_csv(metrics)
    assert curve.step.is_monotonic_increasing
    pd.testing.assert_frame_equal(curve, pd.read_csv(uninterrupted / "csv" / "metrics.csv"))


class SigtermAtEpochEnd(pl.Callback):
    """Sends this process SIGTERM in epoch ``$MMREP_TEST_SIGTERM_EPOCH`` (no variable: never) at the hook named by
    ``$MMREP_TEST_SIGTERM_HOOK``: the end of its first validation batch, or the end of the training epoch."""

    def _maybe_kill(self, trainer, hook: str) -> None:
        if (
            os.environ.get("MMREP_TEST_SIGTERM_EPOCH") == str(trainer.current_epoch)
            and not trainer.sanity_checking
            and os.environ.get("MMREP_TEST_SIGTERM_HOOK") == hook
        ):
            os.kill(os.getpid(), signal.SIGTERM)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx == 0:
            self._maybe_kill(trainer, "validation")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._maybe_kill(trainer, "epoch_end")


@pytest.mark.parametrize(
    ("hook", "limit"),
    [
        ("validation", "trainer.max_steps=80"),
        ("epoch_end", "trainer.max_steps=80"),
        ("validation", "trainer.max_epochs=4"),
    ],
)
def test_a_sigterm_at_an_epochs_end_resumes_without_losing_a_validation_or_an_epoch(
    run_inproc, tmp_path, monkeypatch, hook, limit
):
    """SIGTERM during the validation at an epoch's end or right after the epoch, in a step- or epoch-limited run:
    Lightning would stop there, and resumed from that moment it skipped the rest of the validation (a val/loss row
    lost), counted an empty extra epoch and came back one learning-rate step behind. mmrep stops after the next
    epoch's first step instead, and the resumed run ends with the uninterrupted run's curves, step and results."""
    from mmrep.core.errors import Terminated

    args = [*ARGS, "trainer.max_steps=-1", limit, "+callbacks.sigterm._target_=test_resume.SigtermAtEpochEnd"]
    run_inproc(args, tmp_path / "whole")
    monkeypatch.setenv("MMREP_TEST_SIGTERM_EPOCH", "1")
    monkeypatch.setenv("MMREP_TEST_SIGTERM_HOOK", hook)
    with pytest.raises(Terminated, match="terminated by SIGTERM at step 41"):  # after the next epoch's first step
        run_inproc(args, tmp_path / "run")
    monkeypatch.delenv("MMREP_TEST_SIGTERM_EPOCH")
    run_inproc(args, tmp_path / "run")  # resume=auto
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 80
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "run" / "csv" / "metrics.csv"), pd.read_csv(tmp_path / "whole" / "csv" / "metrics.csv")
    )
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "run" / "results.csv"), pd.read_csv(tmp_path / "whole" / "results.csv")
    )
