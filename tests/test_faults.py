"""Faults and bad input (issue: reliability): every case ends with one ``mmrep: error:`` line and the right exit
code, leaves nothing half-written, and a resumed run continues the same world, curves and checkpoints."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from conftest import ROOT, TINY

FAST = [a for a in TINY if not a.startswith("trainer.max_steps")] + ["trainer.log_every_n_steps=5"]


def last_line(stderr: str) -> str:
    return stderr.strip().splitlines()[-1] if stderr.strip() else ""


def run_dirs(root):
    return sorted(p for p in (root / "outputs").rglob("*") if p.is_dir() and p.parent.name in ("runs", "multiruns"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 40-step run and its folder (checkpoints, curves, config)."""
    from conftest import run_cli

    out = tmp_path_factory.mktemp("faults") / "base"
    res = run_cli([*FAST, "trainer.max_steps=40", f"hydra.run.dir={out}"])
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def test_a_run_records_its_thread_count_and_checkpoints_carry_its_config(trained):
    from omegaconf import OmegaConf

    assert OmegaConf.load(trained / ".hydra" / "config.yaml").cpu_threads_used >= 1
    checkpoint = torch.load(trained / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["mmrep_config"]["dataset"]["n_cond_samples"] == 2000


def test_resuming_on_other_data_is_refused_naming_the_keys(run_inproc, trained, tmp_path, caplog):
    from mmrep.core.errors import ConfigError

    ckpt = trained / "checkpoints" / "last.ckpt"
    args = [*FAST, "trainer.max_steps=60", f"ckpt_path={ckpt}", "dataset.n_cond_samples=3000"]
    with pytest.raises(ConfigError) as err:
        run_inproc(args, tmp_path / "refused")
    assert str(err.value).startswith(
        f"ckpt_path: {ckpt} was trained with other data/model settings: "
        "dataset.n_cond_samples (checkpoint 2000, now 3000)"
    )
    assert not (tmp_path / "refused" / "checkpoints").exists()  # refused before training
    run_inproc([*args, "ckpt_strict=false"], tmp_path / "resumed")  # on purpose: goes on, with a warning
    assert "different data/model settings (ckpt_strict=false): dataset.n_cond_samples" in caplog.text
    assert torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 60


def test_a_checkpoint_without_its_config_is_checked_against_its_runs_folder(run_inproc, trained, tmp_path):
    """Checkpoints written before they carried the config: the run folder's .hydra/config.yaml (interpolations such
    as dataset.seed: ${seed} resolved) stands in."""
    from mmrep.core.errors import ConfigError

    run = tmp_path / "old"
    shutil.copytree(trained, run)
    ckpt = run / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(ckpt, weights_only=False)
    del checkpoint["mmrep_config"]
    torch.save(checkpoint, ckpt)
    with pytest.raises(ConfigError, match="settings: dataset.n_cond_samples \\(checkpoint 2000, now 3000\\)\\. Resume"):
        run_inproc([*FAST, "trainer.max_steps=60", f"ckpt_path={ckpt}", "dataset.n_cond_samples=3000"], tmp_path / "a")
    run_inproc([*FAST, "trainer.max_steps=60", f"ckpt_path={ckpt}"], tmp_path / "b")  # same settings: resumes


def test_resuming_in_place_appends_the_curves_and_keeps_last_ckpt_the_latest(cli, trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    before = pd.read_csv(run / "csv" / "metrics.csv")
    res = cli([*FAST, "trainer.max_steps=80", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={run}"])
    assert res.returncode == 0, res.stderr[-3000:]
    after = pd.read_csv(run / "csv" / "metrics.csv")
    assert after[after.step <= 40].shape[0] == before.shape[0]  # the first 40 steps' rows are all kept
    assert after.step.max() >= 75 and after.step.is_monotonic_increasing
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 80
    assert not list((run / "checkpoints").glob("last-v*.ckpt"))


def test_sigterm_stops_a_sweep_with_a_non_zero_exit(tmp_path):
    """In a multirun the terminated job ends the sweep (exit 143) instead of the sweep going on, or ending with 0."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mmrep.train",
            "-m",
            "seed=0,1",
            *FAST,
            "trainer.max_steps=100000",
            "+logger.csv.flush_logs_every_n_steps=1",
            f"hydra.sweep.dir={tmp_path}",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not (tmp_path / "0" / "csv" / "metrics.csv").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-3000:]
    assert (tmp_path / "0" / "checkpoints" / "last.ckpt").is_file() and not (tmp_path / "1").exists()


@pytest.mark.parametrize("case", ["missing", "directory", "truncated", "garbage", "other model"])
@pytest.mark.parametrize("fit", [True, False])
def test_a_bad_ckpt_path_is_one_line(run_inproc, trained, tmp_path, case, fit):
    from mmrep.core.errors import ConfigError

    good = trained / "checkpoints" / "last.ckpt"
    path = {"missing": tmp_path / "nope.ckpt", "directory": trained / "checkpoints"}.get(case, tmp_path / "bad.ckpt")
    if case == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif case in ("garbage", "other model"):
        path.write_bytes(os.urandom(4096)) if case == "garbage" else shutil.copy(good, path)
    extra = ["objective.encoding_size=5"] if case == "other model" else []
    expected = {
        "missing": "no such checkpoint file",
        "directory": "is a directory",
        "truncated": "is not a readable checkpoint",
        "garbage": "is not a readable checkpoint",
        "other model": "does not fit this run's objective/encoders",
    }[case]
    with pytest.raises(ConfigError, match=expected) as err:
        run_inproc([*FAST, "trainer.max_steps=40", f"ckpt_path={path}", f"fit={fit}", *extra], tmp_path / "out")
    assert str(err.value).startswith("ckpt_path: ") and "\n" not in str(err.value)


NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["+seeed=3"], "seeed: unknown top-level key (from +seeed=3); did you mean seed?"),
        (
            ["callbacks.model_checkpoint.dirpath=/etc/passwd/ckpts"],
            "cannot write or read /etc/passwd/ckpts: Not a directory",
        ),
        (
            ["hydra.run.dir=/etc/passwd/run"],
            "hydra.run.dir: cannot create the output folder /etc/passwd/run (/etc/passwd is a file",
        ),
    ],
)
def test_bad_input_is_one_line_with_nothing_left_on_disk(cli, tmp_path, overrides, message):
    """The command line's side: exit code 1, one ``mmrep: error:`` line, no traceback, no run folder — for a config
    check (its override named), and an unwritable folder found by Hydra or, while running, by Lightning."""
    res = cli([*FAST, "trainer.max_steps=20", *overrides], env_extra={"MMREP_ROOT": str(tmp_path)})
    assert res.returncode == 1, res.stderr[-3000:]
    assert "Traceback" not in res.stderr and last_line(res.stderr).startswith(f"mmrep: error: {message}"), res.stderr[
        -2000:
    ]
    if "ckpts" in message:  # it failed at its first checkpoint: the curves it logged stay, nothing claims results
        (run,) = run_dirs(tmp_path)
        assert (run / "csv" / "metrics.csv").is_file() and not (run / "results.csv").exists()
    else:
        assert run_dirs(tmp_path) == []  # no half-made run folder


@pytest.mark.parametrize(
    "overrides, env, message",
    [
        (["objective.optimizer.lr=abc"], {}, "objective.optimizer.lr: must be a number, got 'abc'"),
        (["objective.optimizer.lr=-1"], {}, "objective.optimizer: Invalid learning rate"),
        (["trainer.max_steps=-5"], {}, "trainer.max_steps: must be -1 (no limit) or a non-negative integer, got -5"),
        (["+objective.lr=abc"], {}, "objective.lr: not a parameter of MMCL (its parameters: data, encoders,"),
        (
            ["+dataset.batchsize=8"],
            {},
            "dataset.batchsize: not a parameter of NumericDataModule (its parameters: bias,",
        ),
        pytest.param(
            ["trainer=gpu"], {}, "trainer.accelerator: gpu asked for, but CUDA is not available", marks=NO_CUDA
        ),
        (
            ["logger=wandb"],
            {"WANDB_MODE": "online", "WANDB_API_KEY": None, "NETRC": "/nonexistent"},
            "logger.wandb: WANDB_MODE=online but no W&B API key is configured",
        ),
        (
            ["dataset.batch_size=1", "objective.negatives=in_batch"],
            {},
            "dataset.batch_size: objective=mmcl contrasts each pair with the other pairs of its batch; "
            "dataset.batch_size=1",
        ),
    ],
)
def test_bad_settings_fail_before_training_naming_the_key(run_inproc, tmp_path, monkeypatch, overrides, env, message):
    """Each is a ConfigError (one line naming the key; the command line prints it as above) raised before any
    training step: no checkpoint is written."""
    from mmrep.core.errors import ConfigError

    for key, value in env.items():
        monkeypatch.delenv(key, raising=False) if value is None else monkeypatch.setenv(key, value)
    base = [a for a in FAST if not (a.startswith("metric.") and any(o.startswith("metric=") for o in overrides))]
    with pytest.raises(ConfigError) as err:
        run_inproc([*base, "trainer.max_steps=20", *overrides], tmp_path)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
    assert not (tmp_path / "checkpoints").exists()


def test_running_out_of_memory_is_one_line_naming_the_batch_size(run_inproc, tmp_path):
    from omegaconf import OmegaConf

    from mmrep.pipeline.errors import one_line_message

    with pytest.raises(RuntimeError) as err:  # a real failed allocation (the one_line_errors wrapper is the CLI's)
        run_inproc([*FAST, "trainer.max_steps=20", "dataset.batch_size=1000000000"], tmp_path)
    cfg = OmegaConf.create({"dataset": {"batch_size": 1000000000}})
    assert one_line_message(err.value, cfg) == (
        "out of memory (one allocation needed 37.3 GiB): lower dataset.batch_size (now 1000000000) or the model size"
    )
    cuda = RuntimeError("CUDA out of memory. Tried to allocate 2.50 GiB (GPU 0; 79.2 GiB total capacity)")
    assert one_line_message(cuda, cfg).startswith(
        "out of memory (one allocation needed 2.50 GiB): lower dataset.batch_size"
    )
    assert not (tmp_path / "checkpoints").exists()


def test_two_runs_started_together_get_their_own_folders(tmp_path):
    args = [sys.executable, "-m", "mmrep.train", *FAST, "fit=false", "metric.identifiability.probes=[linear]"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "MMREP_ROOT": str(tmp_path), "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [*args, f"seed={s}"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        for s in (0, 1)
    ]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()[-2000:]
    dirs = run_dirs(tmp_path)
    assert len(dirs) == 2  # one per run, even when both started in the same second (the usual case here)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_[0-9a-f]{6}", d.name) for d in dirs), dirs
    from omegaconf import OmegaConf

    assert sorted(OmegaConf.load(d / ".hydra" / "config.yaml").seed for d in dirs) == [0, 1]
    assert all((d / "results.csv").is_file() for d in dirs)


def test_a_run_shorter_than_an_epoch_still_validates(run_inproc, tmp_path):
    results, _ = run_inproc([*FAST, "trainer.max_steps=10", "dataset.steps_per_epoch=20"], tmp_path)
    assert not results[(results.metric == "loss") & (results.split == "val")].empty
