"""Probes on representations with a known relation to the targets."""

import numpy as np
import pytest

from mmrep.metrics.probes import probe_score, standardize


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(3000, 3))
    other = rng.normal(size=(3000, 2))
    z = np.concatenate([y @ rng.normal(size=(3, 3)), 0.0 * other], 1) + 0.01 * rng.normal(size=(3000, 5))
    return z, y, other


def test_linear_map_is_fully_identified(data):
    z, y, _ = data
    zf, ze = standardize(z[:2000], z[2000:])
    for probe in ("linear", "mlp"):
        metric, r2 = probe_score(probe, zf, y[:2000], ze, y[2000:], max_iter=300)
        assert metric == "r2" and r2 > 0.97


def test_independent_target_is_not_identified(data):
    z, _, other = data
    zf, ze = standardize(z[:2000], z[2000:])
    assert abs(probe_score("linear", zf, other[:2000], ze, other[2000:])[1]) < 0.02
    assert probe_score("mlp", zf, other[:2000], ze, other[2000:], max_iter=200)[1] < 0.05


def test_nonlinear_target_needs_the_mlp(data):
    z, y, _ = data
    target = y[:, :1] ** 2
    zf, ze = standardize(z[:2000], z[2000:])
    linear = probe_score("linear", zf, target[:2000], ze, target[2000:])[1]
    mlp = probe_score("mlp", zf, target[:2000], ze, target[2000:], max_iter=500)[1]
    assert linear < 0.1 and mlp > 0.8


def test_discrete_targets_scored_with_mcc(data):
    z, y, other = data
    labels = (y[:, 0] > 0).astype(int)
    zf, ze = standardize(z[:2000], z[2000:])
    metric, mcc = probe_score("linear", zf, labels[:2000], ze, labels[2000:], discrete=True)
    assert metric == "mcc" and mcc > 0.9
    noise = (other[:, 0] > 0).astype(int)
    assert abs(probe_score("linear", zf, noise[:2000], ze, noise[2000:], discrete=True)[1]) < 0.1


def test_standardize_uses_fit_statistics_only():
    fit = np.array([[0.0], [2.0]])
    ev = np.array([[4.0]])
    f, e = standardize(fit, ev)
    np.testing.assert_allclose(f.ravel(), [-1, 1])
    np.testing.assert_allclose(e.ravel(), [3])
