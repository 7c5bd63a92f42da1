"""Tables of a factor-probe sweep (``metric=factors``, e.g. ``experiment=shapes_text_selection``).

    python -m mmrep.analysis.factors outputs/shapes_text_selection/multiruns/<date> [--probe mlp] [--out DIR]
    python -m mmrep.analysis.factors outputs/mpi3d_perturbation/multiruns/<date> --paper mpi3d_complex

Per modality, a factor × bias-setting table of the probe score averaged over seeds with scores clipped to [0, 1]
first, as the paper's figures (arXiv:2504.10143 Figs. 5, 6: the mean of 3 repeats of the MCC clipped to [0, 1]).
A setting is the dataset's paper setting id (``selection_2``) or else ``θ={...} β={...}``. Writes
``factors.csv`` (tidy: setting, modality, factor, role, mean, std, count) and ``factors_<modality>_<probe>.md``, and
prints the tables; ``--paper`` adds ``factors_<modality>_vs_paper.md``: each cell "ours (paper)" with the paper's
MLP-probe numbers (arXiv:2504.10143 Fig. 5, MPI3D; Fig. 6, Causal3DIdent).
"""

from __future__ import annotations

import pandas as pd

from mmrep.analysis.cli import publish, run_analysis, study_parser
from mmrep.analysis.runs import load_runs, markdown
from mmrep.core.files import atomic_write

CONFIG_KEYS = {"theta": "bias.theta", "beta": "bias.beta", "seed": "seed"}


def _paper(**columns: str) -> dict[str, list[float]]:
    return {factor: [float(v) for v in values.split()] for factor, values in columns.items()}


_ZERO5, _ZERO7 = "0 0 0 0 0", "0 0 0 0 0 0 0"
# Paper MLP-probe scores by setting id 0.. (arXiv:2504.10143 Fig. 5, MCC; Fig. 6, image features, MCC/R²)
PAPER = {
    "mpi3d_complex": {
        "image": {
            "selection": _paper(
                color="1 1 1 1 1",
                shape=".04 1 .98 .81 .91",
                size=".01 .02 1 .86 .93",
                camera=".02 0 .04 1 1",
                background=".01 .01 .01 0 1",
                horizontal=_ZERO5,
                vertical=_ZERO5,
            ),
            "perturbation": _paper(
                color=".99 1 1 1 1",
                shape=".90 .77 .89 1 .03",
                size=".94 .87 .95 0 .01",
                camera="1 1 .02 0 .02",
                background="1 0 .01 0 .01",
                horizontal=_ZERO5,
                vertical=_ZERO5,
            ),
        },
        "text": {
            "selection": _paper(
                color="1 1 1 1 1",
                shape="0 1 .98 .82 .93",
                size="0 0 1 .89 .95",
                camera="0 0 0 1 1",
                background="0 0 0 0 1",
                horizontal=_ZERO5,
                vertical=_ZERO5,
            ),
            "perturbation": _paper(
                color=".99 1 1 1 1",
                shape=".92 .77 .90 1 0",
                size=".96 .89 .96 0 0",
                camera="1 1 0 0 0",
                background="1 0 .01 0 0",
                horizontal=_ZERO5,
                vertical=_ZERO5,
            ),
        },
    },
    "causal3dident": {
        "image": {
            "selection": _paper(
                object_shape="1 .94 .82 .84 .89 .96 .91",
                object_xpos=".04 1 1 1 1 1 1",
                object_ypos=".05 .08 1 1 1 1 1",
                spotlight_pos="0 0 0 .93 .83 .89 .80",
                object_color="0 .40 .79 .79 .84 .86 .84",
                spotlight_color="0 0 0 .46 .39 .69 .63",
                background_color="0 0 0 .61 .51 .66 .86",
                object_alpharot=_ZERO7,
                object_betarot=_ZERO7,
                object_gammarot=_ZERO7,
            ),
            "perturbation": _paper(
                object_shape=".90 .93 .85 .86 .92 .98 1",
                object_xpos="1 1 1 1 1 1 .03",
                object_ypos="1 1 1 1 1 .05 .05",
                spotlight_pos=".87 .89 .95 .96 0 0 0",
                object_color=".96 .87 .84 .78 .78 .40 0",
                spotlight_color=".70 .69 .48 .48 0 0 0",
                background_color=".65 .67 .62 .61 0 0 0",
                object_alpharot=_ZERO7,
                object_betarot=_ZERO7,
                object_gammarot=_ZERO7,
            ),
        },
    },
}


def paper_comparison(table: pd.DataFrame, paper: str) -> dict[str, pd.DataFrame]:
    """Per modality the paper reports: factor × setting cells "ours (paper)" for the settings this sweep ran."""
    out = {}
    for modality, figures in PAPER[paper].items():
        ours = table[table.modality == modality].set_index(["factor", "setting"])["mean"]
        settings = [
            f"{kind}_{i}" for kind, columns in figures.items() for i in range(len(next(iter(columns.values()))))
        ]
        settings = [s for s in settings if s in ours.index.get_level_values("setting")]
        if not settings or not set(next(iter(figures.values()))) & set(ours.index.get_level_values("factor")):
            continue
        cells = {}
        for setting in settings:
            kind, _, i = setting.rpartition("_")
            cells[setting] = {
                f: (f"{ours[f, setting]:.2f}" if (f, setting) in ours.index else "–") + f" ({v[int(i)]:.2f})"
                for f, v in figures[kind].items()
            }
        out[modality] = pd.DataFrame(cells)
    if not out:
        raise ValueError(
            f"no run of this sweep is one of the paper's {paper} settings (dataset={paper} "
            "bias.setting=selection_<i> | perturbation_<i>)"
        )
    return out


def _label(value, none: str) -> str:
    """A bias set as text: ``none`` for an unset value (θ: all factors, β: ∅), ``∅`` for an empty list."""
    if value is None or (isinstance(value, float) and pd.isna(value)) or value == -1:
        return none
    if isinstance(value, tuple):
        return "{" + ", ".join(map(str, value)) + "}" if value else "∅"
    return str(value)


def factor_table(runs: pd.DataFrame, probe: str = "mlp") -> pd.DataFrame:
    rows = runs[runs.metric.isin(["mcc", "r2"]) & (runs.probe == probe)].copy()
    if rows.empty:
        raise ValueError(f"no factor-probe rows for probe={probe!r} (was metric=factors used?)")
    label = "θ=" + rows.theta.map(lambda v: _label(v, "all")) + " β=" + rows.beta.map(lambda v: _label(v, "∅"))
    rows["setting"] = rows["setting"].fillna(label) if "setting" in rows else label
    rows["clipped"] = rows.value.clip(0, 1)
    return (
        rows.groupby(["setting", "modality", "target", "role"], sort=False)
        .clipped.agg(["mean", "std", "count"])
        .reset_index()
        .rename(columns={"target": "factor"})
    )


def main(argv=None, prog: str | None = None) -> int:
    parser = study_parser(
        "factors",
        __doc__.split("\n\n")[0],
        prog=prog,
        wandb_help="also log the tables to W&B, in the group of the sweep's runs",
    )
    parser.add_argument("--probe", default="mlp", choices=["mlp", "linear"])
    parser.add_argument(
        "--paper", choices=sorted(PAPER), default=None, help="print each table beside the paper's MLP-probe numbers"
    )
    args = parser.parse_args(argv)

    def analyze():
        table = factor_table(load_runs(args.sweep, CONFIG_KEYS), args.probe)
        return table, (paper_comparison(table, args.paper) if args.paper else {})

    code, result = run_analysis(parser.prog, analyze, [args.sweep])
    if code:
        return code
    table, comparison = result
    out = args.out or args.sweep
    with atomic_write(out / "factors.csv") as fh:
        table.to_csv(fh, index=False, float_format="%.4g")
    for modality, part in table.groupby("modality", sort=False):
        wide = part.pivot_table(index="factor", columns="setting", values="mean", sort=False).round(2)
        text = markdown(wide, floatfmt=".2f")
        with atomic_write(out / f"factors_{modality}_{args.probe}.md") as fh:
            fh.write(text + "\n")
        print(f"\n{modality} ({args.probe} probe, mean over seeds of scores clipped to [0, 1])\n{text}")
    for modality, wide in comparison.items():
        text = markdown(wide, floatfmt=".2f")
        with atomic_write(out / f"factors_{modality}_vs_paper.md") as fh:
            fh.write(text + "\n")
        print(f"\n{modality}: ours ({args.probe} probe) (paper, MLP probe, {args.paper})\n{text}")
    if args.wandb:
        tables = {"factors": table, **{f"factors_{m}_vs_paper": wide for m, wide in comparison.items()}}
        return publish(parser.prog, args.sweep, tables, [], "factors")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
