"""The uniqueness × objective study: the RUS generating bits as probe targets, the analysis on a fake sweep, and a
reduced sweep end to end (``experiment=uniqueness_objective``, ``python -m mmrep.analysis.uniqueness_objective``)."""

from functools import partial

import numpy as np
import pandas as pd
import pytest
import torch

from fixtures import write_fake_run
from mmrep.analysis import summary as seed_stats
from mmrep.analysis import uniqueness_objective as study
from mmrep.data import rus
from mmrep.encoders.mlp import MLP
from mmrep.metrics.factors import FactorProbes
from mmrep.objectives.unimodal import UnimodalSupervised

RUS_MLP = dict(depth=1, width=12, negative_slope=0.1, output_activation=True, hidden=[], relative=False)


# ---- the bits as latents ----------------------------------------------------------------------------------------
def test_bit_latents_are_the_modalities_input_bits():
    arrays = rus.generate_rus(4, 1, num_data=500)
    bits = rus.bit_latents(arrays["xc"], arrays["xu1"], arrays["xu2"])
    assert list(bits) == list(rus.bit_names()) and len(bits) == 16
    x0 = np.stack([bits[f"xc_{k}"] for k in range(8)] + [bits[f"xu1_{k}"] for k in range(4)], axis=1)
    # modality 0 is [x_c, x_u1] in bit_table order (multimodal_alignment synthetic/generate_prob_data.py)
    np.testing.assert_array_equal(x0, arrays["x0"])
    ids = sum(bits[f"xu2_{k}"] << (3 - k) for k in range(4))  # bit 0 = the most significant
    np.testing.assert_array_equal(ids, arrays["xu2"])


@pytest.mark.parametrize("r", [0, 3, 8])
def test_bit_roles_follow_the_label_rules(r):
    roles = rus.bit_roles(r)
    red, rule1, rule2 = rus.label_rules(r)
    assert sorted(k for k, v in roles.items() if v == "shared-label") == sorted(f"xc_{i}" for i in red)
    assert sorted(k for k, v in roles.items() if v == "x0-unique-label") == sorted(f"xu1_{i}" for i in rule1)
    assert sorted(k for k, v in roles.items() if v == "x1-unique-label") == sorted(f"xu2_{i}" for i in rule2)
    assert sum(v.endswith("-label") for v in roles.values()) == rus.LABEL_BITS  # the label always reads 8 bits
    assert set(roles.values()) <= {f"{g}-{u}" for g in ("shared", "x0-unique", "x1-unique") for u in ("label", "other")}


def test_rus_batches_carry_the_bits_and_probe_splits(tmp_path):
    dm = rus.RUSDataModule(redundancy=6, depth=1, num_data=2000, data_dir=str(tmp_path))
    assert dm.spec.latent_names == rus.bit_names()
    fit = dm.heldout("probe_fit")
    assert sum(len(b["y"]) for b in fit) == len(dm.split("val")) == dm.heldout_size("probe_fit")
    assert dm.heldout_size("probe_eval") == len(dm.split("test"))
    batch = fit[0]
    assert set(batch["latents"]) == set(rus.bit_names()) and batch["latents"]["xc_0"].shape == (len(batch["y"]), 1)
    dm.spec.check_batch(next(iter(dm.train_dataloader())))  # training batches keep the contract too
    assert dm.factor_roles() == rus.bit_roles(6) and set(dm.factor_kinds().values()) == {"discrete"}


def test_factor_probes_read_each_modalitys_own_bits_only(tmp_path):
    """An untrained rus_mlp (one Linear + LeakyReLU) keeps what its modality sees: the linear probes find x0's
    x_c and x_u1 bits in x0 (MCC 0.67–0.95 measured: the LeakyReLU kink is not linearly undone) and nothing of the
    x_u2 bits it never sees (|MCC| ≤ 0.05)."""
    torch.manual_seed(0)
    dm = rus.RUSDataModule(redundancy=4, depth=0, num_data=3000, data_dir=str(tmp_path))
    model = UnimodalSupervised(dm.spec, {m: partial(MLP, **RUS_MLP) for m in ("x0", "x1")})
    rows = FactorProbes(probes=["linear"])(model, dm)
    assert len(rows) == 16 * 2 and set(rows.metric) == {"mcc"}
    x0 = rows[rows.modality == "x0"].set_index("target").value
    seen = [b for b in rus.bit_names() if not b.startswith("xu2")]
    assert x0[seen].min() > 0.5 and x0[seen].mean() > 0.7, x0
    assert x0[[f"xu2_{k}" for k in range(4)]].abs().max() < 0.15, x0
    assert set(rows.role) == set(rus.bit_roles(4).values())


# ---- the analysis on a fake sweep -----------------------------------------------------------------------------
def test_helpers():
    assert study.objective_name("mmrep.objectives.mmcl.MMCL") == "mmcl"
    assert study.objective_name("mmrep.objectives.unimodal.UnimodalSupervised") == "unimodal"
    assert [study.bit_group(r, "x1") for r in ("shared-label", "x1-unique-other", "x0-unique-label")] == [
        "shared-label",
        "unique-other",
        "unseen",
    ]
    mean, lo, hi, n = seed_stats.mean_ci([1.0, 2.0, 3.0])
    assert (mean, n) == (2.0, 3) and hi - mean == pytest.approx(4.302653 / np.sqrt(3))  # t(0.975, 2) · s / √n
    assert np.isnan(seed_stats.mean_ci([1.0])[1]) and seed_stats.mean_ci([])[3] == 0
    assert seed_stats.cell(0.5, 0.4, 0.62) == "0.50 ± 0.12" and seed_stats.cell(0.5, np.nan, np.nan) == "0.50"
    s, lo, hi = seed_stats.slope([0, 1, 2, 3], [0.0, 2.1, 3.9, 6.0])  # ≈ 2 per unit, a tight interval
    assert lo < s < hi and s == pytest.approx(1.98) and hi - lo < 0.5
    assert np.isnan(seed_stats.slope([1, 1, 1], [0, 1, 2])[0])  # x constant: no slope


def _fake_run(path, objective, r, seed, cka, acc, shared, unique):
    target = {"mmcl": "mmrep.objectives.mmcl.MMCL", "unimodal": "mmrep.objectives.unimodal.UnimodalSupervised"}
    config = {
        "seed": seed,
        "dataset": {"redundancy": r},
        "objective": {"_target_": target[objective]},
        "task_name": "uniqueness_objective",
    }
    rows = [
        {"metric": m, "aggregate": "max", "modality": "x0|x1", "value": v}
        for m, v in (("unbiased_cka", cka), ("mutual_knn", cka / 2))
    ]
    rows += [
        {"metric": "accuracy", "probe": "linear", "modality": m, "split": "test", "value": acc} for m in ("x0", "x1")
    ]
    rows += [
        {
            "metric": "mcc",
            "probe": "linear",
            "modality": m,
            "target": b,
            "role": role,
            "value": shared if role.startswith("shared") else unique if role.startswith(m) else 0.0,
        }
        for m in ("x0", "x1")
        for b, role in rus.bit_roles(r).items()
    ]
    write_fake_run(path, config, rows)


def _fake_sweep(root):
    """mmcl: alignment flat, accuracy falls with U, unique bits lost; unimodal: alignment falls, accuracy flat."""
    for seed in (0, 1, 2):
        noise = 0.01 * (seed - 1)
        for r in (0, 4, 8):
            u = 8 - r
            _fake_run(root / f"mmcl_{r}_{seed}", "mmcl", r, seed, 0.9 + noise, 0.8 - 0.06 * u + noise, 1.0, 0.1)
            _fake_run(root / f"uni_{r}_{seed}", "unimodal", r, seed, 0.8 - 0.1 * u + noise, 0.7 + noise, 0.6, 0.9)


def test_analysis_tables_figure_and_trends_on_a_fake_sweep(tmp_path, capsys):
    _fake_sweep(tmp_path)
    assert study.main([str(tmp_path)]) == 0
    for name in study.OUTPUTS:
        assert (tmp_path / name).stat().st_size > 0, name
    summary = pd.read_csv(tmp_path / "uniqueness_objective.csv")
    assert list(summary.columns) == ["U", "objective", "metric", "modality", "mean", "ci_low", "ci_high", "n_seeds"]
    row = summary.set_index(["U", "objective", "metric", "modality"]).loc[(8, "unimodal", "unbiased_cka", "x0|x1")]
    assert row["mean"] == pytest.approx(0.0) and row["n_seeds"] == 3
    assert row["ci_high"] - row["mean"] == pytest.approx(4.302653 * 0.01 / np.sqrt(3), rel=1e-4)
    bits = summary[summary.metric.str.startswith("mcc:")].set_index(["U", "objective", "metric", "modality"])["mean"]
    # U = 0 (r = 8): the label reads every shared bit and no unique one; U = 8: the other way round
    assert bits[0, "mmcl", "mcc:shared-label", "x0"] == 1.0 and bits[
        0, "mmcl", "mcc:unique-other", "x1"
    ] == pytest.approx(0.1)
    assert (0, "mmcl", "mcc:unique-label", "x1") not in bits.index and (
        8,
        "mmcl",
        "mcc:shared-label",
        "x0",
    ) not in bits.index
    assert (
        bits[8, "unimodal", "mcc:unique-label", "x0"] == pytest.approx(0.9)
        and bits[8, "unimodal", "mcc:unseen", "x0"] == 0
    )
    trend = pd.read_csv(tmp_path / "uniqueness_objective_trend.csv").set_index(["objective", "metric", "modality"])
    assert trend.loc[("unimodal", "unbiased_cka", "x0|x1"), "slope_high"] < 0
    assert trend.loc[("mmcl", "accuracy", "x0"), "slope_high"] < 0
    assert trend.loc[("mmcl", "unbiased_cka", "x0|x1"), "slope"] == pytest.approx(0.0, abs=1e-9)
    text = capsys.readouterr().out
    assert "0.90 ± 0.02" in text and "unseen" in text


def test_analysis_errors_are_one_line(tmp_path, capsys):
    assert study.main([str(tmp_path)]) == 1  # no runs at all
    err = capsys.readouterr().err
    assert err.startswith("mmrep.analysis.uniqueness_objective: error: ") and err.count("\n") == 1
    write_fake_run(
        tmp_path / "numeric_run",
        {"seed": 0, "dataset": {"_target_": "mmrep.data.numeric.NumericDataModule"}},
        [{"metric": "r2", "probe": "mlp", "modality": "x", "target": "s_0", "value": 0.9}],
    )
    assert study.main([str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "holds no uniqueness × objective runs" in err and "dataset.redundancy" in err and err.count("\n") == 1


# ---- a reduced sweep end to end ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_reduced_sweep_contrastive_keeps_alignment_supervised_keeps_accuracy(cli, tmp_path):
    """``experiment=uniqueness_objective`` at U ∈ {0, 8} × 2 seeds (8 runs), through the analysis command.
    Measured at this scale (README: the full sweep, U 0..8 × 3 seeds): MMCL's unbiased CKA stays ≈ 0.95 from
    U = 0 to 8 while the unimodal encoders' falls from ≈ 0.5 to ≈ 0; at U = 8 MMCL's x0 representation is at chance
    (its Bayes ceiling from the shared bits, 0.26) while the unimodal x0 encoder reaches ≈ 0.54 (its own ceiling);
    MMCL's x0 identifies the shared bits and none of its unique ones, the unimodal x0 its unique label bits."""
    sweep = tmp_path / "sweep"
    res = cli(
        [
            "-m",
            "experiment=uniqueness_objective",
            "dataset.redundancy=0,8",
            "seed=0,1",
            f"hydra.sweep.dir={sweep}",
            "callbacks.rich_progress_bar=null",
            "print_config=false",
            f"paths.data_dir={tmp_path / 'data'}",
        ],
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert study.main([str(sweep)]) == 0  # the analysis command, in process (a second interpreter costs ~5 s)
    assert all((sweep / name).exists() for name in study.OUTPUTS)
    summary = pd.read_csv(sweep / "uniqueness_objective.csv")
    assert set(summary[summary.objective != "bayes"].n_seeds) == {2}
    mean = summary.set_index(["U", "objective", "metric", "modality"])["mean"]
    cka = {(o, u): mean[u, o, "unbiased_cka", "x0|x1"] for o in ("mmcl", "unimodal") for u in (0, 8)}
    assert cka["mmcl", 0] > 0.85 and cka["mmcl", 8] > 0.85 and abs(cka["mmcl", 8] - cka["mmcl", 0]) < 0.05, cka
    assert cka["unimodal", 0] > 0.35 and cka["unimodal", 8] < 0.1, cka
    assert mean[8, "mmcl", "mutual_knn", "x0|x1"] > mean[8, "unimodal", "mutual_knn", "x0|x1"] + 0.3
    accuracy = {(o, u): mean[u, o, "accuracy", "x0"] for o in ("mmcl", "unimodal", "bayes") for u in (0, 8)}
    assert accuracy["mmcl", 8] < 0.32 and accuracy["unimodal", 8] > accuracy["mmcl", 8] + 0.15, accuracy
    assert accuracy["unimodal", 8] > accuracy["bayes", 8] - 0.05, accuracy  # the unimodal x0 reaches its ceiling
    assert mean[8, "bayes", "accuracy", "x_c"] == pytest.approx(0.259, abs=1e-3)
    assert mean[8, "mmcl", "mcc:shared-other", "x0"] > 0.8 and mean[8, "mmcl", "mcc:unique-label", "x0"] < 0.15
    assert mean[8, "unimodal", "mcc:unique-label", "x0"] > 0.8
    trend = pd.read_csv(sweep / "uniqueness_objective_trend.csv").set_index(["objective", "metric", "modality"])
    assert trend.loc[("unimodal", "unbiased_cka", "x0|x1"), "slope_high"] < 0
