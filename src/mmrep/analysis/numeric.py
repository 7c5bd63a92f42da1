"""Turn a numeric misalignment sweep into the paper's identification table and heatmap.

    python -m mmrep.analysis.numeric outputs/numeric_selection/multiruns/<date> [--probe mlp] [--modality x]

Writes, next to the runs (or into ``--out``): ``identification.csv`` (tidy: setting × target with mean, std,
min, max, count over seeds and ``n_seeds``, the distinct seeds a cell averages),
``identification_<modality>_<probe>.md`` (the paper-style pivot, a Markdown pipe table) and
``identification_<modality>_<probe>.png`` (heatmap). Conventions (crossmodal_mislaignment
plot/plot_numeric_r2.py; arXiv:2504.10143 Fig. 3): average over seeds, clip negative means to 0, show rows
``m_x, m_t, s_0..s_9``, annotate with one decimal rounded half up.

Runs are averaged over seeds only: every command-line override (``.hydra/overrides.yaml``) whose value differs
between the runs, besides ``seed`` and the bias/regime keys the setting label is made of (e.g.
``objective.optimizer.lr`` in a learning-rate sweep), becomes a column of ``identification.csv`` and a level of the
pivot's columns (``lr=0.001 · θ={0..7}``), and the command prints ``grouping by differing overrides: ...``.
"""

from __future__ import annotations

import sys
import textwrap
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pandas as pd

from mmrep.analysis.cli import publish, run_analysis, study_parser
from mmrep.analysis.runs import differing_overrides, load_runs, markdown
from mmrep.bias.misalignment import MisalignmentBias

CONFIG_KEYS = {
    "theta": "bias.theta",
    "beta": "bias.beta",
    "dependent": "dataset.dependent",
    "n_semantics": "dataset.n_semantics",
    "seed": "seed",
}
# override keys that never split the table: the seed (averaged over) and the bias/regime keys the setting label is
# made of (bias.setting: a paper setting id, the same θ/β)
INDEXED_OVERRIDES = (*CONFIG_KEYS.values(), "bias.setting")
# the columns of identification_table besides the differing overrides (which precede them)
STAT_COLUMNS = ("setting", "target", "mean", "std", "min", "max", "count", "value", "n_seeds")


def _set_label(indices: tuple[int, ...]) -> str:
    """0-based index set as text: ``{0..7}`` for prefixes and ranges, ``∅`` for empty, else ``{0,3,5}``."""
    if not indices:
        return "∅"
    if len(indices) > 2 and list(indices) == list(range(indices[0], indices[-1] + 1)):
        return f"{{{indices[0]}..{indices[-1]}}}"
    return "{" + ",".join(map(str, indices)) + "}"


def setting_labels(runs: pd.DataFrame) -> pd.Series:
    """One label per row, naming only the bias/regime fields that vary across the sweep."""
    resolved = {}
    for key in runs[["theta", "beta", "n_semantics"]].drop_duplicates().itertuples(index=False):
        theta = list(key.theta) if isinstance(key.theta, tuple) else key.theta
        beta = list(key.beta) if isinstance(key.beta, tuple) else key.beta
        b = MisalignmentBias(theta=theta, beta=beta).resolve(int(key.n_semantics))
        resolved[tuple(key)] = (f"θ={_set_label(b.selected)}", f"β={_set_label(b.perturbed)}")
    parts = runs.apply(lambda r: resolved[(r.theta, r.beta, r.n_semantics)], axis=1, result_type="expand")
    parts.columns = ["theta_label", "beta_label"]
    parts["regime"] = runs["dependent"].map({True: "dependent", False: "independent"})
    varying = [c for c in parts.columns if parts[c].nunique() > 1] or ["theta_label", "beta_label"]
    return parts[varying].agg(" ".join, axis=1)


def load_grouped_runs(sweep_dir: Path) -> tuple[pd.DataFrame, list[str]]:
    """:func:`load_runs` plus one column per override that differs between the runs (see the module docstring).

    Returns the rows and those columns' names: the override key, or ``override:<key>`` where the key is already a
    column of the results (e.g. a ``metric=...`` group choice).
    """
    runs = load_runs(sweep_dir, CONFIG_KEYS)
    differing = differing_overrides(sweep_dir, ignore=INDEXED_OVERRIDES)
    differing.columns = [f"override:{k}" if k in runs.columns or k in STAT_COLUMNS else k for k in differing.columns]
    return runs.join(differing, on="run"), list(differing.columns)


def identification_table(runs: pd.DataFrame, probe: str = "mlp", modality: str = "x", by=()) -> pd.DataFrame:
    """Tidy mean/std/min/max over seeds per (``by``..., setting, target), negative means clipped to 0 in ``value``.

    ``by`` are further columns of ``runs`` that split the runs (the differing overrides of
    :func:`load_grouped_runs`); they lead the table, in the order the runs first show them. ``count`` is the runs a
    cell averages, ``n_seeds`` their distinct seeds.
    """
    by = list(by)
    rows = runs[(runs.metric == "r2") & (runs.probe == probe) & (runs.modality == modality)].copy()
    if rows.empty:
        raise ValueError(f"no r2 rows for probe={probe!r}, modality={modality!r}")
    rows["setting"] = setting_labels(rows)
    if "seed" not in rows:
        rows["seed"] = None
    order = list(dict.fromkeys(rows["setting"]))
    groups = {g: i for i, g in enumerate(dict.fromkeys(rows[by].itertuples(index=False, name=None)))}
    stats = (
        rows.groupby([*by, "setting", "target"], sort=False, dropna=False)
        .agg(
            mean=("value", "mean"),
            std=("value", "std"),
            min=("value", "min"),
            max=("value", "max"),
            count=("value", "count"),
            n_seeds=("seed", lambda s: s.nunique(dropna=False)),
        )
        .reset_index()
    )
    stats["value"] = stats["mean"].clip(lower=0.0)
    stats["setting"] = pd.Categorical(stats["setting"], categories=order, ordered=True)
    stats["_group"] = [groups[g] for g in stats[by].itertuples(index=False, name=None)]
    stats = stats.sort_values(["_group", "setting", "target"], kind="stable").reset_index(drop=True)
    return stats[[*by, "setting", "target", "mean", "std", "min", "max", "count", "value", "n_seeds"]]


def group_columns(table: pd.DataFrame) -> list[str]:
    """The columns of an identification table (also one read back from ``identification.csv``) that split it."""
    return [c for c in table.columns if c not in STAT_COLUMNS]


def pivot(table: pd.DataFrame, n_semantics: int = 10) -> pd.DataFrame:
    """Rows ``m_x, m_t, s_0..s_{n-1}`` × settings, one decimal rounded half up (plot_numeric_r2.py).

    With differing overrides in ``table`` (:func:`group_columns`) the columns are a MultiIndex (those keys...,
    setting); either way in the table's order.
    """
    rows = ["m_x", "m_t"] + [f"s_{i}" for i in range(n_semantics)]
    keys = [*group_columns(table), "setting"]
    table = table.assign(setting=table["setting"].astype(str))
    cells = {combo: part.set_index("target")["value"] for combo, part in table.groupby(keys, sort=False, dropna=False)}
    if len(keys) == 1:
        wide = pd.DataFrame({combo[0]: col for combo, col in cells.items()}, index=rows)
        wide.columns.name = "setting"
    else:
        wide = pd.DataFrame(cells, index=rows)
        wide.columns.names = keys
    wide.index.name = "target"
    return wide.map(lambda v: float(Decimal(str(v)).quantize(Decimal("0.1"), ROUND_HALF_UP)) if pd.notna(v) else v)


def _short_names(keys: list[str]) -> dict[str, str]:
    """Each dotted key by its shortest trailing part no other key ends with (``objective.optimizer.lr`` → ``lr``)."""
    out = {}
    for key in keys:
        parts = key.removeprefix("override:").split(".")
        for n in range(1, len(parts) + 1):
            name = ".".join(parts[-n:])
            if not any(o != key and (o.removeprefix("override:") == name or o.endswith("." + name)) for o in keys):
                break
        out[key] = name
    return out


def display(wide: pd.DataFrame, sep: str = " · ") -> pd.DataFrame:
    """``wide`` with one text label per column: ``lr=0.001 · θ={0..7}`` for grouped columns, else unchanged."""
    if wide.columns.nlevels == 1:
        return wide
    keys = list(wide.columns.names[:-1])
    short = _short_names(keys)
    labels = [
        sep.join([*(f"{short[k]}={v}" for k, v in zip(keys, combo[:-1])), str(combo[-1])]) for combo in wide.columns
    ]
    out = wide.copy()
    out.columns = pd.Index(labels, name="setting")
    return out


HEATMAP_MIN_WIDTH = 5.0  # inches: the title and the colour bar fit above and beside a single column


def heatmap_figure(wide: pd.DataFrame, title: str):
    """The heatmap of ``wide`` (rows × settings, values in [0, 1]) as a laid-out figure; wide enough for its title,
    which wraps to the figure's width."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [combo[:-1] for combo in wide.columns] if wide.columns.nlevels > 1 else []
    wide = display(wide, sep="\n")
    width = max(HEATMAP_MIN_WIDTH, 1.0 + 0.9 * wide.shape[1])
    fig, ax = plt.subplots(figsize=(width, 0.45 * wide.shape[0] + 1.6))
    im = ax.imshow(wide.to_numpy(dtype=float), vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(wide.shape[1]), [str(c) for c in wide.columns], rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(wide.shape[0]), list(wide.index))
    for (i, j), v in pd.DataFrame(wide.to_numpy()).stack().items():
        ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=7, color="white" if v < 0.5 else "black")
    for j in range(1, len(groups)):
        if groups[j] != groups[j - 1]:  # a white rule between the groups of differing overrides
            ax.axvline(j - 0.5, color="white", linewidth=2)
    fig.colorbar(im, ax=ax, label="R²")
    # the title is centred on the axes, left of the colour bar: wrap it to ~70% of the figure's width
    # (12 pt characters are ~6.5 pt wide on average)
    ax.set_title(textwrap.fill(title, width=max(20, int(width * 72 * 0.7 / 6.5))), fontsize=12)
    fig.tight_layout()
    return fig


def heatmap(wide: pd.DataFrame, path: Path, title: str) -> None:
    import matplotlib.pyplot as plt

    fig = heatmap_figure(wide, title)
    fig.savefig(path, dpi=150)
    plt.close(fig)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = study_parser("numeric", __doc__.split("\n\n")[0], prog=prog)
    parser.add_argument("--probe", default="mlp", choices=["linear", "mlp"])
    parser.add_argument("--modality", default="x", help="encoder whose representation is probed (x or t)")
    args = parser.parse_args(argv)

    def analyze():
        runs, by = load_grouped_runs(args.sweep)
        return runs, by, identification_table(runs, args.probe, args.modality, by)

    code, result = run_analysis(parser.prog, analyze, [args.sweep])
    if code:
        return code
    runs, by, table = result
    if by:
        print(
            "grouping by differing overrides: " + ", ".join(f"{k} ({runs[k].nunique(dropna=False)} values)" for k in by)
        )
    seeds = sorted(set(table["n_seeds"]))
    seeds_text = str(seeds[0]) if len(seeds) == 1 else f"{seeds[0]}–{seeds[-1]}"
    print(f"seeds per cell: {seeds_text}" + ("" if len(seeds) == 1 else " (n_seeds in identification.csv)"))
    if (table["count"] > table["n_seeds"]).any():
        print(
            "warning: some cells average several runs with the same seed (a repeated run, or a difference that "
            "no command-line override records)",
            file=sys.stderr,
        )
    out = args.out or args.sweep
    out.mkdir(parents=True, exist_ok=True)
    stem = f"identification_{args.modality}_{args.probe}"
    table.to_csv(out / "identification.csv", index=False)
    wide = pivot(table, int(runs["n_semantics"].iloc[0]))
    (out / f"{stem}.md").write_text(markdown(display(wide), floatfmt=".1f") + "\n")
    seeds_title = f"{seeds_text} seed{'s' if seeds != [1] else ''}"
    heatmap(wide, out / f"{stem}.png", f"{args.probe} R² of ẑ_{args.modality} (mean over {seeds_title})")
    print(display(wide).to_string())
    print(f"\nwrote {out / 'identification.csv'}, {out / (stem + '.md')}, {out / (stem + '.png')}")
    if args.wandb:
        return publish(parser.prog, args.sweep, {"identification": table}, [out / f"{stem}.png"], "numeric")
    return 0


if __name__ == "__main__":
    sys.exit(main())
