"""Degenerate metric sizes and rows that could not be computed (issue 30).

A k that leaves no contrast between neighbours and non-neighbours (k >= N - 1: every other sample is a neighbour,
so mutual kNN is 1 for any features) is refused by the pure functions, the align CLI, ``metric=alignment`` before
training and the online kNN. Every results row without a value says why in the ``reason`` column: the task
metrics, the probes, the alignment suite and RankMe name what in their inputs leaves the score undefined, and
``measure`` names whatever else is not finite. Known answers: the values and reason texts themselves."""

import json
import logging
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from fixtures import write_affect
from mmrep import align
from mmrep.callbacks.online_eval import OnlineKNN
from mmrep.core.contract import DataSpec, ModalitySpec
from mmrep.core.errors import ConfigError
from mmrep.core.results import RESULT_COLUMNS, select_value
from mmrep.encoders.mlp import MLP
from mmrep.metrics.alignment import AlignmentInputError, alignment_scores
from mmrep.metrics.alignment.preprocess import check_k
from mmrep.metrics.alignment_metric import Alignment
from mmrep.metrics.factors import FactorProbes
from mmrep.metrics.linear_probe import LinearProbe
from mmrep.metrics.probes import probe_score, undefined_probe
from mmrep.metrics.rankme import RankMe
from mmrep.metrics.task import TaskMetrics
from mmrep.pipeline.loggers import log_results
from mmrep.pipeline.measure import measure, write_results

N = 30
WHY_K = (
    "(N = 30 samples: with k >= N-1 every other sample is a neighbour, so the neighbour sets of any two "
    "representations agree and mutual kNN is 1 for any features)"
)


def unrelated(n: int = N, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two independent random feature matrices of the same n samples, (n, 12) and (n, 10)."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 12)), rng.normal(size=(n, 10))


# ---- k: the pure functions and the CLI -------------------------------------------------------------------------
def test_k_of_n_minus_1_is_refused_with_the_reason():
    X, Y = unrelated()
    for call in (lambda: check_k(29, N), lambda: alignment_scores(X, Y, ["mutual_knn"], k=29)):
        with pytest.raises(AlignmentInputError) as err:
            call()
        assert str(err.value) == f"k: must be an integer in [1, N-2] = [1, 28], got 29 {WHY_K}"
    with pytest.raises(AlignmentInputError) as err:
        check_k(0, N)
    assert str(err.value) == "k: must be an integer in [1, N-2] = [1, 28], got 0"  # no neighbourhood to explain
    assert check_k(28, N) == 28


def test_k_of_n_minus_2_keeps_a_contrast_on_unrelated_features():
    """k = N - 2 leaves out exactly one other sample per row, the least similar: two lists agree unless their
    left-out samples differ, so mutual kNN = 1 - (fraction of rows whose left-out samples differ) / k."""
    X, Y = unrelated()

    def least_similar(H: np.ndarray) -> np.ndarray:
        U = H / np.linalg.norm(H, axis=1, keepdims=True)
        S = U @ U.T
        np.fill_diagonal(S, np.inf)
        return S.argmin(1)

    differ = float((least_similar(X) != least_similar(Y)).mean())
    got = alignment_scores(X, Y, ["mutual_knn"], k=N - 2)["mutual_knn"]
    assert differ > 0.5 and got == pytest.approx(1 - differ / (N - 2), abs=1e-12) and got < 1


def test_align_cli_refuses_k_of_n_minus_1_in_one_line(tmp_path, capsys):
    X, Y = unrelated()
    np.save(tmp_path / "a.npy", X)
    np.save(tmp_path / "b.npy", Y)
    files = [str(tmp_path / "a.npy"), str(tmp_path / "b.npy")]
    assert align.main([*files, "--k", "29", "--csv", str(tmp_path / "out.csv")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"mmrep.align: error: --k: must be an integer in [1, N-2] (N = rows of A) = [1, 28], got 29 {WHY_K}"
    ]
    assert not (tmp_path / "out.csv").exists()
    assert align.main([*files, "--k", "28", "--metrics", "mutual_knn", "--format", "json"]) == 0
    got = json.loads(capsys.readouterr().out)["mutual_knn"]
    assert got == pytest.approx(alignment_scores(X, Y, ["mutual_knn"], k=28)["mutual_knn"], rel=1e-6) and got < 1


# ---- k: metric=alignment before training -----------------------------------------------------------------------
class TwoEncoders(nn.Module):
    """The objective contract metric=alignment reads: per-modality encoders with post-activation layers."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.encoders = nn.ModuleDict(
            {"x": MLP((8,), 4, hidden=[6], relative=False), "t": MLP((5,), 4, hidden=[7], relative=False)}
        )


class HeldOut:
    """An in-memory dataset whose ``heldout("align", n)`` is the first n of its ``size`` test samples."""

    align_split = "test"

    def __init__(self, size: int = N) -> None:
        z = torch.randn(size, 5, generator=torch.Generator().manual_seed(3))
        self.data = {"x": torch.cat([z, z[:, :3] ** 2], 1), "t": z}

    def heldout_size(self, purpose, n=None):
        size = len(self.data["t"])
        return size if n is None else min(int(n), size)

    def heldout(self, purpose, n=None):
        k = self.heldout_size(purpose, n)
        return [{m: v[:k] for m, v in self.data.items()}]


ALIGNMENT_K = (
    "metric.alignment.k: 29 neighbours need at least k + 2 = 31 held-out samples; the alignment set has 30 "
    "(split test): with k >= N - 1 every other sample is a neighbour, so the neighbour sets of any two "
    "representations agree (mutual kNN is 1 for any features); lower metric.alignment.k to at most 28, or use a "
    "bigger held-out set (metric.alignment.n / dataset)"
)


def test_alignment_check_refuses_k_of_n_minus_1_before_anything_is_encoded():
    sizes_only = HeldOut()
    sizes_only.heldout = None  # the check reads the set's size, never its batches
    metric = Alignment(metrics=["mutual_knn", "unbiased_cka"], k=29, n=512)
    with pytest.raises(ConfigError) as err:
        metric.check(TwoEncoders(), sizes_only)
    assert str(err.value) == ALIGNMENT_K
    with pytest.raises(ConfigError) as err:  # never capped at the measurement either
        metric(TwoEncoders(), HeldOut())
    assert str(err.value) == ALIGNMENT_K
    Alignment(metrics=["unbiased_cka", "svcca"], k=29, n=512).check(TwoEncoders(), HeldOut())  # no kNN metric


def test_the_alignment_callback_refuses_the_k_before_training_not_after_the_first_epoch():
    from mmrep.callbacks.alignment import AlignmentCallback

    with pytest.raises(ConfigError, match=r"^callbacks\.alignment\.k: 29 neighbours need at least k \+ 2 = 31"):
        AlignmentCallback(k=29, n=512).check(TwoEncoders(), HeldOut())
    AlignmentCallback(k=28, n=512).check(TwoEncoders(), HeldOut())


def test_alignment_with_k_of_n_minus_2_is_measured():
    rows = Alignment(metrics=["mutual_knn"], k=28, n=512)(TwoEncoders(), HeldOut())
    best = rows[rows["aggregate"] == "max"].iloc[0]
    assert best.k == 28 and best.n == N and 0 < best.value < 1 and "reason" not in rows


def test_the_shipped_k_on_a_small_test_split_stops_before_training(run_inproc, tmp_path):
    write_affect(tmp_path / "data", "mosi", sizes=(40, 12, 39))  # 38 test samples once the zero-text one is dropped
    with pytest.raises(ConfigError) as err:
        run_inproc(
            [
                "dataset=mosi",
                "objective=unimodal",
                f"paths.data_dir={tmp_path / 'data'}",
                "callbacks.rich_progress_bar=null",
                "logger=none",
            ],
            tmp_path / "run",
        )
    assert str(err.value).startswith(
        "metric.alignment.k: 100 neighbours need at least k + 2 = 102 held-out samples; the alignment set has 38 "
        "(split test)"
    )
    assert "lower metric.alignment.k to at most 36" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "run" / "checkpoints").exists()


# ---- k: the online kNN -----------------------------------------------------------------------------------------
class Labelled:
    """A labelled in-memory dataset: splits ``{split: {"x": (n, 2), "y": (n,)}}`` and their sizes."""

    def __init__(self, task: str = "classification", **sizes: int) -> None:
        self.spec = DataSpec({"x": ModalitySpec((2,))}, task=task, num_classes=2 if task == "classification" else None)
        gen = torch.Generator().manual_seed(0)
        self.splits = {s: {"x": torch.randn(n, 2, generator=gen), "y": torch.arange(n) % 2} for s, n in sizes.items()}

    def heldout_size(self, purpose, n=None):
        size = len(self.splits[purpose]["y"])
        return size if n is None else min(int(n), size)

    def heldout(self, purpose, n=None):
        k = self.heldout_size(purpose, n)
        return [{key: v[:k] for key, v in self.splits[purpose].items() if key != "latents"}]


def test_online_knn_refuses_a_k_the_bank_cannot_serve():
    model = SimpleNamespace(encoders={"x": None}, encode=None)
    data = Labelled(train=40, val=10)
    with pytest.raises(ConfigError) as err:
        OnlineKNN(k=40).check(model, data)
    assert str(err.value) == (
        "callbacks.online_knn.k: must be below the bank's size, 40 train samples (n_bank=4096), got 40: with k >= "
        "the bank every train sample is a neighbour of every query, so the vote ignores which samples are near; "
        "lower callbacks.online_knn.k or use a bigger bank (callbacks.online_knn.n_bank / dataset)"
    )
    OnlineKNN(k=39).check(model, data)  # the queries are not in the bank: 39 of 40 still leaves one out


# ---- reasons: the task metrics ---------------------------------------------------------------------------------
class Predictor(nn.Module):
    """An objective with one prediction head: ``value`` for every sample, or (None) the first input feature."""

    def __init__(self, value: float | None) -> None:
        super().__init__()
        self.value, self.anchor = value, nn.Parameter(torch.zeros(1))

    @property
    def device(self):
        return self.anchor.device

    def predict(self, batch):
        x = batch["x"]
        return {"x": x[:, :1] if self.value is None else torch.full((len(x), 1), self.value)}


def regression(y: torch.Tensor) -> Labelled:
    data = Labelled("regression", test=len(y))
    data.splits["test"]["y"] = y
    return data


def test_pearson_of_constant_predictions_is_nan_with_the_reason():
    y = torch.linspace(-1, 1, 12)
    rows = TaskMetrics(["test"], ["mae", "pearson"])(Predictor(0.5), regression(y)).set_index("metric")
    assert rows.loc["mae", "value"] == pytest.approx(float((y - 0.5).abs().mean()), rel=1e-6)
    assert pd.isna(rows.loc["mae", "reason"])
    assert np.isnan(rows.loc["pearson", "value"])
    assert rows.loc["pearson", "reason"] == (
        "the predictions of x are constant (0.5 for all 12 samples) on test: Pearson r divides by their zero "
        "standard deviation"
    )


def test_pearson_of_constant_targets_and_nan_targets_say_which():
    data = regression(torch.full((12,), 2.0))
    rows = TaskMetrics(["test"], ["pearson"])(Predictor(None), data)
    assert rows.reason[0] == (
        "the targets are constant (2 for all 12 samples) on test: Pearson r divides by their zero standard deviation"
    )
    y = torch.linspace(-1, 1, 12)
    y[[2, 5]] = float("nan")
    rows = TaskMetrics(["test"], ["mae", "pearson"])(Predictor(None), regression(y))
    assert rows.value.isna().all() and set(rows.reason) == {"2 of the 12 test targets are NaN/inf"}


class Constant(Predictor):
    """An objective whose encoder maps every sample to the same ``value`` (a collapse; NaN: a diverged encoder)."""

    encoders = {"x": None}

    def encode(self, batch):
        return {"x": torch.full((len(batch["x"]), 3), self.value)}


def test_linear_probe_of_a_collapsed_or_diverged_encoder_says_why():
    data = Labelled("regression", train=40, test=12)
    data.splits["train"]["y"] = torch.linspace(0, 1, 40)  # mean 0.5: the probe of a constant representation
    probe = LinearProbe(splits=["test"], metrics=["mae", "pearson"])
    rows = probe(Constant(2.0), data).set_index("metric")
    assert rows.loc["mae", "value"] == pytest.approx(0.5, abs=1e-6)  # |0.5 - y| for the test labels 0, 1, 0, ...
    assert rows.loc["pearson", "reason"] == (
        "the predictions of x are constant (0.5 for all 12 samples) on test: Pearson r divides by their zero "
        "standard deviation"
    )
    rows = probe(Constant(float("nan")), data)
    assert rows.value.isna().all() and set(rows.reason) == {"40 of the 40 train representations of x are NaN/inf"}


# ---- reasons: probes -------------------------------------------------------------------------------------------
def test_probes_on_constant_targets_are_nan_with_the_reason():
    z = np.random.default_rng(0).normal(size=(50, 4))
    ones = np.ones(50)
    assert probe_score("linear", z, z[:, 0], z, ones)[0] == "r2" and np.isnan(
        probe_score("linear", z, ones, z, ones)[1]
    )
    assert undefined_probe(z, z[:, 0], z, ones) == (
        "the eval targets are constant (1 for all 50 samples): R² divides by their zero variance"
    )
    two = np.stack([z[:, 0], ones], 1)
    assert undefined_probe(z, two, z, two, fit="probe_fit", evaluate="probe_eval") == (
        "1 of the 2 probe_eval target columns are constant (column 1: 1): R² divides by their zero variance"
    )
    labels = np.zeros(50, dtype=np.int64)
    metric, value = probe_score("linear", z, labels, z, labels, discrete=True)
    assert metric == "mcc" and np.isnan(value)  # sklearn's logistic regression would raise on one class
    assert (
        undefined_probe(z, labels, z, labels, discrete=True)
        == "the fit labels hold one class (0): a classifier needs two"
    )
    assert undefined_probe(z, z[:, 0] > 0, z, labels, discrete=True) == (
        "the eval labels hold one class (0) for all 50 samples: MCC is 0/0"
    )
    assert undefined_probe(z, ones[:0], z, ones) == "the fit set has no samples"
    broken = z.copy()
    broken[[1, 3, 3], [0, 1, 2]] = np.nan
    assert undefined_probe(broken, z[:, 0], z, z[:, 1]) == "2 of the 50 fit representations are NaN/inf"


class Factors(Labelled):
    """Two discrete factors in ``latents``: ``shape`` varies, ``colour`` is the same for every sample."""

    def __init__(self) -> None:
        super().__init__("none", val=40, test=40)
        for split in self.splits.values():
            split["x"][:, 0] += 6 * split["y"]  # shape is linearly readable from x
            split["latents"] = {"shape": split["y"].view(-1, 1), "colour": torch.zeros(40, 1, dtype=torch.long)}

    PROBE_SPLITS = {"probe_fit": "val", "probe_eval": "test"}

    def heldout_size(self, purpose, n=None):
        return super().heldout_size(self.PROBE_SPLITS.get(purpose, purpose), n)

    def heldout(self, purpose, n=None):
        (batch,) = super().heldout(self.PROBE_SPLITS[purpose], n)
        return [{**batch, "latents": self.splits[self.PROBE_SPLITS[purpose]]["latents"]}]  # all 40: n is None

    def factor_roles(self):
        return {"shape": "invariant", "colour": "omitted"}

    def factor_kinds(self):
        return {"shape": "discrete", "colour": "discrete"}


class Encoders(Predictor):
    def __init__(self) -> None:
        super().__init__(None)
        self.encoders = nn.ModuleDict({"x": nn.Identity()})

    def encode(self, batch):
        return {"x": batch["x"]}


def test_factor_probes_name_the_constant_factor_and_score_the_other():
    rows = FactorProbes(probes=["linear"])(Encoders(), Factors()).set_index("target")
    assert rows.loc["shape", "value"] == pytest.approx(1.0) and pd.isna(rows.loc["shape", "reason"])
    assert rows.loc["colour", "metric"] == "mcc" and np.isnan(rows.loc["colour", "value"])
    assert rows.loc["colour", "reason"] == "the probe_fit labels hold one class (0): a classifier needs two"


# ---- reasons: the alignment suite and RankMe -------------------------------------------------------------------
def test_cka_on_a_constant_layer_is_nan_with_the_reason_and_max_skips_it():
    """A dead ReLU layer (all zero) and a constant one: CKA is 0/0 there (the pure function writes 0, as the
    original), so those rows are NaN with the reason and the max is over the live layer."""
    X, Y = unrelated(seed=1)
    live, dead, constant = torch.from_numpy(X), torch.zeros(N, 3, dtype=torch.float64), torch.ones(N, 4).double()
    features = {"x": (["act1", "act2"], [live, dead]), "t": (["act1", "act2"], [torch.from_numpy(Y), constant])}
    rows = Alignment(metrics=["cka", "mutual_knn"], k=5, n=N).compute([("x", "t")], features)
    layer = rows[rows["aggregate"] == "layer"].set_index(["metric", "layer_a", "layer_b"])
    expected = alignment_scores(X, Y, ["cka"])["cka"]
    assert layer.loc[("cka", "act1", "act1"), "value"] == pytest.approx(expected, rel=1e-12)
    assert layer.loc[("cka", "act2", "act1"), "reason"] == (
        "the features of x layer act2 are all zero over the 30 samples: cka is 0/0"
    )
    assert layer.loc[("cka", "act1", "act2"), "reason"] == (
        "the features of t layer act2 are the same for all 30 samples (zero variance): cka is 0/0"
    )
    assert layer.loc[("mutual_knn", "act1", "act2"), "reason"] == (
        "the features of t layer act2 are the same for all 30 samples (zero variance): all similarities tie, so "
        "the k-NN lists are arbitrary"
    )
    assert layer["value"].isna().sum() == 6 and layer["reason"].notna().sum() == 6
    best = rows[rows["aggregate"] == "max"].set_index("metric")
    assert best.loc["cka", "value"] == pytest.approx(expected, rel=1e-12) and best.loc["cka", "layer_a"] == "act1"
    last = rows[rows["aggregate"] == "last"].set_index("metric")
    assert np.isnan(last.loc["cka", "value"]) and last.loc["cka", "reason"].startswith("the features of x layer act2")
    only_dead = {"x": (["act2"], [dead]), "t": (["act1"], [torch.from_numpy(Y)])}
    best = Alignment(metrics=["cka"], k=5, n=N).compute([("x", "t")], only_dead).set_index("aggregate")
    assert (
        np.isnan(best.loc["max", "value"]) and best.loc["max", "reason"] == layer.loc[("cka", "act2", "act1"), "reason"]
    )


def test_rankme_of_all_zero_embeddings_is_nan_with_the_reason():
    class Zeros(Predictor):
        encoders = {"x": None}

        def encode(self, batch):
            return {"x": torch.zeros(len(batch["x"]), 4)}

    rows = RankMe(n=20)(Zeros(None), Labelled(val=20))
    assert np.isnan(rows.value[0]) and rows.reason[0] == (
        "the 20 embeddings are all zero: RankMe normalises their singular values by their sum, 0"
    )


# ---- reasons: measure, results.csv, the loggers, the optimised value --------------------------------------------
class Rows:
    """A metric returning fixed rows."""

    def __init__(self, rows: list[dict]) -> None:
        self.rows = rows

    def __call__(self, model, datamodule) -> pd.DataFrame:
        return pd.DataFrame(self.rows)


METRICS = {
    "fake": Rows([{"metric": "score", "modality": "x", "value": float("nan")}, {"metric": "score", "value": 0.25}]),
    "named": Rows([{"metric": "r2", "target": "y", "value": float("nan"), "reason": "the eval targets are constant"}]),
}


def test_measure_gives_every_non_finite_row_a_reason_and_warns_once(caplog):
    trainer = SimpleNamespace(callback_metrics={"val/loss": torch.tensor(float("inf"))})
    caplog.set_level(logging.WARNING)
    results, _, failed = measure(METRICS, SimpleNamespace(loss_name="infonce"), None, trainer)
    assert not failed and list(results.columns[: len(RESULT_COLUMNS)]) == RESULT_COLUMNS
    assert RESULT_COLUMNS[-1] == "reason"
    assert results.reason.fillna("").tolist() == [
        "value is not finite (metric.fake returned nan)",
        "",
        "the eval targets are constant",
        "the validation loss of the last epoch is inf (the training diverged)",
    ]
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning == (
        "3 of the 4 results rows could not be computed (results.csv: no value, the reason column says why): "
        "score/x: value is not finite (metric.fake returned nan); r2/y: the eval targets are constant; "
        "loss/infonce/val: the validation loss of the last epoch is inf (the training diverged)"
    )


class Table:
    """A W&B-like logger: its results table and summary."""

    def __init__(self) -> None:
        self.tables, self.experiment = {}, SimpleNamespace(summary={})

    def log_table(self, key, dataframe):
        self.tables[key] = dataframe


def test_results_csv_has_the_reason_column_and_loggers_chart_only_values(tmp_path):
    cfg = OmegaConf.create({"paths": {"output_dir": str(tmp_path)}, "fit": False, "optimized_metric": None})
    trainer = SimpleNamespace(is_global_zero=True, callback_metrics={})
    wandb = Table()
    results, value = write_results(METRICS, None, None, trainer, [wandb], cfg, 0.0)
    assert value is None
    written = pd.read_csv(tmp_path / "results.csv")
    assert list(written.columns) == RESULT_COLUMNS
    assert written.reason.fillna("").tolist() == [
        "value is not finite (metric.fake returned nan)",
        "",
        "the eval targets are constant",
    ]
    assert wandb.experiment.summary == {"results/score": 0.25}  # the NaN rows are no number to chart
    assert wandb.tables["results"].reason.tolist() == results.reason.where(results.reason.notna(), None).tolist()
    assert select_value(written, {"metric": "score"}) == 0.25  # the mean of the computed rows, as before
    assert np.isnan(select_value(written, {"metric": "r2"}))
    log_results([wandb], written.iloc[:0])  # an empty table logs nothing
