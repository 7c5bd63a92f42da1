"""Tables and figure of the uniqueness × objective study (``experiment=uniqueness_objective``).

    python -m mmrep.analysis.uniqueness_objective outputs/uniqueness_objective/multiruns/<date> [--out DIR] [--wandb]

The RUS data (multimodal_alignment synthetic/generate_prob_data.py) at uniqueness U = 8 − r, trained with the RUS
paper's (arXiv:2502.16282) supervised unimodal encoders (scripts/align_configs/rus_prob.yaml) or the misalignment
paper's (arXiv:2504.10143) contrastive loss (crossmodal_mislaignment utils/losses.py), measured the same way.
Per run (U, objective, seed):

* ``mutual_knn``, ``unbiased_cka``: the alignment of the x0 and x1 encoders, max over layer pairs
  (scripts/get_alignment.py);
* ``accuracy``: the linear-probe test accuracy of each modality's frozen representation (``metric=linear_probe``);
* ``accuracy`` of ``objective=bayes``: the exact Bayes-optimal accuracy from each modality (x0, x1) and from the shared
  bits alone (``x_c``), from the generator's label table (generate_prob_data.py) — the ceilings of a unimodal predictor
  and of a representation that keeps only the shared content;
* ``mcc:<group>``: per modality, the mean linear-probe MCC (``metric=factors``) over the generating bits of a group —
  ``shared-label`` / ``shared-other`` (x_c bits the label reads / does not), ``unique-label`` / ``unique-other``
  (the modality's own unique bits) and ``unseen`` (the other modality's unique bits, a control: ≈ 0).

Across seeds: the mean and a 95 % Student-t interval. Writes, in the sweep folder (or ``--out``):

* ``uniqueness_objective.csv`` — tidy: U, objective, metric, modality, mean, ci_low, ci_high, n_seeds;
* ``uniqueness_objective_runs.csv`` — the per-run values;
* ``uniqueness_objective_trend.csv`` — per objective, metric and modality: the least-squares slope of the per-run
  values on U with its 95 % t interval (the sign of each trend);
* ``uniqueness_objective.md`` — those as Markdown tables (mean ± CI half-width);
* ``uniqueness_objective.png`` — alignment, accuracy and bit MCC against U, one line per objective.

Expected from the two theories: contrastive representations keep the shared bits (alignment stays high) and lose
task accuracy as U grows (arXiv:2504.10143 Fig. 3: only the shared content is identified); supervised unimodal
encoders keep their accuracy and lose alignment (arXiv:2502.16282 Fig. 4).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mmrep.analysis import summary as seed_stats
from mmrep.analysis.cli import publish, run_analysis, study_parser
from mmrep.analysis.runs import load_runs, markdown, save_figure
from mmrep.core.files import atomic_write
from mmrep.data.rus import LABEL_BITS, conditional_table

CONFIG_KEYS = {"r": "dataset.redundancy", "objective_target": "objective._target_", "seed": "seed"}
GENERATOR_KEYS = {
    "temperature": "dataset.temperature",
    "num_classes": "dataset.num_classes",
    "features_seed": "dataset.features_seed",
    "weights_seed": "dataset.weights_seed",
}
RESULT_COLUMNS = ("metric", "value", "aggregate", "modality", "split", "probe", "role")  # read from results.csv
ALIGNMENT_METRICS = ("mutual_knn", "unbiased_cka")
BIT_GROUPS = ("shared-label", "shared-other", "unique-label", "unique-other", "unseen")
OUTPUTS = (
    "uniqueness_objective.csv",
    "uniqueness_objective_runs.csv",
    "uniqueness_objective_trend.csv",
    "uniqueness_objective.md",
    "uniqueness_objective.png",
)


def objective_name(target) -> str:
    """The objective option of a run from its ``objective._target_``: the module name (``mmrep.objectives.mmcl.MMCL``
    → ``mmcl``, ``…unimodal.UnimodalSupervised`` → ``unimodal``)."""
    parts = str(target).split(".")
    return parts[-2] if len(parts) >= 2 else str(target)


def bit_group(role: str, modality: str) -> str:
    """A bit's group as seen from ``modality``: the role of :func:`mmrep.data.rus.bit_roles` with the modality's own
    ``<modality>-unique-*`` bits as ``unique-*`` and the other modality's unique bits as ``unseen``."""
    if role.startswith("shared-"):
        return role
    if role.startswith(f"{modality}-unique-"):
        return role.removeprefix(f"{modality}-")
    return "unseen"


def bayes_accuracy(
    redundancy: int, temperature: float = 0.05, num_classes: int = 4, features_seed: int = 1, weights_seed: int = 2
) -> dict[str, float]:
    """The Bayes-optimal accuracy E_x max_y p(y | x) with uniform inputs (generate_prob_data.py) from
    ``x0`` = (x_c, x_u1), ``x1`` = (x_c, x_u2) and ``x_c`` alone, from the exact (256, 16, 16, C) label table (the
    D_φ transform is injective on the 4,096 distinct (x_c, x_u2), so it does not change modality 1's ceiling)."""
    table, _ = conditional_table(
        int(redundancy), float(temperature), int(num_classes), int(features_seed), int(weights_seed)
    )
    return {
        "x0": float(table.mean(axis=2).max(axis=-1).mean()),
        "x1": float(table.mean(axis=1).max(axis=-1).mean()),
        "x_c": float(table.mean(axis=(1, 2)).max(axis=-1).mean()),
    }


def bayes_rows(raw: pd.DataFrame) -> pd.DataFrame:
    """:func:`summarize`-shaped rows (objective ``bayes``, metric ``accuracy``, n_seeds 0) for every U and generator
    setting of the runs in ``raw`` (with the :data:`GENERATOR_KEYS` columns)."""
    defaults = {"temperature": 0.05, "num_classes": 4, "features_seed": 1, "weights_seed": 2}  # RUSDataModule's
    settings = raw[["r", *GENERATOR_KEYS]].fillna(defaults).drop_duplicates()
    generators = settings.drop(columns="r").drop_duplicates()
    if len(generators) > 1:
        raise ValueError(
            f"the runs use {len(generators)} different label generators ({list(GENERATOR_KEYS.values())}); "
            "analyse each sweep on its own"
        )
    rows = [
        {
            "U": LABEL_BITS - int(s.r),
            "objective": "bayes",
            "metric": "accuracy",
            "modality": m,
            "mean": v,
            "ci_low": float("nan"),
            "ci_high": float("nan"),
            "n_seeds": 0,
        }
        for s in settings.itertuples()
        for m, v in bayes_accuracy(int(s.r), s.temperature, s.num_classes, s.features_seed, s.weights_seed).items()
    ]
    return pd.DataFrame(rows)


def select_runs(raw: pd.DataFrame, root: Path) -> pd.DataFrame:
    """The rows of the runs in ``raw`` (from :func:`load_runs` with :data:`CONFIG_KEYS`) that are RUS runs
    (``dataset.redundancy`` set) with an alignment (aggregate=max) and linear-probe test accuracy; other runs are
    skipped with a warning, and a ValueError says what is missing when none is left."""
    raw = raw.reindex(columns=list(dict.fromkeys([*raw.columns, *RESULT_COLUMNS])))
    configured = set(raw.loc[raw["r"].notna(), "run"])
    aligned = set(raw.loc[raw["aggregate"].eq("max") & raw["metric"].isin(ALIGNMENT_METRICS), "run"])
    probed = set(raw.loc[raw["metric"].eq("accuracy") & raw["probe"].eq("linear") & raw["split"].eq("test"), "run"])
    return seed_stats.keep_runs(
        raw,
        [
            ("no dataset.redundancy (not dataset=rus)", configured),
            ("no alignment (aggregate=max) or linear-probe test accuracy rows", aligned & probed),
        ],
        root,
        "uniqueness × objective",
        "experiment=uniqueness_objective",
    )


def run_values(raw: pd.DataFrame, probe: str = "linear") -> pd.DataFrame:
    """One row per (run, metric, modality): run, U, objective, seed, metric, modality, value (see the module
    docstring; ``probe`` picks the factor probe whose MCC is averaged per bit group)."""
    raw = raw.reindex(columns=list(dict.fromkeys([*raw.columns, *RESULT_COLUMNS])))
    keys = ["run", "r", "objective_target", "seed"]
    aligned = raw[raw["aggregate"].eq("max") & raw["metric"].isin(ALIGNMENT_METRICS)]
    accuracy = raw[raw["metric"].eq("accuracy") & raw["probe"].eq("linear") & raw["split"].eq("test")]
    bits = raw[raw["metric"].eq("mcc") & raw["probe"].eq(probe) & raw["role"].notna()].copy()
    bits["metric"] = [f"mcc:{bit_group(r, m)}" for r, m in zip(bits["role"], bits["modality"])]
    bits = bits.groupby([*keys, "metric", "modality"], as_index=False, dropna=False)["value"].mean()
    df = pd.concat(
        [part[[*keys, "metric", "modality", "value"]] for part in (aligned, accuracy, bits)], ignore_index=True
    )
    df.insert(1, "U", LABEL_BITS - df.pop("r").astype(int))
    df.insert(2, "objective", df.pop("objective_target").map(objective_name))
    return df.sort_values(["objective", "metric", "modality", "U", "seed"], ignore_index=True)


def summarize(values: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Per (U, objective, metric, modality): mean, ci_low, ci_high, n_seeds over the seeds' values."""
    return seed_stats.summarize(values, ["U", "objective", "metric", "modality"], level)


def trend(values: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Per (objective, metric, modality): the least-squares slope of the per-run values on U (per unit of U) with
    its ``level`` t interval, the values at the smallest and largest U (means over seeds) and the run count."""
    return seed_stats.trend(values, "U", ["objective", "metric", "modality"], level)


def _wide(summary: pd.DataFrame, metrics: list[str], index: list[str], columns: list[str]) -> pd.DataFrame:
    part = summary[summary["metric"].isin(metrics)].copy()
    part["cell"] = seed_stats.cells(part)
    part["metric"] = pd.Categorical(part["metric"], [m for m in metrics if m in set(part["metric"])])
    wide = part.pivot_table(index=index, columns=columns, values="cell", aggfunc="first", observed=True)
    return wide.fillna("")


def markdown_report(summary: pd.DataFrame, trends: pd.DataFrame) -> str:
    """The study's Markdown: alignment and accuracy per U (objectives side by side), the bit MCC per U and objective
    (columns group · modality) and the slopes on U; cells are mean ± 95 % CI half-width over seeds."""
    seeds = sorted(set(summary.loc[summary["objective"] != "bayes", "n_seeds"]))
    first = _wide(summary, [*ALIGNMENT_METRICS, "accuracy"], ["U"], ["objective", "metric", "modality"])
    parts = [
        f"Alignment (max over layer pairs) and linear-probe test accuracy; mean ± 95 % t-CI over "
        f"{'/'.join(map(str, seeds))} seeds; bayes = the exact Bayes-optimal accuracy from x0, x1 and the shared "
        f"bits x_c alone.\n\n{markdown(first)}"
    ]
    groups = [f"mcc:{g}" for g in BIT_GROUPS]
    if summary["metric"].isin(groups).any():
        bits = _wide(summary, groups, ["U", "objective"], ["metric", "modality"])
        bits.columns = [(m.removeprefix("mcc:"), mod) for m, mod in bits.columns]
        parts.append(
            "Linear-probe MCC of the generating bits, mean over the bits of each group (unique = the "
            f"modality's own unique bits, unseen = the other modality's).\n\n{markdown(bits)}"
        )
    slopes = trends.assign(
        slope_ci=[
            seed_stats.cell(s, lo, hi, 3)
            for s, lo, hi in zip(trends["slope"], trends["slope_low"], trends["slope_high"])
        ]
    )
    slopes = slopes.set_index(["objective", "metric", "modality"])[["slope_ci", "at_U_min", "at_U_max", "n_runs"]]
    parts.append(
        f"Least-squares slope of the per-run values on U (per unit of U, 95 % t-CI).\n\n"
        f"{markdown(slopes.rename(columns={'slope_ci': 'slope'}), floatfmt='.2f')}"
    )
    return "\n\n".join(parts) + "\n"


def plot(summary: pd.DataFrame, path: Path) -> Path:
    """Three panels against U with 95 % CI bars, one colour per objective: alignment (solid mutual kNN, dashed
    unbiased CKA), linear-probe accuracy (solid x0, dashed x1; black: the Bayes accuracy from x0 and from x_c) and
    bit MCC (shared-label / unique-label / shared-other, mean of the modalities)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    objectives = sorted(set(summary["objective"]) - {"bayes"})
    colours = dict(zip(objectives, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    has_bits = summary["metric"].str.startswith("mcc:").any()
    fig, axes = plt.subplots(1, 3 if has_bits else 2, figsize=(13 if has_bits else 9, 3.6))

    def line(ax, part, label, style):
        part = part.sort_values("U")
        err = seed_stats.error_bars(part)
        ax.errorbar(
            part["U"],
            part["mean"],
            yerr=err,
            capsize=3,
            marker="o",
            ms=3,
            ls=style,
            color=colours[part["objective"].iloc[0]],
            label=label,
        )

    for objective in objectives:
        mine = summary[summary["objective"] == objective]
        for metric, style in zip(ALIGNMENT_METRICS, ("-", "--")):
            part = mine[mine["metric"] == metric]
            if not part.empty:
                line(axes[0], part, f"{objective}: {metric}", style)
        for modality, style in zip(sorted(set(mine.loc[mine["metric"] == "accuracy", "modality"])), ("-", "--")):
            line(
                axes[1],
                mine[(mine["metric"] == "accuracy") & (mine["modality"] == modality)],
                f"{objective}: {modality}",
                style,
            )
        if has_bits:
            for group, style in (("shared-label", "-"), ("unique-label", "--"), ("shared-other", ":")):
                part = (
                    mine[mine["metric"] == f"mcc:{group}"]
                    .groupby(["U", "objective"], as_index=False)[["mean", "ci_low", "ci_high"]]
                    .mean()
                )
                if not part.empty:
                    line(axes[2], part, f"{objective}: {group}", style)
    axes[0].set(xlabel="uniqueness U = 8 − r", ylabel="alignment (max over layer pairs)", title="alignment")
    bayes = summary[summary["objective"] == "bayes"]
    for modality, style in (("x0", ":"), ("x_c", "-.")):
        part = bayes[bayes["modality"] == modality].sort_values("U")
        if not part.empty:
            axes[1].plot(part["U"], part["mean"], ls=style, color="black", lw=1, label=f"Bayes from {modality}")
    axes[1].axhline(0.25, color="grey", lw=0.5)
    axes[1].set(xlabel="uniqueness U = 8 − r", ylabel="linear-probe test accuracy", title="task accuracy (chance 0.25)")
    if has_bits:
        axes[2].set(
            xlabel="uniqueness U = 8 − r", ylabel="linear-probe MCC (mean of x0, x1)", title="bit identification"
        )
    for ax in axes[:-1]:
        ax.legend(fontsize=7)
    return save_figure(fig, axes[-1], path)


def analyze(root: Path, out: Path | None = None, probe: str = "linear") -> dict[str, pd.DataFrame]:
    """Read the sweep under ``root``, write the outputs (see the module docstring) to ``out`` (default ``root``) and
    return ``{"runs", "summary", "trend"}``."""
    root = Path(root)
    out = Path(out or root)
    raw = select_runs(load_runs(root, {**CONFIG_KEYS, **GENERATOR_KEYS}), root)
    values = run_values(raw, probe)
    summary = pd.concat([summarize(values), bayes_rows(raw)], ignore_index=True).sort_values(
        ["U", "objective", "metric", "modality"], ignore_index=True
    )
    trends = trend(values)
    for name, df in (
        ("uniqueness_objective.csv", summary),
        ("uniqueness_objective_runs.csv", values),
        ("uniqueness_objective_trend.csv", trends),
    ):
        with atomic_write(out / name) as fh:
            df.to_csv(fh, index=False, float_format="%.6g")
    with atomic_write(out / "uniqueness_objective.md") as fh:
        fh.write(markdown_report(summary, trends))
    plot(summary, out / "uniqueness_objective.png")
    return {"runs": values, "summary": summary, "trend": trends}


def main(argv=None, prog: str | None = None) -> int:
    parser = study_parser(
        "uniqueness_objective",
        __doc__.split("\n\n")[0],
        prog=prog,
        sweep_help="a multirun directory of experiment=uniqueness_objective",
        wandb_help="also log the tables and the figure to W&B, in the group of the sweep's runs",
    )
    parser.add_argument(
        "--probe",
        default="linear",
        choices=["linear", "mlp"],
        help="the factor probe whose MCC is averaged per bit group",
    )
    args = parser.parse_args(argv)
    code, result = run_analysis(parser.prog, lambda: analyze(args.sweep, args.out, args.probe), [args.sweep])
    if code:
        return code
    out = Path(args.out or args.sweep)
    print((out / "uniqueness_objective.md").read_text())
    if args.wandb:
        tables = {"uniqueness_objective": result["summary"], "uniqueness_objective_trend": result["trend"]}
        return publish(parser.prog, args.sweep, tables, [out / "uniqueness_objective.png"], "uniqueness_objective")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
