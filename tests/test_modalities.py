"""The modality contract: data spec, masked sequences, per-modality encoders and their layer readout, objectives
on heterogeneous modalities (image-like tensor + masked token sequence + vector), task metrics, fit=false."""

from functools import partial

import numpy as np
import pandas as pd
import pytest
import torch

from mmrep.core.contract import DataSpec, ModalitySpec, batch_size, concat_batches
from mmrep.core.errors import ConfigError
from mmrep.data.toy import ToyDataModule
from mmrep.encoders.mlp import MLP
from mmrep.encoders.transformer import Transformer
from mmrep.metrics.features import layer_features
from mmrep.metrics.task import TaskMetrics
from mmrep.objectives.mmcl import MMCL
from mmrep.objectives.schedules import warmup_cosine

QUIET = ["callbacks.rich_progress_bar=null", "logger=none"]
ALIGN = ["metric.alignment.k=10", "metric.alignment.n=200", "metric.alignment.metrics=[mutual_knn,unbiased_cka]"]


# ---- the data contract -----------------------------------------------------------------------------------
def test_spec_rejects_reserved_names_and_incomplete_tasks():
    with pytest.raises(ValueError, match="reserved"):
        DataSpec({"y": ModalitySpec((3,))})
    with pytest.raises(ValueError, match="num_classes"):
        DataSpec({"a": ModalitySpec((3,))}, task="classification")
    spec = DataSpec({"a": ModalitySpec((3,)), "b": ModalitySpec((4, 2))})
    assert spec.check_modalities(["b"], "k") == ["b"]
    with pytest.raises(ConfigError, match="^objective.train_modalities"):
        spec.check_modalities(["a", "z"], "objective.train_modalities")
    assert ModalitySpec((4, 2)).flat_size == 8 and ModalitySpec((4, 2)).features == 2


def test_toy_batches_follow_the_contract():
    dm = ToyDataModule(num_samples=600, seed=3)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"image", "tokens", "vector", "y"} and batch_size(batch) == 128
    for name, spec in dm.spec.modalities.items():
        value = batch[name]["x"] if spec.masked else batch[name]
        assert tuple(value.shape[1:]) == spec.shape
    mask = batch["tokens"]["mask"]
    assert mask.dtype == torch.bool and mask[:, :4].all()  # every sequence has >= 4 tokens
    assert (batch["tokens"]["x"][~mask] == 0).all()  # padding is zero
    # image and vector are standardised with train statistics
    train = dm.split("train").data
    np.testing.assert_allclose(train["vector"].mean(0).numpy(), 0, atol=1e-5)
    assert abs(float(train["image"].mean())) < 1e-4 and abs(float(train["image"].std()) - 1) < 1e-2
    # held-out sets are fixed and concatenate nested inputs entry by entry
    a, b = dm.heldout("align", 50), dm.heldout("align", 50)
    joined = concat_batches(a, ["tokens"])["tokens"]
    assert joined["x"].shape == (50, 12, 6) and torch.equal(
        joined["mask"], concat_batches(b, ["tokens"])["tokens"]["mask"]
    )
    dm.spec.check_batch(batch)
    with pytest.raises(ValueError, match="do not match"):
        dm.spec.check_batch({k: v for k, v in batch.items() if k != "vector"})
    with pytest.raises(ValueError, match="'x' and 'mask'"):
        dm.spec.check_batch({**batch, "tokens": batch["tokens"]["x"]})
    with pytest.raises(ValueError, match="per-sample shape"):
        dm.spec.check_batch({**batch, "image": batch["image"][:, 0]})
    assert list(ToyDataModule(modalities=["tokens", "image"]).spec.modalities) == ["tokens", "image"]
    with pytest.raises(ConfigError, match="^dataset.modalities"):
        ToyDataModule(modalities=["image", "audio"])


# ---- encoders --------------------------------------------------------------------------------------------
def test_transformer_reads_cls_or_masked_mean_per_layer_and_ignores_padding():
    torch.manual_seed(0)
    spec = ModalitySpec((6, 3), kind="sequence", masked=True)
    x = torch.randn(4, 6, 3)
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 2 + [0] * 4, [1] * 5 + [0]], dtype=torch.bool)
    for use_cls in (False, True):
        enc = Transformer(spec, out_dim=3, depth=3, use_cls=use_cls).eval()
        layers = enc.layer_features({"x": x, "mask": mask})
        assert list(layers) == ["layer1", "layer2", "layer3"] and all(h.shape == (4, 3) for h in layers.values())
        torch.testing.assert_close(enc({"x": x, "mask": mask}), layers["layer3"])  # out_dim == width: no projection
        garbage = torch.where(mask[..., None], x, torch.full_like(x, 50.0))  # padded tokens changed
        torch.testing.assert_close(enc({"x": garbage, "mask": mask}), enc({"x": x, "mask": mask}), atol=1e-5, rtol=1e-5)
    # the masked mean by hand, on the first layer of a mean-readout encoder
    enc = Transformer(spec, out_dim=3, depth=1).eval()
    h, padding = enc._tokens({"x": x, "mask": mask})
    h = enc.layers[0](h, src_key_padding_mask=padding)
    expected = torch.stack([h[i, mask[i]].mean(0) for i in range(4)])
    torch.testing.assert_close(enc.layer_features({"x": x, "mask": mask})["layer1"], expected, atol=1e-5, rtol=1e-5)
    names, feats = layer_features(
        enc, [{"x": x[:2], "mask": mask[:2]}, {"x": x[2:], "mask": mask[2:]}], include_output=True
    )
    assert names == ["layer1", "output"] and feats[0].shape == (4, 3)
    with pytest.raises(ConfigError, match="^encoder.nhead"):
        Transformer(spec, depth=1, width=5, nhead=2)


def test_mlp_rejects_a_masked_modality_with_the_modality_key():
    spec = DataSpec({"a": ModalitySpec((6, 3), "sequence", masked=True), "b": ModalitySpec((2,))}, encoding_size=4)
    with pytest.raises(ConfigError, match="^encoders.a: an MLP takes a plain tensor"):
        MMCL(spec, {"a": partial(MLP, hidden=[4]), "b": partial(MLP, hidden=[4])})


# ---- objectives and optimisation -------------------------------------------------------------------------
def test_mmcl_contrasts_the_configured_pair_only():
    dm = ToyDataModule(num_samples=300)
    model = MMCL(
        dm.spec,
        {
            "image": partial(MLP, hidden=[8]),
            "tokens": partial(Transformer, width=6),
            "vector": partial(MLP, hidden=[8]),
        },
        pair=["vector", "tokens"],
        negatives="in_batch",
    )
    assert list(model.encoders) == ["vector", "tokens"] and model.loss_name == "contrastive"
    dm.setup()
    loss = model.loss(dm.heldout("val", 64)[0])
    assert torch.isfinite(loss)
    with pytest.raises(ConfigError, match="^objective.pair"):
        MMCL(dm.spec, {m: partial(MLP) for m in ("image", "vector")}, pair=["image", "image"])


def test_warmup_cosine_schedule():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = warmup_cosine(opt, total_steps=10, warmup_steps=4)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lrs[4:] == pytest.approx([0.5 * (1 + np.cos(np.pi * k / 6)) for k in range(6)])


# ---- task metrics: known answers -------------------------------------------------------------------------
class _FixedPredictor(torch.nn.Module):
    def __init__(self, outputs):
        super().__init__()
        self.outputs, self.device = outputs, torch.device("cpu")

    def predict(self, batch):
        return {"a": self.outputs[batch["i"]]}


class _Data:
    def __init__(self, task, y, num_classes=None):
        self.spec = DataSpec({"a": ModalitySpec((1,))}, task=task, num_classes=num_classes)
        self.y = y

    def heldout(self, split, n=None):
        idx = torch.arange(len(self.y))
        return [{"i": idx[:3], "y": self.y[:3]}, {"i": idx[3:], "y": self.y[3:]}]


def test_task_metrics_known_answers():
    y = torch.tensor([0.5, -1.0, 0.0, 2.0, -0.5])
    pred = torch.tensor([[1.0], [-2.0], [0.3], [1.0], [0.5]])
    rows = TaskMetrics(splits=["test"])(_FixedPredictor(pred), _Data("regression", y)).set_index("metric").value
    assert rows["mae"] == pytest.approx(np.mean([0.5, 1.0, 0.3, 1.0, 1.0]))
    assert rows["pearson"] == pytest.approx(np.corrcoef(pred[:, 0].numpy(), y.numpy())[0, 1], rel=1e-5)
    # sign accuracy: pred > 0 vs label > 0, a zero label counts as negative: hits at 0, 1, 3 → 3/5
    assert rows["sign_accuracy"] == pytest.approx(0.6)
    logits = torch.tensor([[2.0, 0, 0], [0, 2.0, 0], [0, 0, 2.0], [2.0, 0, 0], [0, 2.0, 0]])
    labels = torch.tensor([0, 1, 1, 0, 2])  # predictions 0,1,2,0,1
    rows = (
        TaskMetrics(splits=["test"])(_FixedPredictor(logits), _Data("classification", labels, 3))
        .set_index("metric")
        .value
    )
    assert rows["accuracy"] == pytest.approx(3 / 5)
    f1 = [1.0, 2 * 1 / (2 * 1 + 1 + 1), 0.0]  # per class 2TP / (2TP + FP + FN)
    assert rows["f1"] == pytest.approx(np.mean(f1))
    with pytest.raises(ConfigError, match="^metric.task.metrics"):
        TaskMetrics(metrics=["mae"])(_FixedPredictor(logits), _Data("classification", labels, 3))


# ---- end to end on heterogeneous modalities --------------------------------------------------------------
def test_unimodal_on_three_heterogeneous_modalities_with_task_and_alignment(run_inproc, tmp_path):
    results, _ = run_inproc(
        ["dataset=toy", "objective=unimodal", "metric=task_alignment", "trainer.max_epochs=3", *ALIGN, *QUIET], tmp_path
    )
    acc = results[(results.metric == "accuracy") & (results.split == "test")].set_index("modality").value
    assert set(acc.index) == {"image", "tokens", "vector"} and (acc > 0.6).all(), acc  # 3 classes: chance 1/3
    best = results[results["aggregate"] == "max"]
    assert set(best.modality) == {"image|tokens", "image|vector", "tokens|vector"}  # every pair, one row set each
    assert set(best[best.modality == "image|tokens"].layer_b) <= {"layer1", "layer2"}  # the transformer's readout
    assert results[results.metric == "loss"].target.tolist() == ["cross_entropy"]
    assert (tmp_path / "results.csv").is_file() and list((tmp_path / "checkpoints").glob("*.ckpt"))


def test_mmcl_on_an_image_and_a_masked_sequence(run_inproc, tmp_path):
    results, _ = run_inproc(
        [
            "dataset=toy",
            "dataset.modalities=[image,tokens]",
            "objective=mmcl",
            "objective.negatives=in_batch",
            "objective.similarity=cosine",
            "objective.temperature=0.1",
            "trainer.max_epochs=2",
            "metric=alignment",
            *ALIGN,
            *QUIET,
        ],
        tmp_path,
    )
    assert set(results.dropna(subset=["aggregate"]).modality) == {"image|tokens"}
    loss = results[results.metric == "loss"]
    assert loss.target.tolist() == ["contrastive"] and loss.value.iloc[0] < np.log(128)  # below chance InfoNCE


def test_regression_task_uses_l1_and_regression_metrics(run_inproc, tmp_path):
    results, _ = run_inproc(
        [
            "dataset=toy",
            "dataset.task=regression",
            "dataset.modalities=[vector]",
            "objective=unimodal",
            "metric=task",
            "trainer.max_epochs=3",
            *QUIET,
        ],
        tmp_path,
    )
    test = results[results.split == "test"].set_index("metric").value
    assert set(test.index) == {"mae", "pearson", "sign_accuracy"}
    assert test["pearson"] > 0.5 and test["sign_accuracy"] > 0.6
    assert results[results.metric == "loss"].target.tolist() == ["l1"]


def test_fit_false_evaluates_a_checkpoint_or_the_encoders_as_built(run_inproc, tmp_path):
    trained, _ = run_inproc(
        ["dataset=toy", "objective=unimodal", "metric=task", "trainer.max_epochs=2", *QUIET], tmp_path / "train"
    )
    evaluated, _ = run_inproc(
        [
            "dataset=toy",
            "objective=unimodal",
            "metric=task",
            "fit=false",
            f"ckpt_path={tmp_path / 'train' / 'checkpoints' / 'last.ckpt'}",
            *QUIET,
        ],
        tmp_path / "eval",
    )
    task_rows = trained[trained.metric != "loss"].reset_index(drop=True)
    pd.testing.assert_frame_equal(
        task_rows[["metric", "modality", "split", "value"]], evaluated[["metric", "modality", "split", "value"]]
    )  # best weights restored
    assert not (tmp_path / "eval" / "checkpoints").exists()
    frozen, _ = run_inproc(
        ["dataset=toy", "objective=frozen", "fit=false", "metric=alignment", *ALIGN, *QUIET], tmp_path / "frozen"
    )
    assert set(frozen.dropna(subset=["aggregate"]).modality) == {"image|tokens", "image|vector", "tokens|vector"}
    assert not (frozen.metric == "loss").any()
    with pytest.raises(ConfigError, match="^objective=frozen: nothing to train"):
        run_inproc(["dataset=toy", "objective=frozen", "metric=alignment", *ALIGN, *QUIET], tmp_path / "fit")
    with pytest.raises(ConfigError, match="^ckpt_path: no such checkpoint"):
        run_inproc(["dataset=toy", "fit=false", f"ckpt_path={tmp_path / 'nope.ckpt'}", *QUIET], tmp_path / "bad")


def test_epoch_based_schedule_needs_no_max_steps(run_inproc, tmp_path):
    # 2 epochs × 17 batches (2,100 train samples, batch 128): the cosine schedule spans the 34 estimated steps
    run_inproc(
        [
            "dataset=toy",
            "dataset.modalities=[image,vector]",
            "objective=mmcl",
            "objective.negatives=in_batch",
            "objective.scheduler.warmup_steps=3",
            "trainer.max_epochs=2",
            "trainer.log_every_n_steps=1",
            "metric=alignment",
            *ALIGN,
            "callbacks.rich_progress_bar=null",
        ],
        tmp_path,
    )
    logged = pd.read_csv(tmp_path / "csv" / "metrics.csv")
    lr = logged.dropna(subset=["lr-Adam"]).set_index("step")["lr-Adam"]
    assert lr.loc[0] == pytest.approx(3e-3 / 3) and lr.loc[2] == pytest.approx(3e-3)
    assert lr.index.max() == 33 and lr.loc[33] == pytest.approx(3e-3 * 0.5 * (1 + np.cos(np.pi * 30 / 31)))
