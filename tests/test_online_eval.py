"""Online evaluation (callbacks=online_probe / online_knn / rankme) and metric=rankme: known answers.

RankMe (arXiv:2210.02885, Eq. 1) of matrices whose singular values are known, against an independent numpy
implementation; the weighted kNN vote (arXiv:1805.01978) against a slow double loop; the online linear probe learns
the toy task above chance while the encoders stay untouched (stop-gradient, own optimiser), survives a state_dict
round trip exactly (directly and through a resumed fit's checkpoint), and keeps DDP ranks' probes identical (= the
one-process step on the whole batch)."""

import functools
import math
import os
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
import torch.distributed as dist

from mmrep.callbacks.online_eval import OnlineKNN, OnlineLinearProbe, RankMeCallback, knn_classify, knn_regress
from mmrep.core.contract import DataSpec, ModalitySpec
from mmrep.core.errors import ConfigError
from mmrep.data.toy import ToyDataModule
from mmrep.encoders.mlp import MLP
from mmrep.metrics.rankme import RankMe, rankme
from mmrep.objectives.unimodal import UnimodalSupervised

MLP16 = functools.partial(MLP, hidden=[16], relative=False)


def rankme_numpy(z: np.ndarray, eps: float = 1e-7) -> float:
    """Eq. 1 of arXiv:2210.02885 in float64 numpy: p_k = σ_k / Σσ + eps, exp(−Σ p log p)."""
    s = np.linalg.svd(np.asarray(z, dtype=np.float64), compute_uv=False)
    p = s / s.sum() + eps
    return float(np.exp(-(p * np.log(p)).sum()))


# ---- RankMe -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("r", [1, 3, 8])
def test_rankme_of_r_equal_singular_values_is_r(r):
    gen = torch.Generator().manual_seed(r)
    n, d, c = 64, 16, 2.5
    q = torch.linalg.qr(torch.randn(n, n, generator=gen)).Q  # (n, n) orthonormal columns
    v = torch.linalg.qr(torch.randn(d, d, generator=gen)).Q  # (d, d)
    z = q[:, :r] @ torch.diag(torch.full((r,), c)) @ v[:, :r].T  # (n, d), rank r, all r singular values c
    assert rankme(q[:, :r] * c) == pytest.approx(r, abs=1e-4)  # (n, r) = Q[:, :r] · diag(c)
    assert rankme(z, eps=0) == pytest.approx(r, abs=1e-4)
    # eps adds (d − r) · eps · log(1/eps) for the d − r zero singular values, relatively: ~1.4e-5 · r at r = 8
    assert rankme(z) == pytest.approx(r, rel=(d - r) * 1e-7 * math.log(1e7) + 1e-5)


def test_rankme_of_a_collapse_is_one():
    z = torch.zeros(100, 32)
    z[:, 0] = 1.0  # every embedding the same one-hot vector
    assert rankme(z) == pytest.approx(1.0, abs=1e-4)
    assert rankme(torch.zeros(10, 4)) == pytest.approx(1.0, abs=1e-4)  # all zero: no NaN


def test_rankme_by_hand_and_against_numpy():
    # [[2, 1], [1, 2]]: symmetric, eigenvalues 3 and 1 = its singular values; p = (3/4, 1/4)
    by_hand = math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))  # 1.7548...
    z = torch.tensor([[2.0, 1.0], [1.0, 2.0]])
    assert rankme(z, eps=0) == pytest.approx(by_hand, rel=1e-6)
    assert rankme_numpy(z.numpy(), eps=0) == pytest.approx(by_hand, rel=1e-12)
    assert rankme(z) == pytest.approx(rankme_numpy(z.numpy()), rel=1e-6)
    gen = torch.Generator().manual_seed(0)
    for shape in [(2, 2), (50, 8), (6, 20)]:
        z = torch.randn(*shape, generator=gen) @ torch.diag(torch.rand(shape[1], generator=gen) * 3)
        assert rankme(z) == pytest.approx(rankme_numpy(z.numpy()), rel=1e-5)
    with pytest.raises(ValueError, match="rankme: needs a"):
        rankme(torch.zeros(3))


class StubData:
    """A datamodule of fixed splits: ``{split: {modality: (N, ...), "y": (N,)}}`` served by ``heldout``."""

    def __init__(self, spec: DataSpec, splits: dict, chunk: int = 7) -> None:
        self.spec, self.splits, self.chunk = spec, splits, chunk

    def heldout_size(self, purpose, n=None):
        size = len(self.splits[purpose]["y"])
        return size if n is None else min(int(n), size)

    def heldout(self, purpose, n=None):
        n = self.heldout_size(purpose, n)
        data = self.splits[purpose]
        return [{k: v[i : min(n, i + self.chunk)] for k, v in data.items()} for i in range(0, n, self.chunk)]


class Encoders(pl.LightningModule):
    """A model with ``encoders`` and ``encode``: the objective contract the callbacks and metrics rely on."""

    def __init__(self, widths: dict) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.encoders = torch.nn.ModuleDict({m: torch.nn.Linear(i, o) for m, (i, o) in widths.items()})

    def encode(self, batch):
        return {m: enc(batch[m]) for m, enc in self.encoders.items() if m in batch}


def _stub(task="none", n=(40, 20), num_classes=None):
    gen = torch.Generator().manual_seed(0)
    spec = DataSpec(modalities={"a": ModalitySpec((5,)), "b": ModalitySpec((3,))}, task=task, num_classes=num_classes)
    splits = {
        s: {"a": torch.randn(k, 5, generator=gen), "b": torch.randn(k, 3, generator=gen), "y": torch.arange(k) % 2}
        for s, k in zip(("train", "val"), n)
    }
    return StubData(spec, splits)


def test_rankme_metric_rows_and_check():
    data, model = _stub(), Encoders({"a": (5, 4), "b": (3, 6)})
    rows = RankMe(n=15)(model, data)
    assert list(rows.columns) == ["metric", "modality", "split", "value", "n", "dim"]
    assert rows.to_dict("records")[1] | {"value": 0} == dict(
        metric="rankme", modality="b", split="val", value=0, n=15, dim=6
    )
    z = torch.cat([model.encode(b)["a"] for b in data.heldout("val", 15)]).detach()
    assert rows.value[0] == pytest.approx(rankme(z), rel=1e-6) and 1 < rows.value[0] <= 4
    with pytest.raises(ConfigError, match=r"metric.rankme.n: the val set has 1 samples; at least 2"):
        RankMe(n=1000)(model, _stub(n=(40, 1)))
    with pytest.raises(ConfigError, match=r"metric.rankme.n: an integer >= 2"):
        RankMe(n=1)
    with pytest.raises(ConfigError, match="has no encoders"):
        RankMe().check(torch.nn.Linear(2, 2), data)


# ---- kNN ------------------------------------------------------------------------------------------------------------
def _knn_reference(query, bank, y, k, t, num_classes=None):
    """Slow double loop: cosine similarity to every bank row, the k largest, exp(sim/T)-weighted vote / mean."""
    out = []
    for q in query:
        sims = [float(q @ b / (q.norm() * b.norm())) for b in bank]
        nearest = sorted(range(len(bank)), key=lambda i: -sims[i])[:k]
        if num_classes is not None:
            votes = [0.0] * num_classes
            for i in nearest:
                votes[int(y[i])] += math.exp(sims[i] / t)
            out.append(votes)
        else:
            w = [math.exp(sims[i] / t) for i in nearest]
            out.append([sum(wi * float(y[i]) for wi, i in zip(w, nearest)) / sum(w)])
    return torch.tensor(out)


def test_knn_vote_and_regression_match_a_double_loop():
    gen = torch.Generator().manual_seed(0)
    bank, query = torch.randn(30, 4, generator=gen), torch.randn(9, 4, generator=gen)
    labels = torch.randint(0, 3, (30,), generator=gen)
    votes = knn_classify(query, bank, labels, k=5, temperature=0.5, num_classes=3, chunk=4)  # chunks of 4 queries
    assert votes.shape == (9, 3)
    torch.testing.assert_close(votes, _knn_reference(query, bank, labels, 5, 0.5, 3), rtol=1e-5, atol=1e-6)
    targets = torch.randn(30, generator=gen)
    pred = knn_regress(query, bank, targets, k=4, temperature=0.2, chunk=4)
    assert pred.shape == (9, 1)
    torch.testing.assert_close(pred, _knn_reference(query, bank, targets, 4, 0.2), rtol=1e-5, atol=1e-6)
    # k = 1: the nearest neighbour's label
    nearest = (torch.nn.functional.normalize(query, dim=1) @ torch.nn.functional.normalize(bank, dim=1).T).argmax(1)
    assert torch.equal(knn_classify(query, bank, labels, 1, 0.07, 3).argmax(1), labels[nearest])


def test_knn_and_rankme_callbacks_log_on_separable_embeddings():
    data, model = _stub(task="classification", num_classes=2), Encoders({"a": (5, 4)})
    for split in data.splits.values():  # each class far along its own axis of a: kNN gets everything right
        split["a"][:, :2] = torch.nn.functional.one_hot(split["y"], 2) * 100.0
    logged = {}
    model.log = lambda name, value, **kw: logged.__setitem__(name, value)
    trainer = SimpleNamespace(datamodule=data, sanity_checking=False, current_epoch=0)
    knn, rank = OnlineKNN(k=3, n_bank=40), RankMeCallback(n=20)
    for callback in (knn, rank):
        callback.setup(trainer, model, "fit")
        callback.on_validation_epoch_end(trainer, model)
    assert logged.keys() == {"online/knn_acc_a", "online/rankme_a"} and logged["online/knn_acc_a"] == 1.0
    z = torch.cat([model.encode(b)["a"] for b in data.heldout("val")]).detach()
    assert logged["online/rankme_a"] == pytest.approx(rankme(z), rel=1e-6)
    logged.clear()
    RankMeCallback(n=20, every_n_epochs=2).on_validation_epoch_end(trainer, model)  # epoch 1 of 2: not yet
    trainer.sanity_checking = True
    knn.on_validation_epoch_end(trainer, model)
    assert not logged


def test_bad_k_and_unlabelled_datasets_are_refused():
    with pytest.raises(ConfigError, match=r"callbacks.online_knn.k: must be an integer >= 1, got 0"):
        OnlineKNN(k=0)
    with pytest.raises(ConfigError, match=r"callbacks.online_knn.temperature"):
        OnlineKNN(temperature=0)
    labelled = SimpleNamespace(datamodule=_stub(task="classification", num_classes=2))
    model = Encoders({"a": (5, 4)})
    with pytest.raises(ConfigError, match=r"callbacks.online_knn.k: must be below the bank's size, 40 train samples"):
        OnlineKNN(k=40).setup(labelled, model, "fit")
    OnlineKNN(k=39).setup(labelled, model, "fit")
    unlabelled = SimpleNamespace(datamodule=_stub(task="none"))
    for callback, key in [(OnlineLinearProbe(), "online_probe"), (OnlineKNN(), "online_knn")]:
        with pytest.raises(ConfigError, match=rf"callbacks.{key}: dataset StubData has no task labels") as err:
            callback.setup(unlabelled, model, "fit")
        assert "callbacks=rankme" in str(err.value)
    RankMeCallback(n=20).setup(unlabelled, model, "fit")  # RankMe needs no labels
    with pytest.raises(ConfigError, match=r"callbacks.online_probe.every_n_steps"):
        OnlineLinearProbe(every_n_steps=0)


# ---- the online linear probe ----------------------------------------------------------------------------------------
def _toy_model(task="classification", lr=0.0):
    dm = ToyDataModule(num_samples=600, modalities=["image", "vector"], batch_size=32, task=task, encoding_size=16)
    torch.manual_seed(0)
    optimizer = functools.partial(torch.optim.Adam, lr=lr)  # lr 0: the objective never moves the encoders
    return dm, UnimodalSupervised(dm.spec, {"image": MLP16, "vector": MLP16}, optimizer=optimizer)


def _fit(dm, model, callbacks, epochs=3, enable_checkpointing=False, ckpt_path=None):
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=enable_checkpointing,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )
    trainer.fit(model, dm, ckpt_path=ckpt_path)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


def test_the_probe_learns_the_task_while_the_encoders_stay_frozen():
    dm, model = _toy_model(lr=0.0)
    before = {k: v.clone() for k, v in model.encoders.state_dict().items()}
    probe = OnlineLinearProbe(lr=3e-2)
    metrics = _fit(dm, model, [probe])
    # random frozen 16-d features of the vector's class centres: a linear head finds the 3 classes (chance 1/3)
    assert metrics["online/probe_acc_vector"] > 0.75 and metrics["online/probe_acc_image"] > 0.45
    assert {"online/probe_loss_vector", "online/probe_loss_image"} <= metrics.keys()
    assert all(torch.equal(before[k], v) for k, v in model.encoders.state_dict().items())
    # the objective's own head (lr 0 too) stays at chance: what was learnt, the probe learnt
    assert metrics["val/acc_vector"] < 0.5
    assert not {id(p) for p in probe.probe.parameters()} & {id(p) for p in model.parameters()}


def test_the_regression_probe_logs_mse_and_r2():
    dm, model = _toy_model(task="regression")
    metrics = _fit(dm, model, [OnlineLinearProbe(lr=3e-2)])
    assert metrics["online/probe_r2_vector"] > 0.5 and metrics["online/probe_mse_vector"] < 0.5  # Var(y) = 2/3


def test_a_resumed_fit_restores_the_probe_from_the_checkpoint(tmp_path):
    dm, model = _toy_model(lr=1e-3)
    first = OnlineLinearProbe(lr=1e-2)
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)
    _fit(dm, model, [first, checkpoint], epochs=1, enable_checkpointing=True)
    saved = {"probe": first.probe.state_dict(), "steps": int(first.optimizer.state_dict()["state"][0]["step"])}
    dm, model = _toy_model(lr=1e-3)
    resumed, at_build = OnlineLinearProbe(lr=1e-2), {}
    build = resumed.build

    def record(*args):  # the probe as the resumed run builds it, before its first step
        build(*args)
        at_build["probe"] = {k: v.clone() for k, v in resumed.probe.state_dict().items()}
        at_build["steps"] = int(resumed.optimizer.state_dict()["state"][0]["step"])

    resumed.build = record
    _fit(dm, model, [resumed], epochs=2, ckpt_path=str(tmp_path / "last.ckpt"))
    assert saved["steps"] == 14 and at_build["steps"] == saved["steps"]  # 420 samples / 32 = 14 batches
    assert all(torch.equal(v, at_build["probe"][k]) for k, v in saved["probe"].items())


def _probe_for(model, spec, lr=1e-2) -> OnlineLinearProbe:
    probe = OnlineLinearProbe(lr=lr)
    probe.setup(SimpleNamespace(datamodule=SimpleNamespace(spec=spec)), model, "fit")
    return probe


def _batch(n=24, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {"a": torch.randn(n, 5, generator=gen), "b": torch.randn(n, 3, generator=gen), "y": torch.arange(n) % 2}


def test_a_probe_step_sends_no_gradient_to_the_encoders_and_leaves_the_run_alone():
    spec = _stub(task="classification", num_classes=2).spec
    model = Encoders({"a": (5, 4), "b": (3, 6)}).train()
    model.encoders["b"].eval()  # a submodule the objective keeps in eval mode stays so
    probe = _probe_for(model, spec)
    rng = torch.get_rng_state()
    losses = probe.train_step(model, _batch())
    assert torch.equal(torch.get_rng_state(), rng)  # building the probes drew nothing from the run's stream
    assert losses.keys() == {"a", "b"} and all(loss.ndim == 0 for loss in losses.values())
    assert all(p.grad is None for p in model.parameters())
    assert model.training and model.encoders["a"].training and not model.encoders["b"].training
    assert probe.probe["a"].weight.shape == (2, 4) and probe.probe["b"].weight.shape == (2, 6)
    assert all(p.grad is not None for p in probe.probe.parameters())


def test_the_probe_state_dict_round_trip_continues_exactly():
    spec = _stub(task="classification", num_classes=2).spec
    model = Encoders({"a": (5, 4), "b": (3, 6)})
    first = _probe_for(model, spec)
    for seed in range(3):
        first.train_step(model, _batch(seed=seed))
    state = first.state_dict()
    assert state["optimizer"]["state"]  # Adam's moments travel too
    second = _probe_for(model, spec, lr=1e-2)
    second.load_state_dict(torch.load(_saved(state), weights_only=False))  # before its probes exist: waits
    assert second.probe is None and second.state_dict().keys() == state.keys()
    for probe in (first, second):
        probe.train_step(model, _batch(seed=9))  # second: built, loaded, then stepped
    for (name, p), q in zip(first.probe.named_parameters(), second.probe.parameters()):
        assert torch.equal(p, q), name


def _saved(state):
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


# ---- DDP: the gradient average, two ranks simulated in one process ----------------------------------------------
def test_ddp_gradient_average_keeps_the_ranks_probes_equal_to_one_process_on_the_global_batch(monkeypatch):
    """``all_reduce`` stood in for: pass 1 records each rank's local (flattened) probe gradient, pass 2 hands every
    rank their sum; both ranks then step to the probe one process gets from the whole (equal-halves) batch."""
    spec = _stub(task="classification", num_classes=2).spec
    model = Encoders({"a": (5, 4), "b": (3, 6)})
    halves = [_batch(seed=r) for r in range(2)]  # each rank its own half of the global batch
    local = []
    monkeypatch.setattr(dist, "all_reduce", lambda flat, op=None: local.append(flat.clone()))
    for half in halves:
        _probe_for(model, spec).train_step(model, half, world=2)
    monkeypatch.setattr(dist, "all_reduce", lambda flat, op=None: flat.copy_(local[0] + local[1]))
    ranks = [_probe_for(model, spec) for _ in halves]
    for probe, half in zip(ranks, halves):
        probe.train_step(model, half, world=2)
    monkeypatch.undo()
    single = _probe_for(model, spec)
    single.train_step(model, {k: torch.cat([h[k] for h in halves]) for k in halves[0]})
    for name, value in single.probe.state_dict().items():
        assert torch.equal(ranks[0].probe.state_dict()[name], ranks[1].probe.state_dict()[name]), name
        torch.testing.assert_close(ranks[0].probe.state_dict()[name], value, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(local[0], local[1])  # the halves' gradients differed: the average mattered


def test_configs_name_the_callbacks():
    from omegaconf import OmegaConf

    conf = os.path.join(os.path.dirname(__file__), "..", "conf")
    every = OmegaConf.load(os.path.join(conf, "callbacks", "online_eval.yaml"))
    for name in ("online_probe", "online_knn", "rankme"):
        own = OmegaConf.load(os.path.join(conf, "callbacks", f"{name}.yaml"))
        assert own.defaults == ["default"] and own[name] == every[name]
    metric = OmegaConf.load(os.path.join(conf, "metric", "rankme.yaml")).rankme
    assert metric._target_ == "mmrep.metrics.rankme.RankMe" and metric.config_key == "metric.rankme"


# ---- composed into a run ----------------------------------------------------------------------------------------
RUS_SMALL = ["dataset=rus", "dataset.num_data=600", "dataset.batch_size=64", "trainer.max_epochs=2", "logger=csv"]
RUS_SMALL += ["trainer.log_every_n_steps=1"]


def test_callbacks_online_eval_logs_its_curves_in_a_run(run_inproc, tmp_path):
    """``callbacks=online_eval`` on a paired objective: the probe, kNN and RankMe curves are in the run's
    metrics.csv, once per validation (2 epochs), on both modalities."""
    run_inproc(
        [
            *RUS_SMALL,
            "objective=vicreg",
            "callbacks=online_eval",
            "callbacks.online_knn.n_bank=256",
            "callbacks.online_knn.n_query=128",
            "callbacks.rich_progress_bar=null",
            "metric=rankme",
            f"paths.data_dir={tmp_path / 'data'}",
        ],
        tmp_path / "run",
    )
    curves = pd.read_csv(next((tmp_path / "run").rglob("metrics.csv")))
    for name in ("probe_acc", "knn_acc", "rankme"):
        for modality in ("x0", "x1"):
            column = curves[f"online/{name}_{modality}"].dropna()
            assert len(column) == 2 and column.between(0, 12).all(), (name, modality, column)
    assert curves["online/probe_loss_x0"].notna().any()
    results = pd.read_csv(tmp_path / "run" / "results.csv")
    assert set(results[results.metric == "rankme"].modality) == {"x0", "x1"}


def test_an_online_probe_on_an_unlabelled_dataset_stops_before_training(compose, tmp_path):
    from mmrep.pipeline.build import build
    from mmrep.pipeline.checks import check_objective
    from mmrep.pipeline.fit import make_callbacks

    cfg = compose(["callbacks=online_eval", "dataset.n_cond_samples=2000"], output_dir=tmp_path)
    datamodule, model = build(cfg)
    trainer = pl.Trainer(callbacks=make_callbacks(cfg, [], []), logger=False, accelerator="cpu")
    with pytest.raises(ConfigError, match=r"^callbacks.online_probe: dataset NumericDataModule has no task labels"):
        check_objective(model, datamodule, trainer)
