"""End-to-end runs through the Hydra CLI into temporary directories."""

import math

import pandas as pd
import pytest
import yaml


def test_tiny_run_writes_config_results_and_checkpoints(cli, tiny, tmp_path):
    out = tmp_path / "run"
    res = cli([*tiny, f"hydra.run.dir={out}"])
    assert res.returncode == 0, res.stderr[-2000:]
    cfg = yaml.safe_load((out / ".hydra" / "config.yaml").read_text())
    assert cfg["dataset"]["_target_"].endswith("NumericDataModule") and cfg["bias"]["theta"] == list(range(8))
    df = pd.read_csv(out / "results.csv")
    assert {"metric", "target", "value", "modality", "probe", "split"} <= set(df.columns)
    r2 = df[df.metric == "r2"]
    targets = {f"s_{i}" for i in range(10)} | {"s_inv", "tilde_s_0", "tilde_s_1", "m_x", "m_t"}
    assert set(r2.target) == targets
    assert len(r2) == len(targets) * 2 * 2  # × modalities × probes
    assert r2.value.between(-5, 1).all()
    assert (df.metric == "loss").sum() == 1
    assert (out / "checkpoints" / "last.ckpt").exists()
    assert (out / "csv" / "metrics.csv").exists()


def test_same_seed_same_results_and_resume(cli, tiny, tmp_path):
    full_a, full_b, half = tmp_path / "a", tmp_path / "b", tmp_path / "half"
    for out in (full_a, full_b):
        assert cli([*tiny, f"hydra.run.dir={out}", "seed=7"]).returncode == 0
    a, b = pd.read_csv(full_a / "results.csv"), pd.read_csv(full_b / "results.csv")
    pd.testing.assert_frame_equal(a, b)
    # stop after the first epoch (20 of 40 steps), then resume from its last checkpoint to the end
    res = cli([*tiny, f"hydra.run.dir={half}", "seed=7", "trainer.max_steps=20", "objective.scheduler=null"])
    assert res.returncode == 0, res.stderr[-2000:]
    ref = tmp_path / "ref"
    assert cli([*tiny, f"hydra.run.dir={ref}", "seed=7", "objective.scheduler=null"]).returncode == 0
    resumed = tmp_path / "resumed"
    res = cli(
        [*tiny, f"hydra.run.dir={resumed}", "seed=7", "objective.scheduler=null", f"ckpt_path={half}/checkpoints/last.ckpt"]
    )
    assert res.returncode == 0, res.stderr[-2000:]
    pd.testing.assert_frame_equal(pd.read_csv(ref / "results.csv"), pd.read_csv(resumed / "results.csv"))
    assert not pd.read_csv(half / "results.csv").equals(pd.read_csv(ref / "results.csv"))


@pytest.mark.parametrize(
    "override, key",
    [
        ("dataset=nosuchdata", "dataset"),
        ("bias.theta=[]", "bias.theta"),
        ("bias.theta=[0,1,12]", "bias.theta"),
        ("bias.beta=[9]", "bias.beta"),
        ("dataset.batch_size=-8", "dataset.batch_size"),
        ("objective.similarity=manhattan", "objective.similarity"),
    ],
)
def test_bad_input_one_line_error_and_nothing_written(cli, tiny, tmp_path, override, key):
    out = tmp_path / "run"
    res = cli([*tiny, f"hydra.run.dir={out}", override])
    assert res.returncode != 0
    err_lines = [l for l in res.stderr.splitlines() if key in l]
    assert err_lines, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    assert not (out / "results.csv").exists()
    assert not out.exists() or not any(p.name not in (".hydra",) and p.suffix != ".log" for p in out.iterdir())


def test_nonfinite_loss_stops_with_step(cli, tiny, tmp_path):
    out = tmp_path / "run"
    res = cli([*tiny, f"hydra.run.dir={out}", "objective.optimizer.lr=1e30", "objective.scheduler=null", "trainer.gradient_clip_val=null"])
    assert res.returncode != 0
    line = [l for l in res.stderr.splitlines() if "non-finite training loss" in l]
    assert line and "at step" in line[0], res.stderr[-2000:]
    assert not (out / "results.csv").exists()


def test_composes_in_batch_cosine_and_wandb_offline(cli, tiny, tmp_path):
    out = tmp_path / "run"
    res = cli(
        [*tiny, f"hydra.run.dir={out}", "objective.negatives=in_batch", "objective.similarity=cosine",
         "objective.temperature=0.1", "bias=perturbation", "logger=wandb"],
        env_extra={"WANDB_MODE": None, "WANDB_API_KEY": None, "HOME": str(tmp_path), "WANDB_DIR": str(out)},
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert list(out.rglob("offline-run-*"))
    df = pd.read_csv(out / "results.csv")
    assert "tilde_s_1" in set(df.target) and not math.isnan(df.value.iloc[0])
