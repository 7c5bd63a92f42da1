"""Tables of the vision–language uniqueness sweep (``experiment=vl_uniqueness``), as platonic-rep-unique's
plot_alignment.py draws them (arXiv:2502.16282).

    python -m mmrep.analysis.vl_uniqueness outputs/vl_uniqueness/multiruns/<date> [--out DIR]

From every run's max-over-layer-pairs mutual-kNN alignment and its language model's performance (−bits per byte):

* per vision family, Spearman ρ between U and alignment for each vision model (pooling every (U, LM) point),
  averaged over the family's models (``vl_rho_uniqueness.csv``);
* per family and U, the Spearman ρ and the least-squares slope of alignment against LM performance (one point per
  LM) for each vision model, averaged over the family's models (``vl_performance.csv``).

Also writes the tidy per-run table ``vl_runs.csv``, prints both tables and draws ``vl_alignment_vs_U.png`` (per
family, alignment against U averaged over LMs, one line per vision model) and ``vl_alignment_vs_performance.png``
(alignment against LM performance, one line per U, averaged over vision models).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from mmrep.analysis.cli import publish, run_analysis, study_parser
from mmrep.analysis.runs import load_runs, markdown, save_figure
from mmrep.core.files import atomic_write

CONFIG_KEYS = {
    "uniqueness": "dataset.uniqueness",
    "language_model": "encoders.text.model",
    "vision_model": "encoders.image.model",
    "seed": "seed",
}
FAMILIES = (  # (substring of the model name, family), first match wins (platonic-rep-unique's modelset "val" groups)
    ("dinov2", "DINOv2"),
    ("mae", "MAE"),
    ("in12k", "CLIP (IN-12k fine-tuned)"),
    ("clip", "CLIP"),
    ("in21k", "ImageNet-21k"),
)


def vision_family(name: str) -> str:
    lowered = str(name).lower()
    return next((family for key, family in FAMILIES if key in lowered), "other")


def run_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run: uniqueness, language_model, vision_model, family, alignment (max), lm_performance."""
    align = runs[(runs.metric == "mutual_knn") & (runs["aggregate"] == "max")]
    perf = runs[runs.metric == "lm_performance"]
    if align.empty or perf.empty:
        raise ValueError("need mutual_knn max rows and lm_performance rows (metric=vl_alignment)")
    keys = ["run", "uniqueness", "language_model", "vision_model"]
    table = (
        align[keys + ["value"]]
        .rename(columns={"value": "alignment"})
        .merge(perf[["run", "value"]].rename(columns={"value": "lm_performance"}), on="run")
    )
    table["family"] = table.vision_model.map(vision_family)
    return table


def _spearman(x, y) -> float:
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(stats.spearmanr(x, y).statistic)


def rho_uniqueness(table: pd.DataFrame) -> pd.DataFrame:
    """Per family: mean over its vision models of Spearman ρ(U, alignment) over every (U, LM) point."""
    per_model = (
        table.groupby(["family", "vision_model"])
        .apply(lambda g: _spearman(g.uniqueness, g.alignment), include_groups=False)
        .rename("rho")
    )
    return per_model.groupby("family").agg(["mean", "count"]).rename(columns={"count": "models"}).reset_index()


def performance_trend(table: pd.DataFrame) -> pd.DataFrame:
    """Per family and U: mean over vision models of ρ and slope of alignment against LM performance."""

    def fit(g):
        if len(g) < 2 or np.ptp(g.lm_performance) == 0:
            return pd.Series({"rho": float("nan"), "slope": float("nan")})
        return pd.Series(
            {
                "rho": _spearman(g.lm_performance, g.alignment),
                "slope": float(np.polyfit(g.lm_performance, g.alignment, 1)[0]),
            }
        )

    per_model = table.groupby(["family", "uniqueness", "vision_model"]).apply(fit, include_groups=False)
    return per_model.groupby(["family", "uniqueness"]).mean().reset_index()


def plot(table: pd.DataFrame, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = sorted(table.family.unique())
    fig, axes = plt.subplots(1, len(families), figsize=(4 * len(families), 3.2), squeeze=False)
    for ax, family in zip(axes[0], families):
        for model, part in table[table.family == family].groupby("vision_model"):
            means = part.groupby("uniqueness").alignment.mean()
            ax.plot(means.index, means.values, "o-", ms=3, label=str(model).split("/")[-1])
        ax.set(xlabel="caption uniqueness U (%)", ylabel="mutual kNN (max over layers)", title=family)
    written = [save_figure(fig, axes[0][-1], out / "vl_alignment_vs_U.png")]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for u, part in table.groupby("uniqueness"):
        means = part.groupby("lm_performance").alignment.mean()
        ax.plot(means.index, means.values, "o-", ms=3, label=f"U = {u}")
    ax.set(
        xlabel="LM performance (−bits per byte)",
        ylabel="mutual kNN (mean over vision models)",
        title="alignment vs language-model performance",
    )
    written.append(save_figure(fig, ax, out / "vl_alignment_vs_performance.png"))
    return written


def main(argv=None, prog: str | None = None) -> int:
    parser = study_parser("vl_uniqueness", __doc__.split("\n\n")[0], prog=prog)
    args = parser.parse_args(argv)

    def analyze():
        table = run_table(load_runs(args.sweep, CONFIG_KEYS))
        return table, rho_uniqueness(table), performance_trend(table)

    code, result = run_analysis(parser.prog, analyze, [args.sweep])
    if code:
        return code
    table, rho, trend = result
    out = args.out or args.sweep
    for name, frame in (("vl_runs", table), ("vl_rho_uniqueness", rho), ("vl_performance", trend)):
        with atomic_write(out / f"{name}.csv") as fh:
            frame.to_csv(fh, index=False, float_format="%.4g")
    figures = plot(table, out)
    print(
        "Spearman ρ(U, alignment) per vision family (mean over its models)\n"
        + markdown(rho.set_index("family").round(3))
    )
    print(
        "\nalignment vs LM performance (−bits per byte) per U: Spearman ρ and slope (mean over the family's models)\n"
        + markdown(trend.set_index(["family", "uniqueness"]).round(3))
    )
    if args.wandb:
        tables = {"vl_runs": table, "vl_rho_uniqueness": rho, "vl_performance": trend}
        return publish(parser.prog, args.sweep, tables, figures, "vl_uniqueness")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
