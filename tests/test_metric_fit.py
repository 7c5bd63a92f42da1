"""Metrics are fitted to the real data before training: the SVCCA dimension is capped to what the held-out split and
the layer widths allow (one warning naming the key), a k the held-out split cannot serve and impossible probe sets
are one-line errors before any step, and a metric that still fails at the end costs neither the other metrics'
rows nor the checkpoints."""

import logging

import pandas as pd
import pytest
import torch

from conftest import TINY
from fixtures import write_affect
from mmrep.core.errors import ConfigError

QUIET = ["callbacks.rich_progress_bar=null", "logger=none", "trainer.max_epochs=1"]


def warnings_of(caplog, key: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.getMessage().startswith(key)]


@pytest.mark.parametrize("name, objective", [("mosi", "unimodal"), ("mosei", "mmcl")])
def test_shipped_metrics_fit_a_small_test_split_and_narrow_features(run_inproc, tmp_path, caplog, name, objective):
    """The measured failures of the shipped configs on exact-format files: MOSI's 5 audio features (svcca_dim = 10)
    end in results.csv, with the capped value in the rows (a 39-sample test split needs a k below the shipped 100:
    tests/test_metric_degenerate.py)."""
    write_affect(tmp_path / "data", name, sizes=(40, 12, 39))
    caplog.set_level(logging.WARNING)
    results, _ = run_inproc(
        [
            f"dataset={name}",
            f"objective={objective}",
            "dataset.modalities=[vision,audio]",
            f"paths.data_dir={tmp_path / 'data'}",
            "metric.alignment.k=10",
            *QUIET,
        ],
        tmp_path / "run",
    )
    assert (tmp_path / "run" / "results.csv").is_file()
    aligned = results.dropna(subset=["aggregate"])
    assert set(aligned.modality) == {"vision|audio"} and set(aligned.k) == {10}
    assert {"mutual_knn", "svcca", "unbiased_cka"} <= set(aligned.metric)
    assert warnings_of(caplog, "metric.alignment.k") == []
    svcca = warnings_of(caplog, "metric.alignment.svcca_dim")
    if name == "mosi":  # audio: 5 features; MOSEI's 35 and 74 leave 10
        assert len(svcca) == 1 and "using svcca_dim = 5" in svcca[0] and "vision|audio" in svcca[0]
    else:
        assert svcca == []
    assert not results[results.probe == "linear"].empty  # the other metric of the default set


def test_a_split_too_small_to_align_fails_before_training(run_inproc, tmp_path):
    write_affect(tmp_path / "data", "mosi", sizes=(40, 12, 4))  # 3 test samples once the zero-text one is dropped
    with pytest.raises(ConfigError, match=r"^metric\.alignment\.n: the held-out alignment set has 3 samples"):
        run_inproc(
            ["dataset=mosi", "objective=unimodal", f"paths.data_dir={tmp_path / 'data'}", *QUIET], tmp_path / "run"
        )
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["metric.linear_probe.n_fit=1"], "metric.linear_probe.n_fit: the train set has 1 samples; at least 2"),
        (["metric.linear_probe.n_fit=2"], "metric.linear_probe.n_fit: the probe's training samples hold one class"),
    ],
)
def test_impossible_probe_sets_fail_before_training(run_inproc, tmp_path, overrides, message):
    path = write_affect(tmp_path / "data", "humor", sizes=(30, 12, 12))
    import pickle

    data = pickle.load(open(path, "rb"))
    data["train"]["labels"][:2] = 1.0  # the first two training samples share a class
    pickle.dump(data, open(path, "wb"))
    with pytest.raises(ConfigError) as err:
        run_inproc(
            ["dataset=humor", "objective=mmcl", f"paths.data_dir={tmp_path / 'data'}", *QUIET, *overrides],
            tmp_path / "run",
        )
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_metric_failing_after_training_keeps_the_others_and_the_checkpoint(run_inproc, tmp_path, monkeypatch):
    from mmrep.core.errors import MetricsFailed
    from mmrep.metrics.linear_probe import LinearProbe

    def broken(self, model, datamodule):
        raise ValueError("the probe broke")

    monkeypatch.setattr(LinearProbe, "__call__", broken)
    write_affect(tmp_path / "data", "mosei", sizes=(40, 12, 30))
    with pytest.raises(MetricsFailed) as err:
        run_inproc(
            [
                "dataset=mosei",
                "objective=mmcl",
                f"paths.data_dir={tmp_path / 'data'}",
                *QUIET,
                "metric.alignment.metrics=[mutual_knn]",
                "metric.alignment.k=10",
            ],
            tmp_path / "run",
        )
    message = str(err.value)
    assert (
        message.startswith("after training, metric.linear_probe: ValueError: the probe broke") and "\n" not in message
    )
    assert f"the other metrics' rows are in {tmp_path / 'run' / 'results.csv'}" in message
    assert f"fit=false ckpt_path={tmp_path / 'run' / 'checkpoints' / 'last.ckpt'}" in message
    rows = pd.read_csv(tmp_path / "run" / "results.csv")
    assert set(rows.metric) == {"mutual_knn", "loss"}
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def test_mmcl_skips_a_single_pair_batch_and_refuses_fresh_negatives_without_them(compose):
    """The remainder batch of one pair has no in-batch negative: the step is skipped (Lightning: None)."""
    from mmrep.pipeline.build import build

    cfg = compose([*TINY, "objective.negatives=in_batch"])
    datamodule, model = build(cfg)
    one = {k: v[:1] for k, v in datamodule.heldout("val", 4)[0].items() if k in ("x", "t")}
    assert model.training_step(one, 0) is None
    two = {k: v[:2] for k, v in datamodule.heldout("val", 4)[0].items() if k in ("x", "t")}
    assert torch.isfinite(model.training_step(two, 0))
    model.hparams.negatives = "fresh"
    datamodule.negatives = False
    with pytest.raises(ConfigError, match=r"^objective\.negatives: 'fresh' needs a dataset that yields"):
        model.check_data(datamodule)
