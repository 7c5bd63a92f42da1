"""Image–text building blocks (crossmodal_mislaignment main_mpi3dreal.py): NT-Xent against a literal reference, the
plain-torch ResNet-18, the 2-D text CNN and a small CNN."""

import math

import pytest
import torch
import torch.nn.functional as F

from mmrep.core.contract import ModalitySpec
from mmrep.core.errors import ConfigError
from mmrep.encoders.cnn import ResNet18
from mmrep.encoders.text_cnn import TextCNN2D
from mmrep.metrics.features import layer_features
from mmrep.objectives.losses import nt_xent


def nt_xent_reference(a, b, tau):
    """SimCLR's NT-Xent recipe, element by element: 2N rows, candidates = every other item, positive = the partner."""
    items = torch.cat([a, b])
    n, total = a.shape[0], 0.0
    for i in range(2 * n):
        partner = i + n if i < n else i - n
        sims = [F.cosine_similarity(items[i], items[j], dim=0) / tau for j in range(2 * n) if j != i]
        others = [j for j in range(2 * n) if j != i]
        total = total - (sims[others.index(partner)] - torch.logsumexp(torch.stack(sims), 0))
    return total / (2 * n)


@pytest.mark.parametrize("tau", [1.0, 0.3])
def test_nt_xent_matches_the_literal_reference_with_gradients(tau):
    torch.manual_seed(0)
    a, b = (
        torch.randn(7, 5, dtype=torch.float64, requires_grad=True),
        torch.randn(7, 5, dtype=torch.float64, requires_grad=True),
    )
    ours, ref = nt_xent(a, b, tau), nt_xent_reference(a, b, tau)
    torch.testing.assert_close(ours, ref)
    ga, gb = torch.autograd.grad(ours, (a, b))
    ra, rb = torch.autograd.grad(ref, (a, b))
    torch.testing.assert_close(ga, ra) and torch.testing.assert_close(gb, rb)
    torch.testing.assert_close(nt_xent(b, a, tau), ours)  # the original's symmetrisation changes nothing
    # perfectly aligned, well separated pairs: the loss approaches its floor log(1 + (2N-2)·e^{-2/τ}... ) from above
    e = torch.eye(7, dtype=torch.float64)
    assert nt_xent(e, e, 0.05) < 1e-6 and nt_xent(e, e.roll(1, 0), 0.05) > 10


def test_resnet18_is_torchvisions_architecture_with_the_spec_head():
    enc = ResNet18(ModalitySpec((3, 64, 64), "image"), out_dim=5)
    # torchvision resnet18: 11,689,512 parameters with 1000 classes; with 100 classes 11,227,812; + Linear(100, 5)
    assert sum(p.numel() for p in enc.parameters()) == 11_227_812 + 100 * 5 + 5
    x = torch.randn(2, 3, 64, 64)
    assert enc(x).shape == (2, 5)
    names, feats = layer_features(enc, [x])
    assert names == ["stage1", "stage2", "stage3", "stage4", "fc"] and [f.shape[1] for f in feats] == [
        64,
        128,
        256,
        512,
        100,
    ]
    with pytest.raises(ConfigError, match="needs \\(C, H, W\\)"):
        ResNet18(ModalitySpec((10,)), 3)


@pytest.mark.parametrize("length, channels", [(4, [25]), (10, [25, 50]), (164, [25, 50, 100, 200, 200, 200])])
def test_text_cnn_channel_schedule_and_length_bounds(length, channels):
    enc = TextCNN2D(ModalitySpec((length, 30), "sequence"), out_dim=3)
    assert [b[0].out_channels for b in enc.blocks] == channels
    h, w = length, 128
    for _ in channels:
        h, w = h // 2, w // 2
    assert enc.out.in_features == channels[-1] * h * w
    x = F.one_hot(torch.randint(0, 30, (2, length)), 30).float()
    assert enc(x).shape == (2, 3) and enc({"x": x, "mask": torch.ones(2, length, dtype=torch.bool)}).shape == (2, 3)
    assert list(enc.layer_features(x)) == [f"conv{l}" for l in range(1, len(channels) + 1)]


@pytest.mark.parametrize("length", [3, 165])
def test_text_cnn_rejects_lengths_outside_the_originals_bounds(length):
    with pytest.raises(ConfigError, match="4 <= L <= 164"):
        TextCNN2D(ModalitySpec((length, 30), "sequence"), out_dim=3)


def test_small_cnn_and_nt_xent_train_end_to_end(run_inproc, tmp_path):
    results, _ = run_inproc(
        [
            "dataset=toy",
            "dataset.modalities=[image,tokens]",
            "encoder@encoders.image=small_cnn",
            "encoder@encoders.tokens=text_cnn2d",
            "objective=mmcl",
            "objective.loss=nt_xent",
            "objective.temperature=0.5",
            "trainer.max_epochs=2",
            "metric=probe_alignment",
            "metric.alignment.k=10",
            "metric.alignment.n=200",
            "metric.alignment.metrics=[unbiased_cka]",
            "callbacks.rich_progress_bar=null",
            "logger=none",
        ],
        tmp_path,
    )
    loss = results[results.metric == "loss"].value.iloc[0]
    assert loss < math.log(2 * 128 - 1)  # below the chance level of NT-Xent with 2N - 1 candidates
    probe = results[(results.probe == "linear") & (results.split == "test") & (results.metric == "accuracy")]
    assert set(probe.modality) == {"image", "tokens"} and (probe.value > 0.5).all()  # 3 classes: chance 1/3
    best = results[results["aggregate"] == "max"]
    assert set(best.layer_a) <= {"block1", "block2", "block3"} and set(best.layer_b) <= {"conv1", "conv2"}
