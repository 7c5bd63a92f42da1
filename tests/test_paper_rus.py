"""Reduced-scale reproduction of the RUS paper's results (arXiv:2502.16282 figures, Fig. 4, 6, 7 and 9), at the
strength they hold at this scale, for seed 0 (the experiment's; seed 1 was measured to the same strength, the
ranges below cover both):

* alignment falls with uniqueness U = 8 − r: perfect rank order of the per-U maxima, unbiased CKA clearly high at
  U = 0 (paper ≈ 0.90 at D_φ = 1) and ≈ 0 at U = 8 (paper heatmap 0.012), mutual kNN at U = 8 at chance, k/(N−1);
* modality-1 test accuracy in the paper's ranges (Fig. 9: 0.78–0.91 at U = 0, 0.52–0.60 at U = 8);
* at U = 0 accuracy and alignment are strongly correlated in every seed (paper Fig. 7 median 0.68).

What is *not* asserted, because it is noise at 5 depths per seed: the correlation at high U (measured 0.28–0.77
across seeds 0 and 1) and the partial correlation controlling for depth (0.48–0.90 at U = 0, CIs spanning 0).

`experiment=rus_alignment_small` with U ∈ {0, 4, 8}: D_φ = 1, modality-1 depth 1..5, 6 epochs (15 runs, ~1 min
on 2 cores).
"""

import pytest

from mmrep.analysis import rus as analysis

K, N_ALIGN = 100, 512  # metric=accuracy_alignment: k = 100 on the first 512 test samples
# (multimodal_alignment scripts/tune_hyp_optuna.py)
TOLERANCE = 0.03  # around the paper's accuracy ranges
SEEDS = (0,)


@pytest.mark.slow
def test_rus_alignment_small_reproduces_the_paper_at_its_measured_strength(cli, tmp_path, monkeypatch):
    sweep = tmp_path / "sweep"
    res = cli(
        [
            "-m",
            "experiment=rus_alignment_small",
            "dataset.redundancy=0,4,8",
            f"seed={','.join(map(str, SEEDS))}",
            f"hydra.sweep.dir={sweep}",
            "callbacks.rich_progress_bar=null",
            f"paths.data_dir={tmp_path / 'data'}",
        ],
        timeout=1500,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    result = analysis.analyze(sweep, bootstrap=200)
    runs = result["runs"]
    assert len(runs) == 3 * 5 * len(SEEDS) * 2  # U × depths × seeds × metrics

    vs_u = result["alignment_vs_U"].set_index("metric")
    for metric in ("unbiased_cka", "mutual_knn"):
        assert vs_u.loc[metric, "spearman"] == pytest.approx(-1.0), vs_u  # paper: −0.95 … −1.0

    best = runs.groupby(["metric", "seed", "U"]).alignment.max()
    chance = K / (N_ALIGN - 1)
    for seed in SEEDS:
        assert best["unbiased_cka", seed, 0] >= 0.7, best  # measured 0.82–0.84
        assert best["unbiased_cka", seed, 8] <= 0.05, best  # measured ≤ 0.01
        assert 0.3 <= best["unbiased_cka", seed, 4] <= 0.5, best  # measured 0.35–0.36; paper heatmap ≈ 0.35
        u8 = runs[(runs.metric == "mutual_knn") & (runs.seed == seed) & (runs.U == 8)].alignment
        assert u8.between(chance - 0.02, chance + 0.02).all(), (chance, u8)  # measured 0.195–0.202
        assert best["mutual_knn", seed, 0] >= 0.55, best  # paper ≈ 0.75 at U = 0

    accuracy = runs[runs.metric == "unbiased_cka"].groupby(["seed", "U"]).accuracy
    for seed in SEEDS:
        assert 0.78 - TOLERANCE <= accuracy.max()[seed, 0] <= 0.91 + TOLERANCE, accuracy.max()  # measured 0.86
        assert 0.52 - TOLERANCE <= accuracy.max()[seed, 8] <= 0.60 + TOLERANCE, accuracy.max()  # measured 0.59–0.60

    by_seed = result["alignment_performance_by_seed"]
    ap = by_seed[by_seed.quantity == "alignment_performance"].set_index(["metric", "seed", "U"]).pearson
    for metric in ("unbiased_cka", "mutual_knn"):
        for seed in SEEDS:
            assert ap[metric, seed, 0] >= 0.6, ap  # measured 0.85–0.97
    partial = result["alignment_performance"]
    assert set(partial[partial.quantity == "alignment_performance_given_depth"].U) == {
        0,
        4,
        8,
    }  # reported, not asserted

    from test_notebooks import execute_notebook, figures  # the notebook of this result runs on these tables

    outputs = execute_notebook("rus_alignment.ipynb", sweep, tmp_path, monkeypatch)
    assert figures(outputs) == 2
    assert any("alignment_performance_given_depth" in str(o.get("data", {}).get("text/plain", "")) for o in outputs)
