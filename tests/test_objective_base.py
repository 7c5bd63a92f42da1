"""The objective bases: a new paired objective is its loss and its hyper-parameters; the base carries the pair, the
one-pair batches, the non-finite loss, the ``val/loss`` contract and the DDP gather (objectives/base.py)."""

import functools
import warnings

import pytest
import pytorch_lightning as pl
import torch

from mmrep.core.contract import DataSpec, ModalitySpec
from mmrep.core.errors import ConfigError
from mmrep.encoders.mlp import MLP
from mmrep.objectives import base
from mmrep.objectives.base import PairedObjective
from mmrep.objectives.frozen import FrozenEncoders
from mmrep.objectives.unimodal import UnimodalSupervised
from mmrep.pipeline.build import build, instantiate
from mmrep.pipeline.errors import one_line_message

NUMERIC = [
    "dataset.batch_size=16",
    "dataset.steps_per_epoch=4",
    "dataset.n_val=32",
    "dataset.n_cond_samples=2000",
    "encoders.x.hidden=[8]",
    "encoders.t.hidden=[8]",
]
SPEC = DataSpec(modalities={"x": ModalitySpec((6,)), "t": ModalitySpec((4,))}, task="none", encoding_size=3)
MLP8 = functools.partial(MLP, hidden=[8], relative=False)


class Align(PairedObjective):
    """A whole objective: squared distance of the pair plus a spread term over the batch (in-batch: ≥ 2 pairs)."""

    loss_name = "align"
    finite_hint = "lower objective.weight"

    def __init__(self, data, encoders, encoding_size=None, pair=None, gather="global", weight: float = 0.1, **opt):
        super().__init__(data, encoders, encoding_size, pair, gather, **opt)
        if weight < 0:
            raise ConfigError(f"objective.weight: must be >= 0, got {weight}")

    def pair_loss(self, h_a, h_b):  # (N, d) each → scalar
        spread = torch.cdist(h_a, h_a).mean()
        return (h_a - h_b).square().sum(1).mean() - self.hparams.weight * spread


class Diverges(Align):
    def pair_loss(self, h_a, h_b):
        return super().pair_loss(h_a, h_b) * float("nan")


def _batch(n: int) -> dict:
    gen = torch.Generator().manual_seed(n)
    return {"x": torch.randn(n, 6, generator=gen), "t": torch.randn(n, 4, generator=gen)}


def test_a_loss_and_a_config_make_an_objective_that_trains_and_logs_val_loss(compose, tmp_path):
    cfg = compose(NUMERIC, output_dir=tmp_path)
    datamodule, _ = build(cfg)
    torch.manual_seed(0)
    model = Align(datamodule.spec, instantiate(cfg.encoders, _convert_="all"), weight=0.05)
    assert list(model.encoders) == ["x", "t"] and model.pair == ("x", "t")
    assert dict(model.hparams) == {
        "encoding_size": None,
        "pair": ("x", "t"),  # resolved, not the None given
        "gather": "global",
        "weight": 0.05,
    }
    model.check_data(datamodule, 1)
    before = [p.detach().clone() for p in model.parameters()]
    trainer = pl.Trainer(
        max_steps=4,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=1,
        num_sanity_val_steps=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, datamodule=datamodule)
    assert trainer.global_step == 4
    metrics = trainer.callback_metrics
    assert torch.isfinite(metrics["train/loss"]) and torch.isfinite(metrics["val/loss"])  # an epoch = 4 steps
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_a_one_pair_batch_is_skipped_when_the_loss_needs_the_batch():
    model = Align(SPEC, {"x": MLP8, "t": MLP8})
    assert model.training_step(_batch(1), 0) is None and model.validation_step(_batch(1), 0) is None
    assert torch.isfinite(model.training_step(_batch(2), 0))
    alone = Align(SPEC, {"x": MLP8, "t": MLP8})
    alone.batch_dependent = lambda fresh_negatives: False  # a loss of each pair alone: one pair is a batch
    assert torch.isfinite(alone.training_step(_batch(1), 0))


def test_check_data_asks_for_two_pairs_per_gathered_batch():
    class Data:
        batch_size = 1

    with pytest.raises(ConfigError, match=r"^dataset\.batch_size: objective=align contrasts each pair with the other"):
        Align(SPEC, {"x": MLP8, "t": MLP8}).check_data(Data(), 1)
    Align(SPEC, {"x": MLP8, "t": MLP8}).check_data(Data(), 2)  # global gather: 2 devices × 1 pair
    with pytest.raises(ConfigError, match=r"objective\.gather=local; at least 2 are needed\)$"):
        Align(SPEC, {"x": MLP8, "t": MLP8}, gather="local").check_data(Data(), 2)


def test_a_nonfinite_loss_stops_with_one_line_naming_the_step_and_the_hint():
    with pytest.raises(FloatingPointError) as err:
        Diverges(SPEC, {"x": MLP8, "t": MLP8}).training_step(_batch(4), 0)
    assert one_line_message(err.value, None) == "non-finite training loss (nan) at step 0; lower objective.weight"
    spec = DataSpec({"x0": ModalitySpec((3,)), "x1": ModalitySpec((3,))}, task="classification", num_classes=2)
    unimodal = UnimodalSupervised(spec, {"x0": MLP8, "x1": MLP8}, encoding_size=4)
    nan = {"x0": torch.full((4, 3), float("nan")), "x1": torch.zeros(4, 3), "y": torch.zeros(4, dtype=torch.long)}
    with pytest.raises(FloatingPointError, match=r"^non-finite training loss \(nan\) at step 0; the batch's input x0 "):
        unimodal.training_step(nan, 0)  # NaN inputs: the data are named, not the optimiser
    with pytest.raises(ConfigError, match="^objective=frozen: nothing to train"):
        FrozenEncoders(spec, {"x0": MLP8, "x1": MLP8}, encoding_size=4).training_step(nan, 0)


@pytest.mark.parametrize(
    "settings, key",
    [
        (dict(pair=["x", "x"]), "objective.pair"),
        (dict(pair=["x", "z"]), "objective.pair"),
        (dict(pair=["x"]), "objective.pair"),
        (dict(gather="all"), "objective.gather"),
        (dict(weight=-1), "objective.weight"),
    ],
)
def test_bad_settings_name_their_key(settings, key):
    with pytest.raises(ConfigError, match=f"^{key}: "):
        Align(SPEC, {"x": MLP8, "t": MLP8}, **settings)


def test_global_gather_hands_the_loss_every_rank_rows_and_scales_the_gradient(monkeypatch):
    """Under DDP (here: two ranks faked) ``global`` gathers the views and multiplies the training loss by the world
    size; ``local`` does neither (tests/test_ddp_contrastive.py runs the real thing for MMCL)."""
    gathered = []

    def fake_gather(*tensors):
        gathered.append(len(tensors))
        return tuple(torch.cat([t, t.detach()]) for t in tensors)  # this rank's rows, then "the other rank's"

    monkeypatch.setattr(base, "gather_rows", fake_gather)
    monkeypatch.setattr(base, "world_size", lambda: 2)
    torch.manual_seed(0)
    model = Align(SPEC, {"x": MLP8, "t": MLP8})
    step = model.step_loss(_batch(3))
    assert gathered == [2] and step.n == 6  # the global batch
    assert torch.equal(model.training_step(_batch(3), 0), 2 * step.loss)
    torch.manual_seed(0)
    local = Align(SPEC, {"x": MLP8, "t": MLP8}, gather="local")
    assert local.step_loss(_batch(3)).n == 3 and torch.equal(local.training_step(_batch(3), 0), local.loss(_batch(3)))
    assert gathered == [2, 2]  # local gathered nothing


def test_a_paired_objective_without_a_loss_says_what_to_implement():
    class NoLoss(PairedObjective):
        pass

    with pytest.raises(NotImplementedError, match="NoLoss: implement pair_loss"):
        NoLoss(SPEC, {"x": MLP8, "t": MLP8}).step_loss(_batch(3))
