"""objective=unimodal, metric=accuracy, dataset=rus × {unimodal, mmcl} end to end, rus_optuna, the RUS analysis."""

import sqlite3
from functools import partial

import numpy as np
import pandas as pd
import pytest
import torch

from mmrep.analysis import rus as analysis
from mmrep.core.contract import DataSpec, ModalitySpec
from mmrep.core.errors import ConfigError
from mmrep.data.rus import RUSDataModule
from mmrep.encoders.mlp import MLP
from mmrep.metrics.task import TaskMetrics
from mmrep.objectives.unimodal import UnimodalSupervised

RUS_TINY = [
    "dataset=rus",
    "dataset.num_data=4000",
    "dataset.batch_size=128",
    "callbacks.rich_progress_bar=null",
    "metric.alignment.k=10",
    "metric.alignment.n=200",
]
SPEC = DataSpec(
    {"x0": ModalitySpec((12,)), "x1": ModalitySpec((12,))}, task="classification", num_classes=4, encoding_size=12
)


def _factory(**fixed):
    """The rus_mlp encoder config as a factory (the ``encoders.<modality>`` contract)."""
    return partial(
        MLP,
        **{**dict(depth=1, width=12, negative_slope=0.1, output_activation=True, hidden=[], relative=False), **fixed},
    )


def _encoders(**per_modality):
    return {m: _factory(**per_modality.get(m, {})) for m in ("x0", "x1")}


def test_rus_encoder_is_the_spec_custom_mlp():
    enc = _factory(depth=3)(ModalitySpec((12,)), 12)
    linears = [m for m in enc.net if isinstance(m, torch.nn.Linear)]
    acts = [m for m in enc.net if isinstance(m, torch.nn.LeakyReLU)]
    assert [(l.in_features, l.out_features) for l in linears] == [(12, 12)] * 3  # D_enc linear layers
    assert len(acts) == 3 and all(a.negative_slope == 0.1 for a in acts)  # LeakyReLU(0.1) after each, last too
    assert isinstance(list(enc.net)[-1], torch.nn.LeakyReLU)


def test_unimodal_builds_per_modality_encoders_heads_and_optimizer_groups():
    model = UnimodalSupervised(
        SPEC,
        _encoders(x1=dict(depth=4)),
        optimizer=partial(torch.optim.AdamW, lr=1e-3),
        param_groups={"x0": {"lr": 5e-3, "weight_decay": 0.1}, "x1": {"weight_decay": 0.0}},
    )
    assert len(model.encoders["x0"].activation_layers()) == 1 and len(model.encoders["x1"].activation_layers()) == 4
    assert model.heads["x1"].out_features == 4 and model.loss_name == "cross_entropy"
    groups = model.configure_optimizers().param_groups
    assert [(g["lr"], g["weight_decay"]) for g in groups] == [(5e-3, 0.1), (1e-3, 0.0)]
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(p.numel() for p in model.parameters())
    # frozen parameters stay out of the optimiser
    model.encoders["x0"].requires_grad_(False)
    groups = model.configure_optimizers().param_groups
    assert sum(len(g["params"]) for g in groups) == len([p for p in model.parameters() if p.requires_grad])


@pytest.mark.parametrize(
    "kwargs, key",
    [
        (
            dict(data=DataSpec({"x0": ModalitySpec((12,))}, encoding_size=12), encoders={"x0": _factory()}),
            "objective=unimodal",
        ),
        (dict(train_modalities=["x2"]), "objective.train_modalities"),
        (dict(encoders=_encoders(x1=dict(depth=0))), "encoders.x1.depth"),
        (dict(encoders={"x0": _factory()}), "encoders.x1"),
        (dict(encoders={**_encoders(), "x9": _factory()}), "encoders.x9"),
        (dict(param_groups={"x0": {"lr": -1.0}}), "objective.param_groups.x0.lr"),
        (dict(param_groups={"x0": {"lrate": 1.0}}), "objective.param_groups.x0.lrate"),
        (dict(param_groups={"x3": {"lr": 1.0}}), "objective.param_groups.x3"),
    ],
)
def test_unimodal_config_errors(kwargs, key):
    base = dict(data=SPEC, encoders=_encoders())
    with pytest.raises(ConfigError, match=f"^{key}"):
        UnimodalSupervised(**{**base, **kwargs})


def test_per_modality_gradient_clipping_and_best_checkpoint_restore():
    model = UnimodalSupervised(SPEC, _encoders(), grad_clip=1.0)
    for p in model.parameters():
        p.grad = torch.ones_like(p) * 100
    model.configure_gradient_clipping(None)
    for m in ("x0", "x1"):
        params = [*model.encoders[m].parameters(), *model.heads[m].parameters()]
        assert torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])) == pytest.approx(1.0, rel=1e-4)
    # a stored best state is restored at the end of training
    best = {k: v.clone() for k, v in model.heads["x1"].state_dict().items()}
    model._best_state["x1"] = {"encoder": model.encoders["x1"].state_dict(), "head": best}
    model._best_state["x1"]["encoder"] = {k: v.clone() for k, v in model._best_state["x1"]["encoder"].items()}
    with torch.no_grad():
        model.heads["x1"].weight.add_(1.0)
    model.restore_best()
    torch.testing.assert_close(model.heads["x1"].weight, best["weight"])


def test_accuracy_metric_counts_correct_predictions(tmp_path):
    dm = RUSDataModule(redundancy=8, depth=0, num_data=2000, data_dir=str(tmp_path))
    model = UnimodalSupervised(dm.spec, _encoders())
    df = TaskMetrics(splits=["val", "test"])(model, dm)
    assert (
        set(df.split) == {"val", "test"} and set(df.modality) == {"x0", "x1"} and set(df.metric) == {"accuracy", "f1"}
    )
    with torch.no_grad():
        for split in ("val", "test"):
            data = dm.split(split).data
            pred = model.predict({"x0": data["x0"]})["x0"].argmax(1)
            got = df[(df.split == split) & (df.modality == "x0")].set_index("metric").value
            assert got["accuracy"] == pytest.approx((pred == data["y"]).float().mean().item())
            f1 = [
                2
                * ((pred == c) & (data["y"] == c)).sum().item()
                / max(1, ((pred == c).sum() + (data["y"] == c).sum()).item())
                for c in range(4)
            ]  # macro F1 by hand: 2TP / (2TP + FP + FN) per class
            assert got["f1"] == pytest.approx(np.mean(f1), abs=1e-6)


def test_rus_unimodal_run_learns_and_writes_accuracy_and_alignment(run_inproc, tmp_path):
    out = tmp_path / "run"
    run_inproc(
        [
            *RUS_TINY,
            "dataset.redundancy=8",
            "objective=unimodal",
            "encoders.x1.depth=2",
            "metric=accuracy_alignment",
            "trainer.max_epochs=4",
            f"paths.data_dir={tmp_path / 'data'}",
        ],
        out,
    )
    df = pd.read_csv(out / "results.csv")
    acc = df[(df.metric == "accuracy") & (df.split == "test")].set_index("modality").value
    assert acc["x0"] > 0.4 and acc["x1"] > 0.4  # 4 balanced classes: chance is 0.25
    best = df[df["aggregate"] == "max"].set_index("metric")
    assert set(best.index) == {"unbiased_cka", "mutual_knn"}
    assert set(best.layer_a) <= {"act1"} and set(best.layer_b) <= {"act1", "act2"}
    assert list((tmp_path / "data" / "rus").glob("rus_r8_d1_*.npz"))  # the cache sits under data_dir
    assert list((out / "checkpoints").glob("*.ckpt"))


def test_rus_with_contrastive_objective(run_inproc, tmp_path):
    out = tmp_path / "run"
    run_inproc(
        [
            *RUS_TINY,
            "objective=mmcl",
            "trainer.max_steps=30",
            "objective.scheduler.warmup_steps=5",
            f"paths.data_dir={tmp_path / 'data'}",
        ],
        out,
    )
    df = pd.read_csv(out / "results.csv")
    assert {"mutual_knn", "unbiased_cka", "svcca"} <= set(df.metric)  # dataset=rus defaults to metric=alignment
    assert (df[df.metric == "loss"].split == "val").all()


def test_rus_bad_redundancy_names_the_key(compose, tmp_path):
    from mmrep.pipeline.build import build

    with pytest.raises(ConfigError, match="^dataset.redundancy"):
        build(compose(["dataset=rus", "dataset.redundancy=9"], output_dir=tmp_path))


def test_rus_optuna_study_per_redundancy_and_modality(cli, tmp_path):
    db = tmp_path / "study.db"
    args = [
        "-m",
        "hparams_search=rus_optuna",
        "dataset.redundancy=4",
        "trainer.max_epochs=1",
        "dataset.num_data=3000",
        "hydra.sweeper.n_trials=2",
        f"hydra.sweeper.storage=sqlite:///{db}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        f"paths.data_dir={tmp_path / 'data'}",
        "callbacks.rich_progress_bar=null",
    ]
    res = cli(args)  # resuming and topping up a study: tests/test_sweeps.py (the same sweeper)
    assert res.returncode == 0, res.stderr[-3000:]
    with sqlite3.connect(db) as con:
        names = [r[0] for r in con.execute("select study_name from studies")]
        values = [r[0] for r in con.execute("select value from trial_values")]
        params = {r[0] for r in con.execute("select param_name from trial_params")}
    assert names == ["rus_r4_x1"] and len(values) == 2 and all(0 <= v <= 1 for v in values)
    assert params == {"objective.optimizer.lr", "objective.optimizer.weight_decay"}


# ---- analysis on synthetic run tables --------------------------------------------------------------------
def _fake_runs(tmp_path, slope):
    """Runs whose alignment falls with U and whose accuracy tracks alignment only at low U."""
    from fixtures import write_fake_run

    rng = np.random.default_rng(0)
    for r in (0, 4, 8):
        for d in (1, 2, 3, 4, 5):
            config = {"dataset": {"redundancy": r, "depth": 1}, "encoders": {"x1": {"depth": d}}, "seed": 0}
            u = 8 - r
            align = 0.9 - slope * u + 0.02 * d
            acc = 0.5 + (0.3 * align if u == 0 else rng.uniform(0, 0.2))
            rows = [
                {"metric": "unbiased_cka", "aggregate": "max", "value": align, "modality": "x0|x1", "split": "align"},
                {"metric": "accuracy", "modality": "x1", "split": "test", "value": acc},
            ]
            write_fake_run(tmp_path / f"r{r}_d{d}", config, rows)


def test_analysis_correlations_and_figures(tmp_path):
    _fake_runs(tmp_path, slope=0.08)
    result = analysis.analyze(tmp_path, bootstrap=200)
    vs_u = result["alignment_vs_U"].iloc[0]
    assert vs_u.spearman == pytest.approx(-1.0) and vs_u.pearson < -0.99 and vs_u.spearman_hi <= -0.99
    maxima = result["maxima"].set_index("U").alignment
    assert maxima[0] == pytest.approx(0.9 + 0.1) and maxima[8] == pytest.approx(0.9 - 0.64 + 0.1)  # U=8 is filled
    perf = result["alignment_performance"]
    ap = perf[perf.quantity == "alignment_performance"].set_index("U")
    assert ap.loc[0, "pearson"] == pytest.approx(1.0) and ap.loc[0, "pearson_lo"] <= 1.0
    assert abs(ap.loc[8, "spearman"]) < 0.95
    assert set(perf.quantity) >= {"alignment_performance_given_depth"}
    assert set(result["alignment_performance_by_seed"].seed) == {0}
    for name in (
        "rus_runs.csv",
        "alignment_vs_U.csv",
        "alignment_performance.csv",
        "alignment_performance_by_seed.csv",
        "alignment_vs_U_unbiased_cka.png",
        "alignment_performance_unbiased_cka.png",
    ):
        assert (tmp_path / name).is_file()


def test_partial_correlation_removes_what_depth_explains():
    rng = np.random.default_rng(1)
    z = rng.normal(size=400)
    x, y = z + 0.5 * rng.normal(size=400), z + 0.5 * rng.normal(size=400)  # related only through z
    plain, partial = analysis.correlation(x, y, 0), analysis.partial_correlation(x, y, z, bootstrap=300)
    assert (
        plain["pearson"] > 0.7 and abs(partial["pearson"]) < 0.12 and partial["pearson_lo"] < 0 < partial["pearson_hi"]
    )
    r = np.corrcoef([x, y, z])  # the textbook formula (r_xy − r_xz r_yz) / √((1 − r_xz²)(1 − r_yz²))
    textbook = (r[0, 1] - r[0, 2] * r[1, 2]) / np.sqrt((1 - r[0, 2] ** 2) * (1 - r[1, 2] ** 2))
    assert partial["pearson"] == pytest.approx(textbook, abs=1e-10)
    shared = rng.normal(size=400)
    assert analysis.partial_correlation(z + shared, z + shared + 0.1 * rng.normal(size=400), z, 0)["pearson"] > 0.9


def test_analysis_errors_without_runs(tmp_path):
    assert analysis.main([str(tmp_path)]) == 1


def test_best_states_travel_with_the_checkpoint():
    make = lambda: UnimodalSupervised(SPEC, _encoders())
    trained = make()
    trained._best_state = {
        m: {
            "encoder": {k: v.clone() for k, v in trained.encoders[m].state_dict().items()},
            "head": {k: v.clone() for k, v in trained.heads[m].state_dict().items()},
        }
        for m in ("x0", "x1")
    }
    trained.best_score, trained.best_epoch = {"x0": 0.5, "x1": 0.6}, {"x0": 3, "x1": 7}
    checkpoint = {}
    trained.on_save_checkpoint(checkpoint)
    fresh = make()
    fresh.on_load_checkpoint(checkpoint)
    fresh.restore_best()
    assert fresh.best_epoch == {"x0": 3, "x1": 7}
    for m in ("x0", "x1"):
        torch.testing.assert_close(fresh.heads[m].weight, trained.heads[m].weight)
        torch.testing.assert_close(fresh.encoders[m].net.fc1.weight, trained.encoders[m].net.fc1.weight)


def test_alignment_callback_on_a_split_smaller_than_n(run_inproc, tmp_path):
    out = tmp_path / "run"
    run_inproc(
        [
            *RUS_TINY,
            "dataset.num_data=2000",
            "objective=unimodal",
            "metric=alignment",
            "metric.alignment.metrics=[unbiased_cka]",
            "metric.alignment.n=512",
            "callbacks=alignment",
            "callbacks.alignment.k=10",
            "callbacks.alignment.n=512",
            "trainer.max_epochs=1",
            f"paths.data_dir={tmp_path / 'data'}",
        ],
        out,
    )
    history = pd.read_csv(out / "alignment_history.csv")
    assert set(history.n) == {301}  # the whole 301-sample test split, no padding rows
    best = pd.read_csv(out / "results.csv").query("aggregate == 'max'").set_index("metric").value
    tracked = history[history["aggregate"] == "max"].set_index("metric").value
    assert tracked["unbiased_cka"] == pytest.approx(best["unbiased_cka"], rel=1e-6)
