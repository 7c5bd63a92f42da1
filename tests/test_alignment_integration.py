"""Alignment in the framework: layer hooks, metric=alignment, AlignmentCallback (incl. DDP), the align CLI."""

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from mmrep.core.errors import ConfigError
from mmrep.encoders.mlp import MLP
from mmrep.metrics.alignment import alignment_scores
from mmrep.metrics.alignment_metric import Alignment
from mmrep.metrics.features import layer_features

ALIGN_TINY = ["metric=alignment", "metric.alignment.k=10", "metric.alignment.n=200"]


# ---- hooks -----------------------------------------------------------------------------------------------
def test_layer_features_are_the_post_activation_outputs():
    torch.manual_seed(0)
    enc = MLP((6,), 3, hidden=[5, 4], relative=False, activation="tanh", output_activation=True)
    x = torch.randn(50, 6)
    names, feats = layer_features(enc, [x[:20], x[20:]])
    assert names == ["act1", "act2", "act3"]  # tanh layers are found (the original's "relu" name match missed them)
    h1 = torch.tanh(enc.net.fc1(x))
    h2 = torch.tanh(enc.net.fc2(h1))
    h3 = torch.tanh(enc.net.fc3(h2))
    for got, want in zip(feats, [h1, h2, h3]):
        torch.testing.assert_close(got, want)
    assert not enc.net.act1._forward_hooks  # hooks removed
    names, feats = layer_features(enc, [x], include_output=True)
    assert names[-1] == "output" and torch.allclose(feats[-1], enc(x))


def test_layer_features_finds_activations_of_any_module_and_restores_mode():
    enc = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)).train()
    names, feats = layer_features(enc, [torch.randn(10, 4)])
    assert names == ["1", "3"] and [f.shape for f in feats] == [(10, 8), (10, 8)]
    assert enc.training
    with pytest.raises(ValueError, match="no layers to read"):
        layer_features(nn.Linear(3, 3), [torch.randn(4, 3)])


# ---- metric=alignment on a model -------------------------------------------------------------------------
class _TwoEncoders(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.encoders = nn.ModuleDict(
            {"x": MLP((8,), 4, hidden=[6, 6], relative=False), "t": MLP((5,), 4, hidden=[7], relative=False)}
        )


class _Data:
    def heldout(self, purpose, n):
        gen = torch.Generator().manual_seed(3)
        z = torch.randn(n, 5, generator=gen)
        return [{"x": torch.cat([z, z[:, :3] ** 2], 1)[i : i + 64], "t": z[i : i + 64]} for i in range(0, n, 64)]


def test_alignment_metric_rows_match_the_pure_functions():
    model, data = _TwoEncoders(), _Data()
    df = Alignment(metrics=["mutual_knn", "unbiased_cka"], k=5, n=150)(model, data)
    batches = data.heldout("align", 150)
    _, fa = layer_features(model.encoders["x"], [b["x"] for b in batches])
    _, fb = layer_features(model.encoders["t"], [b["t"] for b in batches])
    assert [f.shape[1] for f in fa] == [6, 6] and [f.shape[1] for f in fb] == [7]
    for metric in ("mutual_knn", "unbiased_cka"):
        rows = df[df.metric == metric]
        per_layer = rows[rows["aggregate"] == "layer"]
        assert len(per_layer) == 2
        expected = [alignment_scores(a, fb[0], [metric], k=5)[metric] for a in fa]
        np.testing.assert_allclose(per_layer.value.to_numpy(), expected, rtol=1e-9)
        best = rows[rows["aggregate"] == "max"].iloc[0]
        assert best.value == pytest.approx(max(expected))
        assert best.layer_a == f"act{int(np.argmax(expected)) + 1}" and best.layer_b == "act1"
        assert rows[rows["aggregate"] == "last"].iloc[0].value == pytest.approx(expected[-1])
    assert set(df.modality) == {"x|t"} and set(df.n) == {150} and set(df.k) == {5}


@pytest.mark.parametrize(
    "kwargs, key",
    [
        (dict(metrics=["mutual_knn", "nope"]), "metric.alignment.metrics"),
        (dict(k=512, n=512), "metric.alignment.k"),
        (dict(n=2), "metric.alignment.n"),
        (dict(q=0.0), "metric.alignment.q"),
    ],
)
def test_alignment_metric_config_errors_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=f"^{key}"):
        Alignment(**kwargs)


def test_alignment_metric_needs_two_encoders():
    with pytest.raises(ConfigError, match="metric.alignment.pairs"):
        Alignment(k=5, n=100, pairs=[["x", "y"]])(_TwoEncoders(), _Data())


# ---- end to end ------------------------------------------------------------------------------------------
def _last_epoch_max(history: pd.DataFrame) -> pd.Series:
    last = history[(history.epoch == history.epoch.max()) & (history["aggregate"] == "max")]
    return last.set_index("metric").value


def test_train_with_alignment_metric_and_callback(cli, tiny, tmp_path):
    out = tmp_path / "run"
    args = [a for a in tiny if not a.startswith("metric.identifiability")] + ALIGN_TINY
    args += ["callbacks=alignment", "callbacks.alignment.k=10", "callbacks.alignment.n=200", f"hydra.run.dir={out}"]
    res = cli(args)
    assert res.returncode == 0, res.stderr[-3000:]
    results = pd.read_csv(out / "results.csv")
    assert {"mutual_knn", "cka", "unbiased_cka", "cknna", "svcca", "cmd"} <= set(results.metric)
    best = results[results["aggregate"] == "max"].set_index("metric").value
    assert best["cycle_knn"] <= 1 and 0 < best["unbiased_cka"] <= 1
    history = pd.read_csv(out / "alignment_history.csv")
    assert sorted(history.epoch.unique()) == [0, 1] and set(history.n) == {200}
    # the callback's last evaluation and the post-training metric see the same weights and samples
    tracked = _last_epoch_max(history)
    for metric in ("mutual_knn", "unbiased_cka"):
        assert tracked[metric] == pytest.approx(best[metric], rel=1e-6)
    logged = pd.read_csv(next((out / "csv").rglob("metrics.csv")))
    assert "align/unbiased_cka" in logged.columns


@pytest.mark.ddp
def test_alignment_callback_gathers_nested_features_across_ddp_ranks(cli, tmp_path):
    """Two gloo ranks, three modalities (one a masked token sequence): every pair's tracked alignment equals the
    single-process metric after training (n = 199 is odd: rank 1's shard repeats a sample that is dropped)."""
    out = tmp_path / "run"
    args = [
        "dataset=toy",
        "objective=unimodal",
        "trainer=ddp_cpu",
        "trainer.max_epochs=1",
        "callbacks=alignment",
        "callbacks.alignment.k=10",
        "callbacks.alignment.n=199",
        "callbacks.rich_progress_bar=null",
        "metric=alignment",
        "metric.alignment.k=10",
        "metric.alignment.n=199",
        "metric.alignment.metrics=[mutual_knn,unbiased_cka]",
        f"hydra.run.dir={out}",
    ]
    res = cli(args)
    assert res.returncode == 0, res.stderr[-3000:]
    history = pd.read_csv(out / "alignment_history.csv")
    assert set(history.n) == {199} and set(history.modality) == {"image|tokens", "image|vector", "tokens|vector"}
    best = pd.read_csv(out / "results.csv").query("aggregate == 'max'").set_index(["modality", "metric"]).value
    tracked = history[history["aggregate"] == "max"].set_index(["modality", "metric"]).value
    pd.testing.assert_series_equal(tracked.sort_index(), best.sort_index(), rtol=1e-5, check_dtype=False)


def test_train_alignment_config_error_names_the_key(compose, tiny, tmp_path):
    from mmrep.pipeline.build import instantiate_group

    args = [a for a in tiny if not a.startswith("metric.identifiability")] + [
        "metric=alignment",
        "metric.alignment.k=600",
    ]
    with pytest.raises(ConfigError, match="^metric.alignment.k"):
        instantiate_group(compose(args, output_dir=tmp_path).metric)


# ---- CLI -------------------------------------------------------------------------------------------------
@pytest.fixture
def feature_files(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 24)).astype("f4")
    b = (a @ rng.normal(size=(24, 12)) + 0.3 * rng.normal(size=(300, 12))).astype("f4")
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    return tmp_path, a, b


def test_align_cli_prints_the_suite_and_matches_the_library(cli, feature_files):
    tmp, a, b = feature_files
    res = cli(
        [
            str(tmp / "a.npy"),
            str(tmp / "b.npy"),
            "--metrics",
            "all",
            "--k",
            "10",
            "--format",
            "csv",
            "--csv",
            str(tmp / "out.csv"),
        ],
        module="mmrep.align",
    )
    assert res.returncode == 0, res.stderr
    table = pd.read_csv(tmp / "out.csv").set_index("metric").value
    expected = alignment_scores(torch.from_numpy(a), torch.from_numpy(b), "all", k=10)
    assert list(table.index) == list(expected)
    np.testing.assert_allclose(table.to_numpy(), list(expected.values()), rtol=1e-6)
    res = cli([str(tmp / "a.npy"), str(tmp / "a.npy"), "--k", "10"], module="mmrep.align")
    assert res.returncode == 0 and "mutual_knn" in res.stdout and "1.000000" in res.stdout


@pytest.mark.parametrize(
    "make, args, message",
    [
        (lambda t, a: np.save(t / "c.npy", a[:100]), ["a.npy", "c.npy"], "A, B: sample counts differ"),
        (lambda t, a: None, ["a.npy", "b.npy", "--k", "300"], "--k: must be an integer"),
        (
            lambda t, a: np.save(t / "c.npy", np.where(np.eye(300, 24) > 0, np.nan, a)),
            ["a.npy", "c.npy"],
            "B: contains",
        ),
        (lambda t, a: None, ["a.npy", "b.npy", "--metrics", "cka,foo"], "--metrics: unknown metric"),
        (lambda t, a: None, ["missing.npy", "b.npy"], "A: no such file"),
    ],
)
def test_align_cli_bad_input(cli, feature_files, make, args, message):
    tmp, a, _ = feature_files
    make(tmp, a)
    res = cli([str(tmp / x) if x.endswith(".npy") else x for x in args], module="mmrep.align")
    assert res.returncode == 2
    assert f"mmrep.align: error: {message}" in res.stderr
