"""Tables and figure of the misalignment × alignment study (``experiment=misalignment_alignment`` on the numeric
simulation, ``experiment=misalignment_alignment_shapes`` on shapes_text).

    python -m mmrep.analysis.misalignment_alignment SWEEP [SWEEP ...] [--out DIR] [--probe linear] [--wandb]

The misalignment paper's (arXiv:2504.10143) settings — the text sees the selected latents θ, those in β perturbed —
trained with MMCL, and measured with the RUS paper's (arXiv:2502.16282) alignment metrics between the two encoders
(multimodal_alignment utils/align_metrics.py) beside the identification of each latent (crossmodal_mislaignment
main_numeric.py, main_mpi3dreal.py). Per run (dataset, θ, β, seed):

* ``alignment``: each alignment metric between the two encoders, at the best layer pair (``layers = max``, the RUS
  paper's number), the last pair (``last``) and every pair (``<layer a>/<layer b>``);
* ``id:block``: how well each modality's representation holds the unbiased shared block θ \\ β — the R² of the
  invariant block ``s_inv`` (numeric) or the mean MCC / R² of the invariant factors (shapes_text);
* ``id:<role>``: the mean R² / MCC of the latents of a role: ``invariant`` (θ \\ β), ``perturbed`` (β),
  ``omitted`` (not in θ), ``image-specific`` (shapes_text's x, y).

The block sizes come from the resolved bias: ``selected`` = |θ|, ``perturbed`` = |β|, ``unbiased`` = |θ \\ β|.
Across seeds: mean and 95 % Student-t interval; across runs, per dataset and quantity: Spearman's ρ of the value with
|θ \\ β| and with |θ|, and the partial ρ with |θ \\ β| given |θ| (does a quantity follow the unbiased block when the
text's view is held fixed?), each with a percentile-bootstrap 95 % interval. Writes, in the first sweep folder (or
``--out``):

* ``misalignment_alignment.csv`` — tidy: dataset, setting, selected, perturbed, unbiased, quantity, metric,
  modality, layers, mean, ci_low, ci_high, n_seeds;
* ``misalignment_alignment_runs.csv`` — the per-run values;
* ``misalignment_alignment_correlation.csv`` — per dataset, quantity, metric, modality, layers: the correlations;
* ``misalignment_alignment.md`` — the tables in Markdown (mean ± CI half-width);
* ``misalignment_alignment.png`` — per dataset: alignment (max over layer pairs), identification of the block and
  per-layer alignment against |θ \\ β|.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from hydra.utils import get_class

from mmrep.analysis import summary as seed_stats
from mmrep.analysis.cli import publish, run_analysis, study_parser
from mmrep.analysis.runs import load_runs, markdown, save_figure
from mmrep.bias.misalignment import MisalignmentBias
from mmrep.core.files import atomic_write
from mmrep.metrics.alignment import METRICS

CONFIG_KEYS = {
    "theta": "bias.theta",
    "beta": "bias.beta",
    "seed": "seed",
    "dataset_target": "dataset._target_",
    "n_semantics": "dataset.n_semantics",
}
RESULT_COLUMNS = ("metric", "value", "aggregate", "layer_a", "layer_b", "modality", "probe", "target", "role")
SETTING_COLUMNS = ("dataset", "setting", "selected", "perturbed", "unbiased")
VALUE_KEYS = ("quantity", "metric", "modality", "layers")
ROLES = ("invariant", "perturbed", "omitted", "image-specific")
LAYER_METRIC = "unbiased_cka"  # the per-layer table and panel
OUTPUTS = (
    "misalignment_alignment.csv",
    "misalignment_alignment_runs.csv",
    "misalignment_alignment_correlation.csv",
    "misalignment_alignment.md",
    "misalignment_alignment.png",
)


def dataset_name(target) -> str:
    """The dataset option of a run from its ``dataset._target_``: the module name (``mmrep.data.numeric.Numeric…`` →
    ``numeric``)."""
    parts = str(target).split(".")
    return parts[-2] if len(parts) >= 2 else str(target)


def _set_text(indices, names) -> str:
    if not indices:
        return "∅"
    return "{" + ",".join(names[i] if names else str(i) for i in indices) + "}"


def resolve_blocks(target, theta, beta, n_semantics) -> dict:
    """The run's bias as the dataset resolves it: ``setting`` (``θ={…} β={…}``), ``selected`` = |θ|,
    ``perturbed`` = |β|, ``unbiased`` = |θ \\ β| and ``roles`` ``{latent index: role}`` of the semantic latents.
    Factor datasets name their semantic factors (``SEMANTIC``), the numeric one has ``dataset.n_semantics``."""
    names = list(getattr(get_class(str(target)), "SEMANTIC", ()) or ())
    if not names and not (isinstance(n_semantics, (int, float, np.integer)) and np.isfinite(n_semantics)):
        raise ValueError(
            f"dataset {target}: neither named semantic factors nor dataset.n_semantics; not a misalignment dataset"
        )
    n = len(names) or int(n_semantics)
    as_list = lambda v: list(v) if isinstance(v, (tuple, list)) else v  # noqa: E731
    bias = MisalignmentBias(theta=as_list(theta), beta=as_list(beta)).resolve(n, names or None)
    roles = {i: "omitted" for i in range(n)}
    roles.update({i: "invariant" for i in bias.invariant})
    roles.update({i: "perturbed" for i in bias.perturbed_selected})
    return {
        "setting": f"θ={_set_text(bias.selected, names)} β={_set_text(bias.perturbed, names)}",
        "selected": len(bias.selected),
        "perturbed": len(bias.perturbed),
        "unbiased": len(bias.invariant),
        "roles": {names[i] if names else f"s_{i}": role for i, role in roles.items()},
    }


def select_runs(raw: pd.DataFrame, root: Path) -> pd.DataFrame:
    """The rows of the runs in ``raw`` (from :func:`load_runs` with :data:`CONFIG_KEYS`) that carry alignment rows
    and identification rows; others are skipped with a warning, a ValueError says what is missing when none is left."""
    raw = raw.reindex(columns=list(dict.fromkeys([*raw.columns, *RESULT_COLUMNS])))
    aligned = set(raw.loc[raw["aggregate"].eq("max") & raw["metric"].isin(list(METRICS)), "run"])
    identified = set(raw.loc[raw["metric"].isin(["r2", "mcc"]) & raw["target"].notna(), "run"])
    return seed_stats.keep_runs(
        raw,
        [
            ("no alignment rows (metric.alignment)", aligned),
            ("no identification rows (metric.identifiability / metric.factors)", identified),
        ],
        root,
        "misalignment × alignment",
        "experiment=misalignment_alignment or misalignment_alignment_shapes",
    )


def _identification(rows: pd.DataFrame, roles: dict[str, str], probe: str) -> list[dict]:
    """``id:<role>`` and ``id:block`` rows of one run (see the module docstring)."""
    scored = rows[rows["metric"].isin(["r2", "mcc"]) & rows["probe"].eq(probe) & rows["target"].notna()].copy()
    if "role" in scored and scored["role"].notna().any():  # metric=factors: each row names its role
        scored["role_of"] = scored["role"]
    else:  # metric=identifiability: latents s_i, the block s_inv
        scored["role_of"] = scored["target"].map(roles)
    out = []
    for modality, part in scored.groupby("modality", sort=True):
        for role in ROLES:
            values = part.loc[part["role_of"] == role, "value"]
            if len(values):
                out.append(
                    {
                        "quantity": f"id:{role}",
                        "metric": "/".join(sorted(set(part.loc[values.index, "metric"]))),
                        "modality": modality,
                        "layers": "",
                        "value": float(values.mean()),
                    }
                )
        block = part.loc[part["target"] == "s_inv", "value"]
        if not len(block):
            block = part.loc[part["role_of"] == "invariant", "value"]
        if len(block):
            metric = (
                "r2" if (part["target"] == "s_inv").any() else "/".join(sorted(set(part.loc[block.index, "metric"])))
            )
            out.append(
                {
                    "quantity": "id:block",
                    "metric": metric,
                    "modality": modality,
                    "layers": "",
                    "value": float(block.mean()),
                }
            )
    return out


def run_values(raw: pd.DataFrame, probe: str = "linear") -> pd.DataFrame:
    """One row per (run, quantity, metric, modality, layers) with the run's setting columns and seed."""
    raw = raw.reindex(columns=list(dict.fromkeys([*raw.columns, *RESULT_COLUMNS])))
    frames = []
    for run, rows in raw.groupby("run", sort=True):
        first = rows.iloc[0]
        blocks = resolve_blocks(first["dataset_target"], first["theta"], first["beta"], first["n_semantics"])
        aligned = rows[rows["metric"].isin(list(METRICS)) & rows["aggregate"].isin(["max", "last", "layer"])]
        values = [
            {
                "quantity": "alignment",
                "metric": r.metric,
                "modality": r.modality,
                "layers": r.aggregate if r.aggregate != "layer" else f"{r.layer_a}/{r.layer_b}",
                "value": r.value,
            }
            for r in aligned.itertuples()
        ]
        values += _identification(rows, blocks["roles"], probe)
        setting = {
            "run": run,
            "dataset": dataset_name(first["dataset_target"]),
            **{k: blocks[k] for k in SETTING_COLUMNS[1:]},
            "seed": first["seed"],
        }
        frames.append(pd.DataFrame([{**setting, **v} for v in values]))
    df = pd.concat(frames, ignore_index=True)
    return df.sort_values(["dataset", "setting", *VALUE_KEYS, "seed"], ignore_index=True)


def correlations(values: pd.DataFrame, bootstrap: int = 1000) -> pd.DataFrame:
    """Per (dataset, quantity, metric, modality, layers) over runs: Spearman's ρ with |θ \\ β| (``rho_unbiased``) and
    with |θ| (``rho_selected``) and the partial ρ with |θ \\ β| given |θ| (``partial_rho_unbiased``), each with
    ``_lo``/``_hi`` percentile-bootstrap 95 % bounds; ``n_runs``."""
    rows = []
    for key, part in values.groupby(["dataset", *VALUE_KEYS], sort=True):
        part = part[np.isfinite(part["value"].to_numpy(float))]
        row = dict(zip(("dataset", *VALUE_KEYS), key), n_runs=len(part))
        for name, given in (("rho_unbiased", None), ("rho_selected", None), ("partial_rho_unbiased", "selected")):
            x = part["selected" if name == "rho_selected" else "unbiased"]
            z = None if given is None else part[given]
            row.update(zip((name, f"{name}_lo", f"{name}_hi"), seed_stats.spearman(x, part["value"], z, bootstrap)))
        rows.append(row)
    return pd.DataFrame(rows)


def _rho_cell(row, name: str) -> str:
    rho, lo, hi = (row.get(f"{name}{s}", np.nan) for s in ("", "_lo", "_hi"))
    if not np.isfinite(rho):
        return ""
    return f"{rho:+.2f} [{lo:+.2f}, {hi:+.2f}]" if np.isfinite(lo) else f"{rho:+.2f}"


def markdown_report(summary: pd.DataFrame, corr: pd.DataFrame, layer_metric: str = LAYER_METRIC) -> str:
    """Per dataset: alignment (best layer pair) and identification of the block per setting; the correlations of
    each with the block sizes; ``layer_metric`` per layer pair. Cells: mean ± 95 % CI half-width over seeds."""
    parts = []
    for dataset, mine in summary.groupby("dataset", sort=True):
        seeds = "/".join(map(str, sorted(set(mine["n_seeds"]))))
        mine = mine.assign(cell=seed_stats.cells(mine))
        index = ["setting", "selected", "perturbed", "unbiased"]
        head = mine[((mine["quantity"] == "alignment") & (mine["layers"] == "max")) | (mine["quantity"] == "id:block")]
        head = head.assign(
            column=np.where(
                head["quantity"] == "alignment", head["metric"], "id " + head["modality"] + " (" + head["metric"] + ")"
            )
        )
        wide = head.pivot_table(index=index, columns="column", values="cell", aggfunc="first", sort=False)
        order = [m for m in METRICS if m in wide.columns] + sorted(c for c in wide.columns if c.startswith("id "))
        wide = wide[order].sort_values(["unbiased", "selected"], ascending=False)
        parts.append(
            f"**{dataset}** — alignment between the encoders at the best layer pair and identification of "
            f"the unbiased block θ \\ β per modality (mean ± 95 % t-CI over {seeds} seeds; |θ|, |β|, "
            f"|θ \\ β| = selected, perturbed, unbiased).\n\n{markdown(wide)}"
        )
        layers = mine[
            (mine["quantity"] == "alignment") & (mine["metric"] == layer_metric) & ~mine["layers"].isin(["max", "last"])
        ]
        if not layers.empty:
            wide = layers.pivot_table(index=index, columns="layers", values="cell", aggfunc="first", sort=False)
            wide = wide.sort_values(["unbiased", "selected"], ascending=False)
            parts.append(
                f"**{dataset}** — {layer_metric} per layer pair (the first encoder's layer / the second's: "
                f"x/t, image/text).\n\n{markdown(wide)}"
            )
    shown = corr[
        ((corr["quantity"] == "alignment") & corr["layers"].isin(["max", "last"])) | corr["quantity"].isin(["id:block"])
    ].copy()
    if not shown.empty:
        shown["ρ with |θ\\β|"] = [_rho_cell(r, "rho_unbiased") for r in shown.to_dict("records")]
        shown["ρ with |θ|"] = [_rho_cell(r, "rho_selected") for r in shown.to_dict("records")]
        shown["partial ρ with |θ\\β| given |θ|"] = [
            _rho_cell(r, "partial_rho_unbiased") for r in shown.to_dict("records")
        ]
        table = shown.set_index(["dataset", "quantity", "metric", "modality", "layers"])[
            ["ρ with |θ\\β|", "ρ with |θ|", "partial ρ with |θ\\β| given |θ|", "n_runs"]
        ]
        parts.append(
            f"Spearman's ρ over runs with the block sizes, 95 % percentile-bootstrap intervals.\n\n{markdown(table)}"
        )
    return "\n\n".join(parts) + "\n"


def plot(summary: pd.DataFrame, path: Path, layer_metric: str = LAYER_METRIC) -> Path:
    """One row per dataset, three panels against |θ \\ β| with 95 % CI bars: alignment at the best layer pair (one
    colour per metric; solid: β = ∅, dashed: β ≠ ∅), identification of the block per modality, and
    ``layer_metric`` per layer pair."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted(set(summary["dataset"]))
    fig, axes = plt.subplots(len(datasets), 3, figsize=(14, 3.8 * len(datasets)), squeeze=False)

    def line(ax, part, label, style, colour=None):
        part = part.sort_values("unbiased")
        err = seed_stats.error_bars(part)
        ax.errorbar(
            part["unbiased"], part["mean"], yerr=err, capsize=3, marker="o", ms=3, ls=style, color=colour, label=label
        )

    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for row, dataset in zip(axes, datasets):
        mine = summary[summary["dataset"] == dataset]
        for arm, style in (("β = ∅", "-"), ("β ≠ ∅", "--")):
            arm_rows = mine[(mine["perturbed"] == 0) if arm == "β = ∅" else (mine["perturbed"] > 0)]
            aligned = arm_rows[(arm_rows["quantity"] == "alignment") & (arm_rows["layers"] == "max")]
            for i, metric in enumerate(m for m in METRICS if m in set(aligned["metric"])):
                line(row[0], aligned[aligned["metric"] == metric], f"{metric}, {arm}", style, colours[i % len(colours)])
            block = arm_rows[arm_rows["quantity"] == "id:block"]
            for i, modality in enumerate(sorted(set(block["modality"]))):
                line(row[1], block[block["modality"] == modality], f"{modality}, {arm}", style, colours[i])
            layers = arm_rows[
                (arm_rows["quantity"] == "alignment")
                & (arm_rows["metric"] == layer_metric)
                & ~arm_rows["layers"].isin(["max", "last"])
            ]
            for i, pair in enumerate(sorted(set(layers["layers"]))):
                line(row[2], layers[layers["layers"] == pair], f"{pair}, {arm}", style, colours[i % len(colours)])
        row[0].set(
            xlabel="|θ \\ β| (unbiased shared block)",
            ylabel="alignment (best layer pair)",
            title=f"{dataset}: alignment",
        )
        row[1].set(xlabel="|θ \\ β|", ylabel="R² / MCC of the block", title=f"{dataset}: identification")
        row[2].set(xlabel="|θ \\ β|", ylabel=f"{layer_metric}", title=f"{dataset}: per layer pair")
        for ax in row[:2]:
            ax.legend(fontsize=6)
    return save_figure(fig, axes[-1][-1], path)


def analyze(
    sweeps: list[Path],
    out: Path | None = None,
    probe: str = "linear",
    bootstrap: int = 1000,
    layer_metric: str = LAYER_METRIC,
) -> dict[str, pd.DataFrame]:
    """Read the sweeps, write the outputs (see the module docstring) to ``out`` (default: the first sweep) and return
    ``{"runs", "summary", "correlation"}``."""
    sweeps = [Path(s) for s in sweeps]
    out = Path(out or sweeps[0])
    raw = []
    for sweep in sweeps:
        part = select_runs(load_runs(sweep, CONFIG_KEYS), sweep)
        part["run"] = str(sweep) + "/" + part["run"].astype(str)
        raw.append(part)
    values = run_values(pd.concat(raw, ignore_index=True), probe)
    summary = seed_stats.summarize(values, [*SETTING_COLUMNS, *VALUE_KEYS])
    summary = summary.sort_values(
        ["dataset", "unbiased", "selected", *VALUE_KEYS],
        ascending=[True, False, False, True, True, True, True],
        ignore_index=True,
    )
    corr = correlations(values, bootstrap)
    out.mkdir(parents=True, exist_ok=True)
    for name, df in (
        ("misalignment_alignment.csv", summary),
        ("misalignment_alignment_runs.csv", values),
        ("misalignment_alignment_correlation.csv", corr),
    ):
        with atomic_write(out / name) as fh:
            df.to_csv(fh, index=False, float_format="%.6g")
    with atomic_write(out / "misalignment_alignment.md") as fh:
        fh.write(markdown_report(summary, corr, layer_metric))
    plot(summary, out / "misalignment_alignment.png", layer_metric)
    return {"runs": values, "summary": summary, "correlation": corr}


def main(argv=None, prog: str | None = None) -> int:
    parser = study_parser(
        "misalignment_alignment",
        __doc__.split("\n\n")[0],
        prog=prog,
        many=True,
        sweep_help="multirun directories of experiment=misalignment_alignment / misalignment_alignment_shapes",
        wandb_help="also log the tables and the figure to W&B, in the group of each sweep's runs",
    )
    parser.add_argument(
        "--probe", default="linear", choices=["linear", "mlp"], help="the identification probe whose scores are read"
    )
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the ρ intervals (0: none)")
    parser.add_argument(
        "--layer-metric",
        default=LAYER_METRIC,
        choices=list(METRICS),
        help="the alignment metric of the per-layer table and panel",
    )
    args = parser.parse_args(argv)
    code, result = run_analysis(
        parser.prog,
        lambda: analyze(args.sweeps, args.out, args.probe, args.bootstrap, args.layer_metric),
        args.sweeps,
    )
    if code:
        return code
    out = Path(args.out or args.sweeps[0])
    print((out / "misalignment_alignment.md").read_text())
    if args.wandb:
        tables = {
            "misalignment_alignment": result["summary"],
            "misalignment_alignment_correlation": result["correlation"],
        }
        codes = [
            publish(parser.prog, sweep, tables, [out / "misalignment_alignment.png"], "misalignment_alignment")
            for sweep in args.sweeps
        ]
        return max(codes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
