"""End-to-end runs through the Hydra CLI into temporary directories."""

import math

import pandas as pd
import pytest
import torch
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


def test_same_seed_same_results_and_resume(run_inproc, tiny, tmp_path):
    full_a, _ = run_inproc([*tiny, "seed=7"], tmp_path / "a")
    full_b, _ = run_inproc([*tiny, "seed=7"], tmp_path / "b")
    pd.testing.assert_frame_equal(full_a, full_b)
    # stop after the first epoch (20 of 40 steps), then resume from its last checkpoint to the end
    constant = [*tiny, "seed=7", "objective.scheduler=null"]
    half, _ = run_inproc([*constant, "trainer.max_steps=20"], tmp_path / "half")
    ref, _ = run_inproc(constant, tmp_path / "ref")
    resumed, _ = run_inproc(
        [*constant, f"ckpt_path={tmp_path / 'half' / 'checkpoints' / 'last.ckpt'}"], tmp_path / "resumed"
    )
    pd.testing.assert_frame_equal(ref, resumed)
    assert not half.equals(ref)


def test_bad_input_one_line_error_and_nothing_written(cli, tiny, tmp_path):
    """Through the CLI once: one line naming the key, exit 1, no traceback, no run directory left behind."""
    out = tmp_path / "run"
    res = cli([*tiny, f"hydra.run.dir={out}", "bias.theta=[0,1,12]"])
    assert res.returncode == 1
    assert [l for l in res.stderr.splitlines() if l.startswith("mmrep: error: bias.theta")], res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    "override, key",
    [
        ("bias.theta=[]", "bias.theta"),
        ("bias.beta=[9]", "bias.beta"),
        ("dataset.batch_size=-8", "dataset.batch_size"),
        ("objective.similarity=manhattan", "objective.similarity"),
        ("objective.pair=[x,z]", "objective.pair"),
        ("encoders.x.hidden=[0]", "encoders.x.hidden"),
        ("+encoders.z.hidden=[4]", "encoders.z"),
        ("dataset=rus", "bias"),  # with bias=selection: RUS data has no latents to select
        ("objective=unimodal", "objective=unimodal"),  # numeric data has no supervised task
    ],
)
def test_bad_input_names_the_key(compose, tmp_path, override, key):
    from mmrep.core.errors import ConfigError
    from mmrep.pipeline.build import build

    overrides = [override, "bias=selection"] if override == "dataset=rus" else [override]
    with pytest.raises(ConfigError, match=f"^{key}"):
        build(compose(overrides, output_dir=tmp_path))


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["metric=task"], "metric.task"),  # numeric data have no task
        (["dataset=rus", "metric=accuracy"], "metric.accuracy"),  # MMCL has no prediction heads
        (["dataset=rus", "metric=identifiability"], "metric=identifiability"),
        (["dataset=rus", "metric=downstream"], "metric=downstream"),
        (["metric=alignment", "metric.alignment.pairs=[[x,x0]]"], "metric.alignment.pairs"),
    ],
)
def test_metrics_that_cannot_work_fail_before_training(compose, tmp_path, overrides, key):
    from mmrep.core.errors import ConfigError
    from mmrep.pipeline.build import build, instantiate_group
    from mmrep.pipeline.checks import check_metrics

    cfg = compose(overrides, output_dir=tmp_path)
    datamodule, model = build(cfg)
    with pytest.raises(ConfigError, match=f"^{key}"):
        check_metrics(instantiate_group(cfg.metric), model, datamodule)


def test_unknown_option_is_a_hydra_error(cli, tmp_path):
    res = cli(["dataset=nosuchdata", f"hydra.run.dir={tmp_path / 'run'}"])
    assert res.returncode != 0 and "dataset" in res.stderr and not (tmp_path / "run" / "results.csv").exists()


def test_nonfinite_loss_stops_with_step(cli, tiny, tmp_path):
    out = tmp_path / "run"
    res = cli(
        [
            *tiny,
            f"hydra.run.dir={out}",
            "objective.optimizer.lr=1e30",
            "objective.scheduler=null",
            "trainer.gradient_clip_val=null",
        ]
    )
    assert res.returncode != 0
    line = [l for l in res.stderr.splitlines() if "non-finite training loss" in l]
    assert line and "at step" in line[0], res.stderr[-2000:]
    assert not (out / "results.csv").exists()


def test_composes_in_batch_cosine_and_wandb_offline_one_run_per_job(cli, tiny, tmp_path):
    sweep = tmp_path / "sweep"
    res = cli(
        [
            "-m",
            "seed=0,1",
            *tiny,
            f"hydra.sweep.dir={sweep}",
            "objective.negatives=in_batch",
            "objective.similarity=cosine",
            "objective.temperature=0.1",
            "bias=perturbation",
            "logger=wandb",
        ],
        env_extra={"WANDB_MODE": None, "WANDB_API_KEY": None, "HOME": str(tmp_path), "WANDB_DIR": None},
    )
    assert res.returncode == 0, res.stderr[-3000:]
    runs = sorted(sweep.rglob("offline-run-*"))
    assert len(runs) == 2 and {r.parents[1].name for r in runs} == {"0", "1"}  # each job its own W&B run
    for job in ("0", "1"):
        df = pd.read_csv(sweep / job / "results.csv")
        assert "tilde_s_1" in set(df.target) and not math.isnan(df.value.iloc[0])


def test_a_value_meant_for_another_encoder_is_a_config_error(compose, tmp_path):
    """paper_scale=numeric sets encoders.x.hidden (an MLP value); swapping x's encoder keeps it: one clear line."""
    from mmrep.core.errors import ConfigError
    from mmrep.pipeline.build import build

    cfg = compose(["paper_scale=numeric", "encoder@encoders.x=transformer"], output_dir=tmp_path)
    with pytest.raises(ConfigError, match="^encoders.x: .*unexpected keyword argument 'hidden'"):
        build(cfg)


def test_compile_encoders_switch(compose, tmp_path, monkeypatch):
    from mmrep.core.errors import ConfigError
    from mmrep.pipeline.build import build

    calls = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: calls.append((type(self).__name__, kw)))
    build(compose(["compile_encoders=max-autotune"], output_dir=tmp_path))
    assert calls == [("MLP", {"mode": "max-autotune"})] * 2  # both encoders, in place
    build(compose([], output_dir=tmp_path))
    assert len(calls) == 2  # null: eager
    with pytest.raises(ConfigError, match=r"^compile_encoders: null or one of \['default'"):
        build(compose(["compile_encoders=fast"], output_dir=tmp_path))
