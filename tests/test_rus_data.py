"""RUS generator (multimodal_alignment synthetic/generate_prob_data.py): known answers of the original,
statistics, splits, cache, errors."""

import os

import numpy as np
import pytest
import torch

from mmrep.core.errors import ConfigError
from mmrep.data import rus

# synthetic/generate_prob_data.py table
RULES = {
    0: ([], [3, 2, 0, 1], [2, 3, 0, 1]),
    1: ([7], [3, 2, 0], [2, 3, 0, 1]),
    2: ([7, 2], [3, 2, 0], [2, 3, 0]),
    3: ([7, 2, 1], [3, 2], [2, 3, 0]),
    4: ([7, 2, 1, 6], [3, 2], [2, 3]),
    5: ([7, 2, 1, 6, 0], [3], [2, 3]),
    6: ([7, 2, 1, 6, 0, 4], [3], [2]),
    7: ([7, 2, 1, 6, 0, 4, 3], [], [2]),
    8: ([7, 2, 1, 6, 0, 4, 3, 5], [], []),
}
# synthetic/generate_prob_data.py step 5: I(X1;Y), I(X2;Y), co-information
MI = {
    0: (0.367, 0.473, -0.319),
    1: (0.367, 0.619, -0.173),
    2: (0.494, 0.608, -0.058),
    3: (0.494, 0.772, 0.106),
    4: (0.715, 0.733, 0.290),
    5: (0.715, 0.887, 0.443),
    6: (0.972, 0.881, 0.693),
    7: (0.972, 1.159, 0.972),
    8: (1.159, 1.159, 1.159),
}


@pytest.mark.parametrize("r", range(9))
def test_label_rules_match_the_spec_table(r):
    assert [list(map(int, x)) for x in rus.label_rules(r)] == [list(x) for x in RULES[r]]


def test_bit_table_is_itertools_product_order():
    import itertools

    assert rus.bit_table(4).tolist() == [list(b) for b in itertools.product([0, 1], repeat=4)]


def test_weights_match_the_original():
    W = rus.label_weights(np.random.RandomState(2))
    np.testing.assert_allclose(W[0], [0.5278, 0.0314, 0.6654, 0.5270], atol=1e-4)
    np.testing.assert_allclose(W[7], [0.3358, 0.5332, 0.7130, 0.3075], atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(W, axis=1), 1.0)


def test_balancing_reaches_the_spec_marginal():
    table, _ = rus.conditional_table(3)
    np.testing.assert_allclose(table.reshape(-1, 4).mean(0), [0.2547, 0.2419, 0.2589, 0.2445], atol=1e-4)
    np.testing.assert_allclose(table.sum(-1), 1.0)


@pytest.mark.parametrize("r", range(9))
def test_information_quantities_match_the_original(r):
    mi = rus.mutual_information(rus.conditional_table(r)[0])
    assert mi["I(X1,X2;Y)"] == pytest.approx(1.1588, abs=1e-4)
    got = (mi["I(X1;Y)"], mi["I(X2;Y)"], mi["I(X1;X2;Y)"])
    np.testing.assert_allclose(got, MI[r], atol=1e-3)


def _original_draws(table, state, n):
    """The original's procedure, literally: ids by ``choice`` with an explicit uniform ``p``, then one
    ``choice(4, p=...)`` per sample (the issue-13 finding: without ``p`` numpy takes another stream)."""
    slow = np.random.RandomState()
    slow.set_state(state)
    ids = [
        slow.choice(256, n, p=[1 / 256] * 256),
        slow.choice(16, n, p=[1 / 16] * 16),
        slow.choice(16, n, p=[1 / 16] * 16),
    ]
    labels = [slow.choice(4, p=table[a, b, c]) for a, b, c in zip(*ids)]
    return ids, labels


@pytest.mark.parametrize("redundancy", [0, 3, 4, 8])
def test_ids_and_labels_equal_the_original_draw_for_draw(redundancy):
    table, rng = rus.conditional_table(redundancy)
    state = rng.get_state()
    xc, xu1, xu2, y = rus.sample_inputs_and_labels(table, rng, 65_536 if redundancy == 4 else 4_000)
    ids, labels = _original_draws(table, state, len(y))
    for fast, ref in zip((xc, xu1, xu2), ids):
        np.testing.assert_array_equal(fast, ref)
    np.testing.assert_array_equal(y, labels)
    other = np.random.RandomState()
    other.set_state(state)
    assert (other.choice(256, len(y)) == xc).mean() < 0.05  # the p-less stream really differs (chance: 1/256)


def test_label_statistics_follow_the_table():
    data = rus.generate_rus(redundancy=2, depth=0, num_data=65_536)
    table, _ = rus.conditional_table(2)
    # the empirical label frequency of each class is close to its exact marginal (4 sigma)
    p = table.reshape(-1, 4).mean(0)
    freq = np.bincount(data["label"], minlength=4) / 65_536
    assert np.all(np.abs(freq - p) < 4 * np.sqrt(p * (1 - p) / 65_536))
    # the label depends on the shared bits in the rule: P(y | x_c bit 7) differs, on an unused bit (3) it does not
    bit7 = (data["xc"] >> 0) & 1  # x_c position 7 = least significant
    bit3 = (data["xc"] >> 4) & 1
    diff = lambda bit: np.abs(
        np.bincount(data["label"][bit == 1], minlength=4) / (bit == 1).sum()
        - np.bincount(data["label"][bit == 0], minlength=4) / (bit == 0).sum()
    ).max()
    assert diff(bit7) > 0.1 and diff(bit3) < 0.02


def test_modalities_share_x_c_and_inputs_are_identical_across_r():
    a = rus.generate_rus(redundancy=0, depth=0, num_data=500)
    b = rus.generate_rus(redundancy=8, depth=0, num_data=500)
    np.testing.assert_array_equal(a["x0"], b["x0"])  # same inputs for every r (synthetic/generate_prob_data.py)
    assert (a["label"] != b["label"]).any()
    np.testing.assert_array_equal(a["x0"][:, :8], rus.bit_table(8)[a["xc"]])


def test_heterogeneity_transforms():
    nets = rus.heterogeneity_transforms(3)
    for depth, net in enumerate(nets):
        assert sum(isinstance(m, torch.nn.Tanh) for m in net) == depth
        assert sum(isinstance(m, torch.nn.Linear) for m in net) == depth + 1
    again = rus.heterogeneity_transforms(5)  # building more depths does not change the first ones
    x = torch.rand(7, 12)
    for d in range(4):
        torch.testing.assert_close(nets[d](x), again[d](x))
    w = nets[0][0].weight
    assert w.abs().max() <= 1 / np.sqrt(12)  # PyTorch default init U(±1/√12)


def test_split_sizes_and_stratification():
    y = rus.generate_rus(redundancy=4, depth=0)["label"]
    idx = rus.split_indices(y, (0.7, 0.15, 0.15), seed=0)
    assert {k: len(v) for k, v in idx.items()} == {"train": 45_875, "val": 9_830, "test": 9_831}  # as the original
    assert len(np.unique(np.concatenate(list(idx.values())))) == 65_536
    for part in idx.values():
        np.testing.assert_allclose(np.bincount(y[part]) / len(part), np.bincount(y) / len(y), atol=2e-4)
    again = rus.split_indices(y, (0.7, 0.15, 0.15), seed=0)
    assert all((again[k] == idx[k]).all() for k in idx)


def test_datamodule_batches_zscore_cache_and_heldout(tmp_path):
    dm = rus.RUSDataModule(redundancy=6, depth=2, num_data=4000, batch_size=100, data_dir=str(tmp_path))
    dm.prepare_data()
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].name.startswith("rus_r6_d2_") and files[0].suffix == ".npz"
    dm.setup()
    train = dm.split("train")
    for x in (train.data["x0"], train.data["x1"]):
        np.testing.assert_allclose(x.mean(0).numpy(), 0, atol=1e-5)
        np.testing.assert_allclose(x.std(0, unbiased=False).numpy(), 1, atol=1e-4)
    batch = next(iter(dm.train_dataloader()))
    assert batch["x0"].shape == (100, 12) and batch["y"].dtype == torch.int64
    assert dm.info["I(X1,X2;Y)"] == pytest.approx(1.1588, abs=1e-4)
    aligned = dm.heldout("align", 150)
    torch.testing.assert_close(torch.cat([b["x1"] for b in aligned]), dm.split("test").data["x1"][:150])
    # the cache is reused (not rewritten) and a corrupt file is regenerated
    stamp = files[0].stat().st_mtime_ns
    rus.RUSDataModule(redundancy=6, depth=2, num_data=4000, data_dir=str(tmp_path)).setup()
    assert files[0].stat().st_mtime_ns == stamp
    files[0].write_bytes(b"garbage")
    dm2 = rus.RUSDataModule(redundancy=6, depth=2, num_data=4000, data_dir=str(tmp_path))
    dm2.setup()
    torch.testing.assert_close(dm2.split("train").data["x1"], train.data["x1"])
    assert sorted(os.listdir(tmp_path)) == [files[0].name]  # no temporary files left behind


@pytest.mark.parametrize(
    "kwargs, key",
    [
        (dict(redundancy=9), "dataset.redundancy"),
        (dict(redundancy=-1), "dataset.redundancy"),
        (dict(depth=-1), "dataset.depth"),
        (dict(splits=[0.5, 0.5, 0.1]), "dataset.splits"),
        (dict(splits=[0.98, 0.01, 0.01], num_data=500), "dataset.splits"),
        (dict(num_data=0), "dataset.num_data"),
    ],
)
def test_bad_input_names_the_key(kwargs, key, tmp_path):
    with pytest.raises(ConfigError, match=f"^{key}"):
        rus.RUSDataModule(data_dir=str(tmp_path), **kwargs)


def test_grid_equals_single_generation():
    grid = dict(rus.generate_grid(redundancies=[1, 5], depths=[0, 3], num_data=3000))
    for (r, depth), arrays in grid.items():
        single = rus.generate_rus(r, depth, num_data=3000)
        for key in ("x0", "x1", "label"):
            np.testing.assert_array_equal(arrays[key], single[key])
    # modality 1 is the transform of [x_c, x_u2], evaluated per sample
    net = rus.heterogeneity_transforms(3)[3]
    a = grid[(1, 3)]
    raw = np.concatenate([rus.bit_table(8)[a["xc"]], rus.bit_table(4)[a["xu2"]]], axis=1).astype(np.float32)
    np.testing.assert_allclose(a["x1"], net(torch.from_numpy(raw)).detach().numpy(), atol=1e-6)


def test_cli_prepares_the_cache_the_datamodule_reads(tmp_path, capsys):
    assert rus.main(["--redundancy", "3", "--depths", "2", "--num-data", "2000", "--data-dir", str(tmp_path)]) == 0
    assert "1.1588" in capsys.readouterr().out
    (path,) = tmp_path.glob("rus_r3_d2_*.npz")
    stamp = path.stat().st_mtime_ns
    dm = rus.RUSDataModule(redundancy=3, depth=2, num_data=2000, data_dir=str(tmp_path))
    dm.setup()
    assert path.stat().st_mtime_ns == stamp  # read, not regenerated
    np.testing.assert_array_equal(np.load(path)["label"], rus.generate_rus(3, 2, num_data=2000)["label"])


def test_heldout_larger_than_the_split_uses_the_whole_split(tmp_path):
    dm = rus.RUSDataModule(redundancy=1, depth=1, num_data=2000, data_dir=str(tmp_path))
    batches = dm.heldout("align", 512)  # the test split has 301 samples: the original's "first batch" = all
    assert sum(len(b["y"]) for b in batches) == len(dm.split("test")) == 301
    with pytest.raises(ValueError, match="unknown purpose"):
        dm.heldout("shifted", 10)  # probe_fit / probe_eval are val / test (the factor probes of the RUS bits)
