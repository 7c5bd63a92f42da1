"""Turn an RUS alignment sweep into the paper's tables and figures (arXiv:2502.16282, Figs. 4, 6, 7, 10, 11).

    python -m mmrep.analysis.rus outputs/rus_alignment/multiruns/<date> [--out DIR] [--bootstrap 1000]

For each run (r, D_φ, modality-1 depth d, seed) it takes ``a`` = the alignment between the modality-0 and
modality-1 encoders (max over layer pairs) and ``p`` = the modality-1 test accuracy, with U = 8 − r. Writes:

* ``rus_runs.csv`` — tidy: one row per run × alignment metric (U, D_phi, d, seed, alignment, accuracy);
* ``alignment_vs_U.csv`` — per metric and D_φ: the maximum alignment at each U, and the correlation of those
  maxima with U (Pearson and Spearman, bootstrap 95% CIs resampling the runs within each U);
* ``alignment_performance.csv`` — per metric, U and D_φ: corr(p, a) pooled over seeds and depths (paper Fig. 7
  left), Pearson and Spearman with bootstrap CIs; plus corr(p, d), corr(d, a) and the partial correlation of p and
  a controlling for the encoder depth d (``alignment_performance_given_depth``: the paper's claim is about
  alignment, and at low U accuracy, alignment and depth all move together);
* ``alignment_performance_by_seed.csv`` — the same per seed (how much of it is noise);
* ``alignment_vs_U_<metric>.png`` and ``alignment_performance_<metric>.png``.

The original (multimodal_alignment scripts/analyze_rus.py) computed Pearson only, and never filled the U = 8
maximum (its loop runs over ``range(8)``; scripts/tune_rus_prob_optuna.sh skips r = 0); both are done here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf
from scipy import stats

from mmrep.analysis.cli import publish, run_analysis, study_parser
from mmrep.analysis.runs import load_runs, save_figure
from mmrep.analysis.summary import keep_runs

CONFIG_KEYS = {"r": "dataset.redundancy", "D_phi": "dataset.depth", "d": "encoders.x1.depth", "seed": "seed"}
RESULT_COLUMNS = ("metric", "value", "aggregate", "modality", "split")  # the results.csv columns read here


def _dataset_name(run: Path) -> str:
    """The dataset config a run used: Hydra's recorded choice, else the module of ``dataset._target_``."""
    hydra = run / ".hydra" / "hydra.yaml"
    if hydra.exists():
        choice = OmegaConf.select(OmegaConf.load(hydra), "hydra.runtime.choices.dataset", default=None)
        if choice:
            return str(choice)
    target = OmegaConf.select(OmegaConf.load(run / ".hydra" / "config.yaml"), "dataset._target_", default=None)
    return str(target).rsplit(".", 2)[-2] if target and "." in str(target) else str(target or "none")


def select_rus_runs(raw: pd.DataFrame, root: Path) -> pd.DataFrame:
    """The rows of the RUS runs in ``raw`` (from :func:`load_runs` with :data:`CONFIG_KEYS`): runs whose config has
    ``dataset.redundancy`` and whose results hold an alignment (aggregate=max) and the modality-1 test accuracy.
    Other runs are skipped with a warning naming each (:func:`~mmrep.analysis.summary.keep_runs`); a ValueError
    naming the datasets found when there are none."""
    # a results.csv without one of the columns holds none of its rows
    raw = raw.reindex(columns=list(dict.fromkeys([*raw.columns, *RESULT_COLUMNS])))
    configured = set(raw.loc[raw["r"].notna(), "run"])
    aligned = set(raw.loc[raw["aggregate"].eq("max"), "run"])
    accuracy = set(raw.loc[raw["metric"].eq("accuracy") & raw["split"].eq("test") & raw["modality"].eq("x1"), "run"])

    def found() -> str:
        return "found dataset=" + ",".join(sorted({_dataset_name(Path(root) / run) for run in raw["run"].unique()}))

    return keep_runs(
        raw,
        [
            ("no dataset.redundancy", configured),
            (
                "no alignment (aggregate=max) or modality-1 test accuracy rows of metric=accuracy_alignment",
                aligned & accuracy,
            ),
        ],
        root,
        "RUS",
        "experiment=rus_alignment",
        found=found,
    )


def tidy_runs(raw: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, alignment metric): U, D_phi, d, seed, metric, alignment, accuracy."""
    aligned = raw[raw.get("aggregate", pd.Series(dtype=str)) == "max"]
    accuracy = raw[(raw["metric"] == "accuracy") & (raw["split"] == "test") & (raw["modality"] == "x1")]
    if aligned.empty or accuracy.empty:
        raise ValueError(
            "no alignment (aggregate=max) or modality-1 test accuracy rows: was metric=accuracy_alignment used?"
        )
    acc = accuracy.set_index("run")["value"].rename("accuracy")
    df = aligned[["run", "metric", "value", *CONFIG_KEYS]].rename(columns={"value": "alignment"}).join(acc, on="run")
    df["U"] = 8 - df["r"].astype(int)
    return df[["run", "U", "D_phi", "d", "seed", "metric", "alignment", "accuracy"]].sort_values(
        ["metric", "U", "D_phi", "d", "seed"]
    )


def correlation(x, y, bootstrap: int = 1000, seed: int = 0, groups=None) -> dict[str, float]:
    """Pearson and Spearman correlation with percentile bootstrap 95% CIs (NaN where undefined).

    ``groups``: resample within each group (used for the per-U maxima); otherwise resample the points."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    out = {"n": len(x)}
    for name, fn in (
        ("pearson", lambda a, b: stats.pearsonr(a, b)[0]),
        ("spearman", lambda a, b: stats.spearmanr(a, b)[0]),
    ):
        out[name] = _safe(fn, x, y)
        if bootstrap and len(x) > 2:
            rng = np.random.default_rng(seed)
            draws = [_safe(fn, *_resample(x, y, rng, groups)) for _ in range(bootstrap)]
            draws = np.asarray([d for d in draws if np.isfinite(d)])
            lo, hi = np.percentile(draws, [2.5, 97.5]) if len(draws) else (np.nan, np.nan)
        else:
            lo = hi = np.nan
        out[f"{name}_lo"], out[f"{name}_hi"] = lo, hi
    return out


def _residuals(a: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``a`` minus its least-squares fit on ``[1, c]``."""
    design = np.column_stack([np.ones_like(c), c])
    return a - design @ np.linalg.lstsq(design, a, rcond=None)[0]


def partial_correlation(x, y, z, bootstrap: int = 1000, seed: int = 0) -> dict[str, float]:
    """Correlation of ``x`` and ``y`` controlling for ``z``: Pearson of the residuals of linear fits on ``z``;
    Spearman the same on ranks. Percentile bootstrap 95% CIs resample the (x, y, z) points."""
    x, y, z = (np.asarray(v, float) for v in (x, y, z))

    def partial(a, b, c, rank):
        if rank:
            a, b, c = (stats.rankdata(v) for v in (a, b, c))
        return _safe(lambda u, v: stats.pearsonr(u, v)[0], _residuals(a, c), _residuals(b, c))

    out = {"n": len(x)}
    for name, rank in (("pearson", False), ("spearman", True)):
        out[name] = partial(x, y, z, rank) if len(x) > 3 else float("nan")
        draws = []
        if bootstrap and len(x) > 3:
            rng = np.random.default_rng(seed)
            for _ in range(bootstrap):
                idx = rng.integers(0, len(x), len(x))
                draws.append(partial(x[idx], y[idx], z[idx], rank))
        draws = np.asarray([d for d in draws if np.isfinite(d)])
        out[f"{name}_lo"], out[f"{name}_hi"] = np.percentile(draws, [2.5, 97.5]) if len(draws) else (np.nan, np.nan)
    return out


def _safe(fn, x, y) -> float:
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(fn(x, y))


def _resample(x, y, rng, groups):
    if groups is None:
        idx = rng.integers(0, len(x), len(x))
        return x[idx], y[idx]
    return groups(rng)


def alignment_vs_u(df: pd.DataFrame, bootstrap: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per (metric, D_phi): max alignment per U (the paper's red points) and its correlation with U."""
    maxima = df.groupby(["metric", "D_phi", "U"], as_index=False)["alignment"].max()
    rows = []
    for (metric, d_phi), part in df.groupby(["metric", "D_phi"]):
        by_u = {u: g["alignment"].to_numpy() for u, g in part.groupby("U")}
        us = np.array(sorted(by_u))
        best = np.array([by_u[u].max() for u in us])

        def regroup(rng):  # resample the runs within each U, then take the maxima again
            return us.astype(float), np.array([rng.choice(by_u[u], len(by_u[u])).max() for u in us])

        rows.append({"metric": metric, "D_phi": d_phi, **correlation(us, best, bootstrap, groups=regroup)})
    return maxima, pd.DataFrame(rows)


def alignment_performance(df: pd.DataFrame, bootstrap: int, by=("metric", "U", "D_phi")) -> pd.DataFrame:
    """Per ``by`` group (default pooled over seeds): corr(accuracy, alignment), corr(accuracy, d), corr(d, alignment)
    and the partial corr(accuracy, alignment | d)."""
    rows = []
    for key, part in df.groupby(list(by)):
        group = dict(zip(by, key))
        for quantity, x, y in (
            ("alignment_performance", part["accuracy"], part["alignment"]),
            ("performance_depth", part["accuracy"], part["d"]),
            ("alignment_depth", part["d"], part["alignment"]),
        ):
            rows.append({**group, "quantity": quantity, **correlation(x, y, bootstrap)})
        rows.append(
            {
                **group,
                "quantity": "alignment_performance_given_depth",
                **partial_correlation(part["accuracy"], part["alignment"], part["d"], bootstrap),
            }
        )
    return pd.DataFrame(rows)


def plot(df: pd.DataFrame, maxima: pd.DataFrame, perf: pd.DataFrame, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for metric, part in df.groupby("metric"):
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for d_phi, sub in part.groupby("D_phi"):
            ax.scatter(sub["U"], sub["alignment"], s=10, alpha=0.4, label=f"runs, D_φ={d_phi}")
            best = maxima[(maxima.metric == metric) & (maxima.D_phi == d_phi)]
            ax.plot(best["U"], best["alignment"], "o-", color="tab:red", ms=4, label=f"max, D_φ={d_phi}")
        ax.set(xlabel="uniqueness U = 8 − r", ylabel=f"{metric} (max over layers)", title="alignment vs uniqueness")
        written.append(save_figure(fig, ax, out / f"alignment_vs_U_{metric}.png"))

        sub = perf[(perf.metric == metric) & (perf.quantity == "alignment_performance")]
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for name, marker in (("pearson", "o"), ("spearman", "s")):
            means = sub.groupby("U")[[name, f"{name}_lo", f"{name}_hi"]].mean()
            # a percentile CI need not contain the point estimate (few points): no negative bar lengths
            below, above = (
                (means[name] - means[f"{name}_lo"]).clip(lower=0),
                (means[f"{name}_hi"] - means[name]).clip(lower=0),
            )
            ax.errorbar(means.index, means[name], yerr=[below, above], marker=marker, capsize=3, label=name)
        ax.axhline(0, color="grey", lw=0.5)
        ax.set(xlabel="uniqueness U", ylabel="corr(performance, alignment)", title=f"{metric}: alignment–performance")
        written.append(save_figure(fig, ax, out / f"alignment_performance_{metric}.png"))
    return written


def analyze(root: Path, out: Path | None = None, bootstrap: int = 1000) -> dict[str, pd.DataFrame]:
    out = Path(out or root)
    df = tidy_runs(select_rus_runs(load_runs(root, CONFIG_KEYS), root))
    out.mkdir(parents=True, exist_ok=True)
    maxima, vs_u = alignment_vs_u(df, bootstrap)
    perf = alignment_performance(df, bootstrap)
    by_seed = alignment_performance(df, 0, by=("metric", "U", "D_phi", "seed"))
    df.to_csv(out / "rus_runs.csv", index=False)
    by_seed.to_csv(out / "alignment_performance_by_seed.csv", index=False)
    vs_u.merge(
        maxima.pivot_table(index=["metric", "D_phi"], columns="U", values="alignment")
        .add_prefix("max_U")
        .reset_index(),
        on=["metric", "D_phi"],
    ).to_csv(out / "alignment_vs_U.csv", index=False)
    perf.to_csv(out / "alignment_performance.csv", index=False)
    plot(df, maxima, perf, out)
    return {
        "runs": df,
        "maxima": maxima,
        "alignment_vs_U": vs_u,
        "alignment_performance": perf,
        "alignment_performance_by_seed": by_seed,
    }


def main(argv=None, prog: str | None = None) -> int:
    parser = study_parser(
        "rus", __doc__.split("\n")[0], prog=prog, sweep_help="a multirun directory (or any folder holding RUS runs)"
    )
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the CIs (0 = none)")
    args = parser.parse_args(argv)
    code, result = run_analysis(parser.prog, lambda: analyze(args.sweep, args.out, args.bootstrap), [args.sweep])
    if code:
        return code
    vs_u = result["alignment_vs_U"]
    print("alignment (max over runs) vs U, per metric and D_phi:")
    print(
        vs_u[["metric", "D_phi", "n", "pearson", "pearson_lo", "pearson_hi", "spearman", "spearman_lo", "spearman_hi"]]
        .round(3)
        .to_string(index=False)
    )
    perf = result["alignment_performance"]
    for quantity, title in (
        ("alignment_performance", "corr(performance, alignment)"),
        ("alignment_performance_given_depth", "partial corr(performance, alignment | encoder depth)"),
    ):
        ap = perf[perf.quantity == quantity].groupby(["metric", "U"])[["pearson", "pearson_lo", "pearson_hi"]].median()
        print(f"\n{title} per U (median over D_phi, 95% bootstrap CI):")
        print(ap.round(3).to_string())
    if args.wandb:
        out = Path(args.out or args.sweep)
        figures = [
            out / f"{kind}_{metric}.png"
            for metric in sorted(result["runs"]["metric"].unique())
            for kind in ("alignment_vs_U", "alignment_performance")
        ]  # what plot() wrote
        return publish(parser.prog, args.sweep, result, figures, "rus")
    return 0


if __name__ == "__main__":
    sys.exit(main())
