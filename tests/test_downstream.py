"""Downstream tasks (crossmodal_mislaignment eval_numeric_predict.py): the task function, the OOD shift and the
probes."""

import itertools
import math

import pandas as pd
import pytest
import torch

from mmrep.metrics.downstream import ood_shift, task_function


def naive_f(z, exp_weight):
    total = 0.0
    for _i, a in enumerate(z):
        total += (
            a**2
            + 0.3 * a**3
            + 0.7 * (math.sin(a) + math.cos(a))
            + 0.4 * math.log(1 + abs(a))
            + exp_weight * math.exp(-abs(a))
        )
    total += 0.5 * sum(a * b for a, b in itertools.combinations(z, 2))
    total += 0.2 * sum(a * b * c for a, b, c in itertools.combinations(z, 3))
    return total


@pytest.mark.parametrize("k", [3, 5, 9])
def test_task_function_matches_literal_formula(k):
    z = torch.randn(6, k, dtype=torch.float64, generator=torch.Generator().manual_seed(k))
    got = task_function(z, exp_weight=0.6)
    for row, value in zip(z.tolist(), got.tolist()):
        assert value == pytest.approx(naive_f(row, 0.6), rel=1e-10)


def test_ood_shift_transforms_only_last_two_coordinates():
    s = torch.randn(10_000, 10, generator=torch.Generator().manual_seed(0))
    shifted = ood_shift()(s, torch.Generator().manual_seed(1))
    torch.testing.assert_close(shifted[:, :8], s[:, :8])
    torch.testing.assert_close(shifted[:, 8:], 2 * torch.sign(s[:, 8:]) * s[:, 8:] ** 2)
    spiky = ood_shift(spike_prob=0.1)(s, torch.Generator().manual_seed(1))
    frac = (spiky[:, 8:].abs() == 10).double().mean().item()
    assert frac == pytest.approx(0.1, abs=0.01)


def test_downstream_metric_end_to_end(cli, tiny, tmp_path):
    out = tmp_path / "run"
    res = cli(
        [
            *tiny,
            f"hydra.run.dir={out}",
            "metric=identifiability_downstream",
            "metric.downstream.n_fit=512",
            "metric.downstream.n_eval=512",
            "metric.downstream.epochs=50",
        ]
    )
    assert res.returncode == 0, res.stderr[-3000:]
    df = pd.read_csv(out / "results.csv")
    down = df[df.target.str.startswith("y")]
    assert set(zip(down.metric, down.target, down.split)) == {
        ("r2", "y1", "test"),
        ("r2", "y2", "test"),
        ("r2", "y3", "test"),
        ("r2", "y4", "test"),
        ("mcc", "y5", "test"),
        ("mcc", "y5", "shifted"),
    }
    assert down.value.between(-10, 1).all()
    assert (df.metric == "r2").sum() == 60 + 4


def test_label_rules_median_kmeans_and_the_originals_per_batch_kmeans():
    import numpy as np
    from sklearn.cluster import KMeans

    from mmrep.core.errors import ConfigError
    from mmrep.metrics.downstream import Downstream, kmeans_labels_per_batch

    rng = np.random.default_rng(0)
    y2 = {
        k: np.concatenate([rng.normal(0, 1, 5000), rng.normal(6 + 2 * i, 1, 3192)])[rng.permutation(8192)]
        for i, k in enumerate(("fit", "test", "shifted"))
    }
    per_batch = Downstream(label_rule="kmeans_per_batch").labels(y2)
    for k, y in y2.items():  # the original, literally: KMeans(2) per 4096 block, lower centre = class 0
        expected = []
        for lo in range(0, len(y), 4096):
            fit = KMeans(n_clusters=2, n_init=10, random_state=42).fit(y[lo : lo + 4096].reshape(-1, 1))
            order = np.argsort(fit.cluster_centers_.ravel())
            expected.extend(np.where(fit.labels_ == order[1], 1, 0))
        np.testing.assert_array_equal(per_batch[k], expected)
    assert 0.3 < per_batch["fit"].mean() < 0.45  # clusters, not halves: classes need not be balanced
    median = Downstream(label_rule="median").labels(y2)
    assert median["fit"].mean() == pytest.approx(0.5, abs=1e-3)  # the paper's rule balances the fit set
    one_threshold = Downstream(label_rule="kmeans").labels(y2)
    assert (one_threshold["shifted"] != per_batch["shifted"]).any()  # one fit-set midpoint vs each batch's own
    assert (kmeans_labels_per_batch(y2["test"]) == per_batch["test"]).all()
    with pytest.raises(
        ConfigError, match=r"^metric.downstream.label_rule: one of \['median', 'kmeans', 'kmeans_per_batch'\]"
    ):
        Downstream(label_rule="kmean")


def test_paper_scale_sets_the_papers_downstream_sizes(compose):
    small = compose(["metric=identifiability_downstream"])
    assert (small.metric.downstream.n_fit, small.metric.downstream.n_eval, small.metric.downstream.epochs) == (
        8192,
        8192,
        2000,
    )
    paper = compose(["metric=identifiability_downstream", "paper_scale=numeric"])
    assert (paper.metric.downstream.n_fit, paper.metric.downstream.n_eval, paper.metric.downstream.epochs) == (
        20480,
        20480,
        10000,
    )
