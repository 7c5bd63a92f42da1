"""Tables and figure of the objective study (Study 3): ``experiment=objective_identifiability`` on the numeric
simulation and ``experiment=objective_identifiability_rus`` on RUS data.

    mmrep analyze objectives SWEEP [SWEEP ...] [--out DIR] [--wandb]

Every paired objective (InfoNCE as the misalignment paper, CLIP, SigLIP, VICReg, Barlow Twins, supervised +
contrastive) and the RUS paper's supervised unimodal encoders, trained with the same encoders and budget and measured
the same way. Per run:

* numeric (``dataset = numeric``; θ, β from the run's bias): ``id:block`` — the R² of the unbiased shared block
  s_inv = s_{θ \\ β} from each modality's representation; ``id:<role>`` — the mean R² of the latents of a role:
  ``invariant`` (θ \\ β), ``perturbed`` (β), ``omitted`` (not in θ) and ``modality-specific`` (the modality's own
  m_x or m_t); does an objective recover exactly θ \\ β (arXiv:2504.10143 Thm. 1 proves it for InfoNCE)?
* RUS (``dataset = rus``, U = 8 − r): ``accuracy`` — the linear-probe test accuracy of each modality;
* both: ``alignment`` — each alignment metric between the encoders at the best layer pair (scripts/get_alignment.py
  of multimodal_alignment); ``rankme`` — the effective rank of each representation (arXiv:2210.02885; ≈ 1 =
  collapsed).

Across seeds: the mean and a 95 % Student-t interval. Writes, in the first sweep folder (or ``--out``):

* ``objectives.csv`` — tidy: dataset, U, objective, quantity, metric, modality, mean, ci_low, ci_high, n_seeds
  (U empty for numeric rows);
* ``objectives_runs.csv`` — the per-run values;
* ``objectives.md`` — the numeric table (objective × quantity) and the RUS table (objective × quantity at each U),
  cells mean ± CI half-width, representations' values averaged over the two modalities;
* ``objectives.png`` — the numeric R² per role and objective; RUS alignment and accuracy against U.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mmrep.analysis import misalignment_alignment as misalignment
from mmrep.analysis import summary as seed_stats
from mmrep.analysis.cli import publish, run_analysis, study_parser
from mmrep.analysis.runs import load_runs, markdown, save_figure
from mmrep.analysis.uniqueness_objective import objective_name
from mmrep.core.files import atomic_write
from mmrep.data.rus import LABEL_BITS

CONFIG_KEYS = {**misalignment.CONFIG_KEYS, "objective_target": "objective._target_", "r": "dataset.redundancy"}
RESULT_COLUMNS = ("metric", "value", "aggregate", "modality", "split", "probe", "target")
ROLES = ("invariant", "perturbed", "omitted", "modality-specific")
ALIGNMENT = ("mutual_knn", "unbiased_cka", "svcca")
KEYS = ["dataset", "U", "objective", "quantity", "metric", "modality"]
OUTPUTS = ("objectives.csv", "objectives_runs.csv", "objectives.md", "objectives.png")
# the objectives in the order of the tables: the two papers' first
ORDER = ("unimodal", "mmcl", "mmcl_supervised", "clip", "siglip", "vicreg", "barlow_twins")


def select_runs(raw: pd.DataFrame, root: Path) -> pd.DataFrame:
    """The rows of the numeric and RUS runs in ``raw`` (from :func:`load_runs` with :data:`CONFIG_KEYS`) that carry
    alignment rows and, numeric, R² rows or, RUS, linear-probe test accuracy; other runs are skipped with a warning,
    and a ValueError says what is missing when none is left."""
    raw = raw.reindex(columns=list(dict.fromkeys([*raw.columns, *RESULT_COLUMNS])))
    dataset = raw["dataset_target"].map(misalignment.dataset_name)
    studied = set(raw.loc[dataset.isin(["numeric", "rus"]), "run"])
    aligned = set(raw.loc[raw["aggregate"].eq("max") & raw["metric"].isin(ALIGNMENT), "run"])
    scored = set(raw.loc[dataset.eq("numeric") & raw["metric"].eq("r2") & raw["target"].notna(), "run"]) | set(
        raw.loc[dataset.eq("rus") & raw["metric"].eq("accuracy") & raw["split"].eq("test"), "run"]
    )
    return seed_stats.keep_runs(
        raw,
        [
            ("not a numeric or RUS run", studied),
            ("no alignment rows (metric.alignment)", aligned),
            ("no R² (numeric) or linear-probe test accuracy (RUS) rows", scored),
        ],
        root,
        "objective study",
        "experiment=objective_identifiability or objective_identifiability_rus",
    )


def _rankme(rows: pd.DataFrame) -> pd.DataFrame:
    part = rows[rows["metric"].eq("rankme")]
    return pd.DataFrame(
        {"quantity": "rankme", "metric": "rankme", "modality": part["modality"], "value": part["value"]}
    )


def _alignment(rows: pd.DataFrame) -> pd.DataFrame:
    part = rows[rows["aggregate"].eq("max") & rows["metric"].isin(ALIGNMENT)]
    return pd.DataFrame(
        {"quantity": "alignment", "metric": part["metric"], "modality": part["modality"], "value": part["value"]}
    )


def numeric_values(rows: pd.DataFrame) -> pd.DataFrame:
    """The quantities of one numeric run (module docstring): id:block, id:<role>, alignment, rankme."""
    first = rows.iloc[0]
    blocks = misalignment.resolve_blocks(first["dataset_target"], first["theta"], first["beta"], first["n_semantics"])
    r2 = rows[rows["metric"].eq("r2") & rows["probe"].eq("linear") & rows["target"].notna()]
    found = []
    for modality, part in r2.groupby("modality", sort=True):
        roles = part["target"].map({**blocks["roles"], f"m_{modality}": "modality-specific"})
        for role in ROLES:
            if roles.eq(role).any():
                found.append(("id:" + role, modality, float(part.loc[roles.eq(role), "value"].mean())))
        block = part.loc[part["target"].eq("s_inv"), "value"]
        if len(block):
            found.append(("id:block", modality, float(block.mean())))
    identified = pd.DataFrame(found, columns=["quantity", "modality", "value"]).assign(metric="r2")
    return pd.concat([identified, _alignment(rows), _rankme(rows)], ignore_index=True)


def rus_values(rows: pd.DataFrame) -> pd.DataFrame:
    """The quantities of one RUS run: accuracy (linear probe, test), alignment, rankme."""
    part = rows[rows["metric"].eq("accuracy") & rows["probe"].eq("linear") & rows["split"].eq("test")]
    accuracy = pd.DataFrame(
        {"quantity": "accuracy", "metric": "accuracy", "modality": part["modality"], "value": part["value"]}
    )
    return pd.concat([accuracy, _alignment(rows), _rankme(rows)], ignore_index=True)


def run_values(raw: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, quantity, metric, modality): run, dataset, U (RUS), objective, seed and the value."""
    frames = []
    for run, rows in raw.groupby("run", sort=True):
        first = rows.iloc[0]
        dataset = misalignment.dataset_name(first["dataset_target"])
        values = numeric_values(rows) if dataset == "numeric" else rus_values(rows)
        u = LABEL_BITS - int(first["r"]) if dataset == "rus" else np.nan
        frames.append(
            values.assign(
                run=run, dataset=dataset, U=u, objective=objective_name(first["objective_target"]), seed=first["seed"]
            )
        )
    df = pd.concat(frames, ignore_index=True)[["run", *KEYS[:3], "seed", *KEYS[3:], "value"]]
    return df.sort_values([*KEYS, "seed"], ignore_index=True, key=_objective_order)


def _objective_order(column: pd.Series) -> pd.Series:
    if column.name != "objective":
        return column
    return column.map(lambda o: (ORDER.index(o) if o in ORDER else len(ORDER), o))


def summarize(values: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Per (dataset, U, objective, quantity, metric, modality): mean, ci_low, ci_high, n_seeds over the seeds."""
    filled = values.assign(U=values["U"].fillna(-1))  # numeric runs have no U: group them together
    out = seed_stats.summarize(filled, KEYS, level)
    out["U"] = out["U"].where(out["U"] >= 0)
    return out.sort_values(KEYS, ignore_index=True, key=_objective_order)


def _modality_mean(values: pd.DataFrame) -> pd.DataFrame:
    """Per run and quantity: the mean over the modalities (alignment has one, ``x|t``)."""
    keys = ["run", "dataset", "U", "objective", "seed", "quantity", "metric"]
    return values.groupby(keys, as_index=False, dropna=False, sort=False)["value"].mean().assign(modality="mean")


def _column(quantity: str, metric: str) -> str:
    if quantity.startswith("id:"):
        return f"R² {quantity[3:]}"
    return metric if quantity == "alignment" else quantity


def markdown_report(values: pd.DataFrame) -> str:
    """The numeric table (objective × quantity) and the RUS table (objective × quantity per U), from the per-run
    values averaged over the modalities; cells mean ± 95 % CI half-width over seeds."""
    table = summarize(_modality_mean(values))
    table = table.assign(
        cell=seed_stats.cells(table), column=[_column(q, m) for q, m in zip(table["quantity"], table["metric"])]
    )
    parts = []
    numeric = table[table["dataset"] == "numeric"]
    if not numeric.empty:
        order = ["R² block", *[f"R² {r}" for r in ROLES], *ALIGNMENT, "rankme"]
        wide = numeric.pivot_table(index="objective", columns="column", values="cell", aggfunc="first", sort=False)
        wide = wide[[c for c in order if c in wide.columns]]
        seeds = "/".join(map(str, sorted(set(numeric["n_seeds"]))))
        parts.append(
            "**numeric** — linear-probe R² of the unbiased block s_inv = s_{θ \\ β} and mean R² of the latents of each "
            "role (the modality-specific: the modality's own m), alignment between the encoders (best layer pair) and "
            f"RankMe; the two modalities averaged; mean ± 95 % t-CI over {seeds} seeds.\n\n{markdown(wide)}"
        )
    rus = table[table["dataset"] == "rus"]
    if not rus.empty:
        rus = rus.assign(column=[f"{c} U={int(u)}" for c, u in zip(rus["column"], rus["U"])])
        order = [
            f"{c} U={u}"
            for c in ("accuracy", "mutual_knn", "unbiased_cka", "rankme")
            for u in sorted(set(rus["U"].astype(int)))
        ]
        wide = rus.pivot_table(index="objective", columns="column", values="cell", aggfunc="first", sort=False)
        wide = wide[[c for c in order if c in wide.columns]]
        seeds = "/".join(map(str, sorted(set(rus["n_seeds"]))))
        parts.append(
            "**RUS** — linear-probe test accuracy (chance 0.25), alignment between the encoders (best layer pair) and "
            f"RankMe at uniqueness U = 8 − r; the two modalities averaged; mean ± 95 % t-CI over {seeds} seeds."
            f"\n\n{markdown(wide)}"
        )
    return "\n\n".join(parts) + "\n"


def plot(values: pd.DataFrame, path: Path) -> Path:
    """Numeric: R² per role (bars) per objective; RUS: unbiased CKA and accuracy against U, one line per objective;
    95 % CI bars; the two modalities averaged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = summarize(_modality_mean(values))
    numeric, rus = table[table["dataset"] == "numeric"], table[table["dataset"] == "rus"]
    panels = (not numeric.empty) + 2 * (not rus.empty)
    fig, axes = plt.subplots(1, panels, figsize=(4.8 * panels, 3.8), squeeze=False)
    axes = list(axes[0])
    objectives = list(dict.fromkeys(table["objective"]))
    colours = dict(zip(objectives, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 2))
    if not numeric.empty:
        ax = axes.pop(0)
        roles = ["id:block", *[f"id:{r}" for r in ROLES]]
        width = 0.8 / max(1, numeric["objective"].nunique())
        for i, objective in enumerate(dict.fromkeys(numeric["objective"])):
            mine = numeric[(numeric["objective"] == objective) & numeric["quantity"].isin(roles)]
            part = mine.set_index("quantity").reindex(roles)
            err = seed_stats.error_bars(part)
            ax.bar(
                np.arange(len(roles)) + i * width,
                part["mean"],
                width,
                yerr=err,
                capsize=2,
                color=colours[objective],
                label=objective,
            )
        ax.set_xticks(np.arange(len(roles)) + 0.4 - width / 2, [r[3:] for r in roles], rotation=20)
        ax.set(ylabel="linear-probe R²", title="numeric: which latents each objective keeps")
        ax.axhline(0, color="grey", lw=0.5)
        ax.legend(fontsize=7)
    for metric, title in (("unbiased_cka", "RUS: alignment"), ("accuracy", "RUS: task accuracy (chance 0.25)")):
        if rus.empty:
            break
        ax = axes.pop(0)
        for objective in dict.fromkeys(rus["objective"]):
            part = rus[(rus["objective"] == objective) & (rus["metric"] == metric)].sort_values("U")
            if part.empty:
                continue
            err = seed_stats.error_bars(part)
            ax.errorbar(
                part["U"],
                part["mean"],
                yerr=err,
                capsize=3,
                marker="o",
                ms=3,
                color=colours[objective],
                label=objective,
            )
        ax.set(
            xlabel="uniqueness U = 8 − r",
            ylabel=metric if metric == "accuracy" else f"{metric} (best layer pair)",
            title=title,
        )
        ax.legend(fontsize=7)
    return save_figure(fig, fig.axes[-1], path)


def analyze(sweeps: list[Path], out: Path | None = None) -> dict[str, pd.DataFrame]:
    """Read the sweeps, write the outputs (module docstring) to ``out`` (default: the first sweep folder) and return
    ``{"runs", "summary"}``."""
    sweeps = [Path(s) for s in sweeps]
    out = Path(out or sweeps[0])
    raw = []
    for sweep in sweeps:
        part = select_runs(load_runs(sweep, CONFIG_KEYS), sweep)
        raw.append(part.assign(run=str(sweep) + "/" + part["run"].astype(str)))
    values = run_values(pd.concat(raw, ignore_index=True))
    summary = summarize(values)
    report = markdown_report(values)
    out.mkdir(parents=True, exist_ok=True)
    for name, df in (("objectives.csv", summary), ("objectives_runs.csv", values)):
        with atomic_write(out / name) as fh:
            df.to_csv(fh, index=False, float_format="%.6g")
    with atomic_write(out / "objectives.md") as fh:
        fh.write(report)
    plot(values, out / "objectives.png")
    return {"runs": values, "summary": summary}


def main(argv=None, prog: str | None = None) -> int:
    parser = study_parser(
        "objectives",
        __doc__.split("\n\n")[0],
        prog=prog,
        many=True,
        sweep_help="multirun directories of experiment=objective_identifiability / objective_identifiability_rus",
        wandb_help="also log the tables and the figure to W&B, in the group of each sweep's runs",
    )
    args = parser.parse_args(argv)
    code, result = run_analysis(parser.prog, lambda: analyze(args.sweeps, args.out), args.sweeps)
    if code:
        return code
    out = Path(args.out or args.sweeps[0])
    print((out / "objectives.md").read_text())
    if args.wandb:
        tables = {"objectives": result["summary"]}
        return max(publish(parser.prog, s, tables, [out / "objectives.png"], "objectives") for s in args.sweeps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
