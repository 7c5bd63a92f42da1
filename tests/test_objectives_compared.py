"""The objectives researchers compare (CLIP, SigLIP, VICReg, Barlow Twins, supervised + contrastive): each loss against
a hand-computed case and an independent double-loop reference (values and gradients), their settings' errors, and a
short training run on a shared-latent toy problem in which each lowers its loss and beats untrained encoders on a
linear probe. DDP: tests/test_ddp_contrastive.py; few-step training on every paired dataset: tests/test_compose.py."""

import functools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression

from mmrep.core.contract import DataSpec, ModalitySpec
from mmrep.core.errors import ConfigError
from mmrep.encoders.mlp import MLP
from mmrep.objectives.barlow_twins import BarlowTwins, barlow_twins_terms
from mmrep.objectives.clip import CLIP, clip_loss
from mmrep.objectives.losses import symmetric_info_nce
from mmrep.objectives.mmcl_supervised import MMCLSupervised
from mmrep.objectives.siglip import SigLIP, siglip_loss
from mmrep.objectives.vicreg import VICReg, vicreg_terms

OBJECTIVES = {
    "clip": CLIP,
    "siglip": SigLIP,
    "vicreg": VICReg,
    "barlow_twins": BarlowTwins,
    "mmcl_supervised": MMCLSupervised,
}


# ---- independent references: python loops over float64 scalars (autograd gives their gradients) --------------------
def _cos(u, v):
    return sum(a * b for a, b in zip(u, v)) / (torch.sqrt(sum(a * a for a in u)) * torch.sqrt(sum(b * b for b in v)))


def _rows(h):
    return [list(r) for r in h.unbind(0)]


def ref_clip(h_a, h_b, scale):
    a, b, n = _rows(h_a), _rows(h_b), h_a.shape[0]
    s = [[scale * _cos(a[i], b[j]) for j in range(n)] for i in range(n)]
    a_to_b = sum(-s[i][i] + torch.log(sum(torch.exp(s[i][j]) for j in range(n))) for i in range(n)) / n
    b_to_a = sum(-s[i][i] + torch.log(sum(torch.exp(s[j][i]) for j in range(n))) for i in range(n)) / n
    return (a_to_b + b_to_a) / 2


def ref_siglip(h_a, h_b, scale, bias):
    a, b, n = _rows(h_a), _rows(h_b), h_a.shape[0]
    total = 0
    for i in range(n):
        for j in range(n):
            z = 1.0 if i == j else -1.0
            total = total + torch.log(1 + torch.exp(-z * (scale * _cos(a[i], b[j]) + bias)))
    return total / n


def _mean(xs):
    return sum(xs) / len(xs)


def ref_vicreg(h_a, h_b, lam=25.0, mu=25.0, nu=1.0, gamma=1.0, eps=1e-4):
    n, d = h_a.shape

    def var_cov(h):
        cols = [[h[k, j] for k in range(n)] for j in range(d)]
        means = [_mean(c) for c in cols]
        cov = [
            [sum((cols[i][k] - means[i]) * (cols[j][k] - means[j]) for k in range(n)) / (n - 1) for j in range(d)]
            for i in range(d)
        ]
        hinge = _mean([torch.relu(gamma - torch.sqrt(cov[j][j] + eps)) for j in range(d)])
        off = sum(cov[i][j] ** 2 for i in range(d) for j in range(d) if i != j) / d
        return hinge, off

    inv = sum((h_a[k, j] - h_b[k, j]) ** 2 for k in range(n) for j in range(d)) / (n * d)
    (va, ca), (vb, cb) = var_cov(h_a), var_cov(h_b)
    return lam * inv + mu * (va + vb) / 2 + nu * (ca + cb)


def ref_barlow(h_a, h_b, lambd=0.0051, eps=1e-5):
    n, d = h_a.shape

    def standardised(h):
        out = []
        for j in range(d):
            col = [h[k, j] for k in range(n)]
            m = _mean(col)
            sd = torch.sqrt(_mean([(x - m) ** 2 for x in col]) + eps)
            out.append([(x - m) / sd for x in col])
        return out  # [dimension][sample]

    za, zb = standardised(h_a), standardised(h_b)
    c = [[sum(za[i][k] * zb[j][k] for k in range(n)) / n for j in range(d)] for i in range(d)]
    return sum((1 - c[i][i]) ** 2 for i in range(d)) + lambd * sum(
        c[i][j] ** 2 for i in range(d) for j in range(d) if i != j
    )


def _pair(n=5, d=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    h_a = torch.randn(n, d, generator=gen, dtype=torch.float64)
    return h_a, (h_a + 0.7 * torch.randn(n, d, generator=gen, dtype=torch.float64))


def _vicreg(h_a, h_b):
    t = vicreg_terms(h_a, h_b)
    return 25 * t["invariance"] + 25 * t["variance"] + t["covariance"]


def _barlow(h_a, h_b):
    t = barlow_twins_terms(h_a, h_b)
    return t["invariance"] + 0.0051 * t["redundancy"]


LOSSES = {  # name: (ours, reference), each of (h_a, h_b, *loss parameters)
    "clip": (clip_loss, ref_clip, [2.5]),
    "siglip": (siglip_loss, ref_siglip, [4.0, -1.5]),
    "vicreg": (_vicreg, ref_vicreg, []),
    "barlow_twins": (_barlow, ref_barlow, []),
}


@pytest.mark.parametrize("name", list(LOSSES))
def test_each_loss_and_its_gradients_match_a_double_loop_reference(name):
    ours, reference, params = LOSSES[name]
    h_a, h_b = (h.requires_grad_() for h in _pair())
    p = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in params]
    value = ours(h_a, h_b, *p)
    expected = reference(h_a, h_b, *p)
    assert value.item() == pytest.approx(expected.item(), rel=1e-10)
    got = torch.autograd.grad(value, [h_a, h_b, *p])
    want = torch.autograd.grad(expected, [h_a, h_b, *p])
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-12)


def test_hand_computed_cases():
    e = torch.eye(2, dtype=torch.float64)  # two orthogonal unit items, each its own partner
    s, b = 3.0, -2.0
    # CLIP: each row's logits are [s, 0] → −log(eˢ / (eˢ + 1)) = log(1 + e⁻ˢ), the same both ways
    assert float(clip_loss(e, e, s)) == pytest.approx(math.log1p(math.exp(-s)))
    # SigLIP: 2 matched logits s + b, 2 unmatched b: −(2 log σ(s + b) + 2 log σ(−b)) / 2
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert float(siglip_loss(e, e, s, b)) == pytest.approx(-math.log(sig(s + b)) - math.log(sig(-b)))
    # VICReg of z = [[1, 0], [−1, 0]] with itself: no invariance cost; dimension 0 has variance 2 (std > γ = 1), dim 1
    # none (std = √ε = 0.01, hinge 0.99): variance term (0 + 0.99) / 2 per branch; covariance [[2, 0], [0, 0]]: 0
    z = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    t = vicreg_terms(z, z)
    assert float(t["invariance"]) == 0 and float(t["covariance"]) == 0
    assert float(t["variance"]) == pytest.approx(0.99 / 2)
    # Barlow Twins of two perfectly anti-correlated dimensions: C = [[1, −1], [−1, 1]] / (1 + ε)
    z = torch.tensor([[1.0, -1.0], [-1.0, 1.0]], dtype=torch.float64)
    t = barlow_twins_terms(z, z)
    c = 1 / (1 + 1e-5)
    assert float(t["invariance"]) == pytest.approx(2 * (1 - c) ** 2) and float(t["redundancy"]) == pytest.approx(
        2 * c**2
    )


SPEC = DataSpec(
    modalities={"x": ModalitySpec((6,)), "t": ModalitySpec((4,))}, task="classification", num_classes=3, encoding_size=3
)
MLP8 = functools.partial(MLP, hidden=[8], relative=False)


def _batch(n=10, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {"x": torch.randn(n, 6, generator=gen), "t": torch.randn(n, 4, generator=gen), "y": torch.arange(n) % 3}


def test_the_objectives_use_their_loss_on_the_encoders_embeddings():
    torch.manual_seed(0)
    batch = _batch()
    clip = CLIP(SPEC, {"x": MLP8, "t": MLP8}, temperature=0.5)
    h = clip.encode(batch)
    assert float(clip.step_loss(batch).loss) == pytest.approx(float(clip_loss(h["x"], h["t"], 2.0)), rel=1e-6)
    assert float(clip.logit_scale()) == pytest.approx(2.0) and clip.log_logit_scale.requires_grad
    assert not CLIP(SPEC, {"x": MLP8, "t": MLP8}, learn_temperature=False).log_logit_scale.requires_grad
    capped = CLIP(SPEC, {"x": MLP8, "t": MLP8}, temperature=0.5, max_logit_scale=2.0)
    with torch.no_grad():
        capped.log_logit_scale.fill_(5.0)  # 1/τ = e⁵ learnt past the cap: the loss uses the cap
    assert float(capped.logit_scale()) == pytest.approx(2.0)

    siglip = SigLIP(SPEC, {"x": MLP8, "t": MLP8}, scale=3.0, bias=-1.0)
    h = siglip.encode(batch)
    assert float(siglip.step_loss(batch).loss) == pytest.approx(float(siglip_loss(h["x"], h["t"], 3.0, -1.0)), rel=1e-6)

    vic = VICReg(SPEC, {"x": MLP8, "t": MLP8}, sim_coeff=2.0, std_coeff=3.0, cov_coeff=4.0)
    step = vic.step_loss(batch)
    terms = vicreg_terms(*vic.encode(batch).values())
    assert set(step.parts) == {"invariance", "variance", "covariance"}
    expected = 2 * terms["invariance"] + 3 * terms["variance"] + 4 * terms["covariance"]
    assert float(step.loss) == pytest.approx(float(expected), rel=1e-6)
    assert float(vic.pair_loss(*vic.encode(batch).values())) == pytest.approx(float(step.loss), rel=1e-6)  # from terms

    bt = BarlowTwins(SPEC, {"x": MLP8, "t": MLP8}, lambd=0.5)
    step = bt.step_loss(batch)
    assert set(step.parts) == {"invariance", "redundancy"}
    assert float(step.loss) == pytest.approx(float(step.parts["invariance"] + 0.5 * step.parts["redundancy"]), rel=1e-6)


def test_supervised_plus_contrastive_is_infonce_plus_lambda_times_the_heads_cross_entropy():
    torch.manual_seed(0)
    batch = _batch()
    model = MMCLSupervised(SPEC, {"x": MLP8, "t": MLP8}, weight=0.3, negatives="in_batch")
    step = model.step_loss(batch)
    h = model.encode(batch)
    contrastive = symmetric_info_nce(h["x"], h["t"], similarity="sq_euclidean", temperature=1.0)
    ce = {m: F.cross_entropy(model.heads[m](h[m]), batch["y"]) for m in ("x", "t")}
    assert float(step.loss) == pytest.approx(float(contrastive + 0.3 * (ce["x"] + ce["t"])), rel=1e-6)
    assert set(step.parts) == {"contrastive", "supervised_x", "supervised_t"}
    assert model.heads["x"].out_features == 3 and model.loss_name == "contrastive_supervised"
    # regression: L1 heads of the target's width
    reg = DataSpec(modalities=SPEC.modalities, task="regression", target_dim=1, encoding_size=3)
    model = MMCLSupervised(reg, {"x": MLP8, "t": MLP8}, weight=1.0, negatives="in_batch")
    y = torch.randn(10)
    step = model.step_loss({**batch, "y": y})
    h = model.encode(batch)
    assert float(step.parts["supervised_t"]) == pytest.approx(
        float((model.heads["t"](h["t"]).squeeze(1) - y).abs().mean())
    )


@pytest.mark.parametrize(
    "cls, settings, key",
    [
        (CLIP, dict(temperature=0), "objective.temperature"),
        (CLIP, dict(temperature=0.07, max_logit_scale=10), "objective.max_logit_scale"),
        (SigLIP, dict(scale=-1), "objective.scale"),
        (VICReg, dict(std_coeff=-1), "objective.std_coeff"),
        (VICReg, dict(eps=0), "objective.eps"),
        (BarlowTwins, dict(lambd=-0.1), "objective.lambd"),
        (MMCLSupervised, dict(weight=-1), "objective.weight"),
        (CLIP, dict(gather="all"), "objective.gather"),
    ],
)
def test_bad_settings_name_their_key(cls, settings, key):
    with pytest.raises(ConfigError, match=f"^{key}: "):
        cls(SPEC, {"x": MLP8, "t": MLP8}, **settings)


def test_supervised_plus_contrastive_needs_labels():
    unlabelled = DataSpec(modalities=SPEC.modalities, task="none", encoding_size=3)
    with pytest.raises(ConfigError, match=r"^objective=mmcl_supervised: needs a dataset with labels .*task='none'"):
        MMCLSupervised(unlabelled, {"x": MLP8, "t": MLP8})


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_a_one_pair_batch_is_skipped(name):
    torch.manual_seed(0)
    model = OBJECTIVES[name](
        SPEC, {"x": MLP8, "t": MLP8}, **({"negatives": "in_batch"} if name == "mmcl_supervised" else {})
    )
    assert model.step_loss(_batch(1)) is None and model.step_loss(_batch(2)) is not None


# ---- short training on a shared-latent problem ---------------------------------------------------------------------
def _shared_latent_data(n, seed):
    """x and t each mix a 2-d shared latent z with 6 louder modality-specific dimensions (a fixed random rotation per
    modality); the label is z's quadrant. Untrained encoders to 4 dimensions keep little of z (probe ≈ chance, 0.29
    measured); encoders that find the shared part keep the label (0.92–0.96 measured after 300 steps)."""
    gen = torch.Generator().manual_seed(seed)
    rot = {
        m: torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(i)))[0] for i, m in enumerate("xt")
    }
    z = torch.randn(n, 2, generator=gen)
    views = {m: torch.cat([z, 3 * torch.randn(n, 6, generator=gen)], 1) @ rot[m] for m in "xt"}
    y = (z[:, 0] > 0).long() * 2 + (z[:, 1] > 0).long()
    return {**views, "y": y}


def _probe_accuracy(model, train, test):
    with torch.no_grad():
        fit, score = model.encode(train)["x"].numpy(), model.encode(test)["x"].numpy()
    probe = LogisticRegression(max_iter=2000).fit(fit, train["y"].numpy())
    return probe.score(score, test["y"].numpy())


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_training_lowers_the_loss_and_beats_untrained_encoders_on_a_probe(name):
    spec = DataSpec(
        modalities={m: ModalitySpec((8,)) for m in "xt"}, task="classification", num_classes=4, encoding_size=4
    )
    torch.manual_seed(0)
    encoder = functools.partial(MLP, hidden=[32], relative=False)
    model = OBJECTIVES[name](
        spec, {"x": encoder, "t": encoder}, **({"negatives": "in_batch"} if name == "mmcl_supervised" else {})
    )
    train, test = _shared_latent_data(2048, 1), _shared_latent_data(1024, 2)
    untrained = _probe_accuracy(model, train, test)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for step in range(300):
        rows = torch.randint(0, 2048, (128,), generator=torch.Generator().manual_seed(step))
        loss = model.step_loss({k: v[rows] for k, v in train.items()}).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    trained = _probe_accuracy(model, train, test)
    assert np.mean(losses[-20:]) < np.mean(losses[:20]) - 0.05 * abs(np.mean(losses[:20])), (losses[:3], losses[-3:])
    assert trained > untrained + 0.15 and trained > 0.8, (name, untrained, trained)
