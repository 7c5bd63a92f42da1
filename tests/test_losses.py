"""The fast InfoNCE equals a slow, literal implementation of the spec's formula (numeric-misalignment.md §1.7)."""

import math

import pytest
import torch

from mmrep.objectives.losses import info_nce, symmetric_info_nce


def naive_lp_infonce(a, b, c, tau=1.0):
    """Literal per-sample loops, float64: L_i = pos_i/τ + log(1/(N+1) [Σ_j exp(-neg_ij/τ) + exp(-pos_i/τ)])."""
    total = 0.0
    n = a.shape[0]
    for i in range(n):
        pos = float(((a[i] - b[i]) ** 2).sum())
        terms = [math.exp(-float(((a[i] - c[j]) ** 2).sum()) / tau) for j in range(c.shape[0])]
        terms.append(math.exp(-pos / tau))
        total += pos / tau + math.log(sum(terms) / (c.shape[0] + 1))
    return total / n


def naive_in_batch(a, b, sim, tau):
    total = 0.0
    n = a.shape[0]
    for i in range(n):
        logits = [sim(a[i], b[j]) / tau for j in range(n)]
        total += -logits[i] + math.log(sum(math.exp(l) for l in logits) / n)
    return total / n


@pytest.mark.parametrize("tau", [1.0, 0.5, 2.0])
def test_fresh_negatives_match_naive(tau):
    g = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(17, 4, generator=g, dtype=torch.float64) for _ in range(3))
    fast = info_nce(a, b, c, similarity="sq_euclidean", temperature=tau)
    assert fast.item() == pytest.approx(naive_lp_infonce(a, b, c, tau), rel=1e-10)


def test_float32_matches_naive_at_scale():
    g = torch.Generator().manual_seed(1)
    a, b, c = (3 * torch.randn(256, 6, generator=g) for _ in range(3))
    ref = naive_lp_infonce(a.double(), b.double(), c.double())
    assert info_nce(a, b, c).item() == pytest.approx(ref, rel=1e-5)


@pytest.mark.parametrize(
    "similarity, fn",
    [
        ("cosine", lambda u, v: float(u @ v / (u.norm() * v.norm()))),
        ("dot", lambda u, v: float(u @ v)),
        ("sq_euclidean", lambda u, v: -float(((u - v) ** 2).sum())),
        ("euclidean", lambda u, v: -float(((u - v) ** 2).sum()) ** 0.5),
    ],
)
def test_in_batch_matches_naive(similarity, fn):
    g = torch.Generator().manual_seed(2)
    a, b = (torch.randn(11, 5, generator=g, dtype=torch.float64) for _ in range(2))
    fast = info_nce(a, b, None, similarity=similarity, temperature=0.7)
    assert fast.item() == pytest.approx(naive_in_batch(a, b, fn, 0.7), rel=1e-6)


def test_symmetric_is_mean_of_directions_and_gradients_match():
    g = torch.Generator().manual_seed(3)
    ha, hb, na, nb = (torch.randn(9, 3, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(4))
    loss = symmetric_info_nce(ha, hb, na, nb)
    ref = 0.5 * (naive_lp_infonce(ha.detach(), hb.detach(), na.detach()) + naive_lp_infonce(hb.detach(), ha.detach(), nb.detach()))
    assert loss.item() == pytest.approx(ref, rel=1e-10)
    # gradient of the fast form equals the gradient of a direct (N,N,d) autograd formulation
    loss.backward()
    grads = [t.grad.clone() for t in (ha, hb, na, nb)]
    for t in (ha, hb, na, nb):
        t.grad = None

    def dense(a, b, c):
        neg = ((a[:, None, :] - c[None, :, :]) ** 2).sum(-1)
        pos = ((a - b) ** 2).sum(-1)
        lme = torch.logsumexp(torch.cat([-neg, -pos[:, None]], 1), 1) - math.log(c.shape[0] + 1)
        return (pos + lme).mean()

    (0.5 * (dense(ha, hb, na) + dense(hb, ha, nb))).backward()
    for got, t in zip(grads, (ha, hb, na, nb)):
        torch.testing.assert_close(got, t.grad)


def test_lower_bound_is_minus_log_n_plus_one():
    # perfectly aligned positives, negatives infinitely far: L = -log(N+1)
    a = torch.zeros(8, 2)
    c = torch.full((8, 2), 1e3)
    assert info_nce(a, a.clone(), c).item() == pytest.approx(-math.log(9), rel=1e-6)
