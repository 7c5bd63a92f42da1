"""Table 1 of the RUS paper (arXiv:2502.16282) from ``experiment=multibench_alignment`` sweeps (multimodal_alignment
scripts/evaluate_multiseed.py).

    python -m mmrep.analysis.multibench outputs/multibench_alignment/multiruns/<date> [more sweeps] [--out DIR]
    python -m mmrep.analysis.multibench --tune outputs/multibench_grid/multiruns/<date>   # tune_real.sh stage 2

Each sweep holds one dataset and modality pair (a, b), trained at depths 1..10 × seeds (30 runs). For each fixed
modality F in {a, b}, the **best** F model is the one with the highest validation performance over all runs; for
the other modality V, the alignment (max over layer pairs, unbiased CKA by default) between that best F model and
each of V's models is computed on a split (train and test; the first ``n`` = 4096 samples), and correlated
(Pearson) with V's performance on that split. A Table 1 column "a–b: V" is that correlation for V's models.
Performance is accuracy, or the sign accuracy for the regression datasets (MOSI, MOSEI).

Writes ``multibench_alignment.csv`` (tidy: dataset, pair, fixed, varied, split, metric, pearson, n_models) and
``multibench_runs.csv`` (per run and split: alignment to the best fixed model and performance), and prints
Table 1's layout. Models are rebuilt from each run's saved config and ``checkpoints/last.ckpt`` (best-validation
weights restored); datasets are loaded once per configuration.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf
from scipy import stats

from mmrep.analysis.cli import publish, run_analysis, study_parser
from mmrep.analysis.runs import RunFolder, usable_runs
from mmrep.core.contract import concat_batches
from mmrep.core.files import atomic_write
from mmrep.metrics.alignment import layerwise_alignment
from mmrep.metrics.features import layer_features
from mmrep.pipeline.build import build
from mmrep.pipeline.resume import load_for_evaluation


def performance_metric(task: str) -> str:
    """The metric the paper reports: accuracy, or the accuracy of the sign for regression (the original's
    training_structures/unimodal_supervised.py)."""
    return "sign_accuracy" if task == "regression" else "accuracy"


def performance(run: RunFolder, metric: str, modality: str, split: str) -> float:
    rows = run.results[
        (run.results.metric == metric)
        & (run.results.modality == modality)
        & (run.results.split == split)
        & run.results.get("probe", pd.Series(np.nan, index=run.results.index)).isna()
    ]
    if rows.empty:
        raise ValueError(f"{run.path}: no {metric} row for {modality} on {split} (was metric=task_alignment used?)")
    return float(rows.value.iloc[0])


class FeatureReader:
    """Per-layer features of a run's encoder on a split. Each dataset configuration is loaded once, each run's model
    once, and each (run, modality, split) is encoded once."""

    def __init__(self, n: int) -> None:
        self.n = int(n)
        self._data: dict[str, object] = {}
        self._models: dict[Path, object] = {}
        self._features: dict[tuple, list] = {}

    def datamodule(self, run: RunFolder):
        key = OmegaConf.to_yaml(run.config.dataset)
        if key not in self._data:
            self._data[key] = build(run.config)[0]
        return self._data[key]

    def model(self, run: RunFolder):
        if run.path not in self._models:
            _, model = build(run.config)
            load_for_evaluation(model, self.datamodule(run), str(run.path / "checkpoints" / "last.ckpt"), "cpu")
            self._models[run.path] = model
        return self._models[run.path]

    def __call__(self, run: RunFolder, modality: str, split: str) -> list:
        key = (run.path, modality, split)
        if key not in self._features:
            inputs = concat_batches(self.datamodule(run).heldout(split, self.n), [modality])[modality]
            self._features[key] = layer_features(self.model(run).encoders[modality], [inputs])[1]
        return self._features[key]


def analyze_sweep(sweep: Path, metric: str = "unbiased_cka", n: int = 4096, splits=("train", "test")):
    """Tidy correlation rows and per-run rows for one sweep (one dataset, one pair)."""
    runs = usable_runs(sweep)[0]
    pairs = {tuple(r.config.dataset.modalities or []) for r in runs}
    if len(pairs) != 1 or len(next(iter(pairs))) != 2:
        raise ValueError(f"{sweep}: expected one modality pair per sweep (dataset.modalities), got {sorted(pairs)}")
    (a, b), dataset = next(iter(pairs)), str(runs[0].config.dataset.get("name", "?"))
    reader = FeatureReader(n)
    perf_metric = performance_metric(reader.datamodule(runs[0]).spec.task)
    rows, per_run = [], []
    for fixed, varied in ((a, b), (b, a)):
        best = max(runs, key=lambda r: performance(r, perf_metric, fixed, "val"))
        for split in splits:
            fixed_layers = reader(best, fixed, split)
            aligned, perf = [], []
            for run in runs:
                varied_layers = reader(run, varied, split)
                aligned.append(layerwise_alignment(fixed_layers, varied_layers, [metric])[metric].best)
                perf.append(performance(run, perf_metric, varied, split))
                per_run.append(
                    {
                        "dataset": dataset,
                        "pair": f"{a}-{b}",
                        "fixed": fixed,
                        "varied": varied,
                        "split": split,
                        "run": str(run.path.relative_to(sweep)),
                        "alignment": aligned[-1],
                        "performance": perf[-1],
                        "best_fixed_run": str(best.path.relative_to(sweep)),
                    }
                )
            r = (
                stats.pearsonr(aligned, perf)[0]
                if len(runs) > 2 and np.std(perf) > 0 and np.std(aligned) > 0
                else np.nan
            )
            rows.append(
                {
                    "dataset": dataset,
                    "pair": f"{a}-{b}",
                    "fixed": fixed,
                    "varied": varied,
                    "split": split,
                    "metric": metric,
                    "performance": perf_metric,
                    "pearson": float(r),
                    "n_models": len(runs),
                }
            )
    return pd.DataFrame(rows), pd.DataFrame(per_run)


def tune(sweep: Path) -> pd.DataFrame:
    """Stage 2 of the original's scripts/tune_real.sh (scripts/tune_hyp.py) on a ``multibench_grid`` sweep: per
    modality, the (lr, weight decay) with the highest validation performance averaged over encoder depths.
    Rows: modality, lr, weight_decay, score, n_depths."""
    rows = []
    for run in usable_runs(sweep)[0]:
        cfg, results = run.config, run.results
        task = results[(results.split == "val") & results.metric.isin(["accuracy", "sign_accuracy"])]
        for _, row in task.iterrows():
            rows.append(
                {
                    "modality": row.modality,
                    "metric": row.metric,
                    "lr": float(cfg.objective.optimizer.lr),
                    "weight_decay": float(cfg.objective.optimizer.weight_decay),
                    "depth": cfg.get("enc_depth"),
                    "value": row.value,
                }
            )
    if not rows:
        raise FileNotFoundError(f"{sweep}: no runs with validation accuracy rows (experiment=multibench_grid)")
    grid = pd.DataFrame(rows)
    grid = grid[grid.metric == ("sign_accuracy" if (grid.metric == "sign_accuracy").any() else "accuracy")]
    means = grid.groupby(["modality", "lr", "weight_decay"]).value.agg(["mean", "count"]).reset_index()
    best = means.loc[means.groupby("modality")["mean"].idxmax()]
    return best.rename(columns={"mean": "score", "count": "n_depths"}).reset_index(drop=True)


def table1(summary: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Table 1's layout: one row per dataset, a column "a-b: V" per pair and varied modality V."""
    part = summary[summary.split == split].copy()
    part["column"] = part["pair"] + ": " + part["varied"]
    return part.pivot_table(index="dataset", columns="column", values="pearson", sort=False)


def main(argv=None, prog: str | None = None) -> int:
    parser = study_parser(
        "multibench",
        __doc__.split("\n\n")[0],
        prog=prog,
        many=True,
        sweep_help="multirun directories of experiment=multibench_alignment",
        wandb_help="also log the tables to W&B, in the group of the first sweep's runs (not with --tune)",
    )
    parser.add_argument(
        "--metric", default="unbiased_cka", help="alignment metric (evaluate_multiseed.py default: unbiased_cka)"
    )
    parser.add_argument("--n", type=int, default=4096, help="samples per split (get_alignment.py --align-bs: 4096)")
    parser.add_argument("--tune", action="store_true", help="the sweeps are multibench_grid sweeps: pick (lr, wd)")
    args = parser.parse_args(argv)
    if args.tune and args.wandb:
        parser.error("--wandb does not apply to --tune")
    if args.tune:
        return _print_tuned(parser.prog, args.sweeps)

    def analyze():
        summaries, runs = zip(*(analyze_sweep(sweep, args.metric, args.n) for sweep in args.sweeps))
        return pd.concat(summaries, ignore_index=True), pd.concat(runs, ignore_index=True)

    code, result = run_analysis(parser.prog, analyze, args.sweeps)
    if code:
        return code
    summary, per_run = result
    out = args.out or args.sweeps[0]
    for name, df in (("multibench_alignment.csv", summary), ("multibench_runs.csv", per_run)):
        with atomic_write(out / name) as fh:
            df.to_csv(fh, index=False, float_format="%.6g")
    from rich.console import Console
    from rich.table import Table

    for split in ("test", "train"):
        wide = table1(summary, split)
        table = Table(title=f"Table 1: Pearson r(alignment to the best fixed model, performance), {split} split")
        table.add_column("dataset")
        for col in wide.columns:
            table.add_column(col, justify="right")
        for dataset, row in wide.iterrows():
            table.add_row(str(dataset), *["—" if pd.isna(v) else f"{v:.3f}" for v in row.values])
        Console().print(table)
    print(f"wrote {out / 'multibench_alignment.csv'} and {out / 'multibench_runs.csv'}")
    if args.wandb:
        tables = {"multibench_alignment": summary, "multibench_runs": per_run}
        return publish(parser.prog, args.sweeps[0], tables, [], "multibench")
    return 0


def _print_tuned(prog: str, sweeps: list[Path]) -> int:
    code, tuned = run_analysis(prog, lambda: [tune(sweep) for sweep in sweeps], sweeps)
    if code:
        return code
    for sweep, best in zip(sweeps, tuned):
        with atomic_write(sweep / "tuned.csv") as fh:
            best.to_csv(fh, index=False, float_format="%.6g")
        groups = ", ".join(
            f"{r.modality}: {{lr: {r.lr:g}, weight_decay: {r.weight_decay:g}}}" for r in best.itertuples()
        )
        print(best.to_string(index=False))
        print(f"objective.param_groups='{{{groups}}}'   # for experiment=multibench_alignment")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
