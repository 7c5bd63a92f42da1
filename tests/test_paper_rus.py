"""Reduced-scale reproduction of the RUS paper's qualitative results (spec rus-alignment §8, Fig. 4 and Fig. 7):

* alignment between the two unimodal encoders falls as uniqueness U = 8 − r grows (strongly negative rank
  correlation of the per-U maximum with U);
* alignment and modality-1 performance are correlated when U is low, weakly when U is high.

`experiment=rus_alignment_small`: U ∈ {0,2,4,6,8}, D_φ = 1, modality-1 depth 1..5, one seed, 6 epochs (~4 min).
"""

import pytest

from mmrep.analysis import rus as analysis


@pytest.mark.slow
def test_rus_alignment_small_reproduces_the_paper_trends(cli, tmp_path):
    sweep = tmp_path / "sweep"
    res = cli(["-m", "experiment=rus_alignment_small", f"hydra.sweep.dir={sweep}", "callbacks.rich_progress_bar=null",
               f"paths.data_dir={tmp_path / 'data'}"], timeout=1500)
    assert res.returncode == 0, res.stderr[-3000:]
    result = analysis.analyze(sweep, bootstrap=200)
    runs = result["runs"]
    assert len(runs) == 25 * 2  # 5 U × 5 depths, two metrics

    vs_u = result["alignment_vs_U"].set_index("metric")
    for metric in ("unbiased_cka", "mutual_knn"):
        assert vs_u.loc[metric, "spearman"] <= -0.9, vs_u  # paper: −0.95 … −1.0
        assert vs_u.loc[metric, "pearson"] <= -0.8, vs_u

    perf = result["alignment_performance"]
    ap = perf[perf.quantity == "alignment_performance"].set_index(["metric", "U"])["pearson"]
    for metric in ("unbiased_cka", "mutual_knn"):
        low, high = ap[metric].loc[[0, 2]].mean(), ap[metric].loc[[6, 8]].mean()
        assert ap[metric].loc[0] >= 0.5, ap  # paper Fig. 7 median at U=0: 0.68
        assert low - high >= 0.3, ap  # high at low U, weak at high U
