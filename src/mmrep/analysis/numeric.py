"""Turn a numeric misalignment sweep into the paper's identification table and heatmap.

    python -m mmrep.analysis.numeric outputs/numeric_selection/multiruns/<date> [--probe mlp] [--modality x]

Writes, next to the runs (or into ``--out``): ``identification.csv`` (tidy: setting × target with mean, std,
min, max over seeds), ``identification_<modality>_<probe>.md`` (the paper-style pivot) and
``identification_<modality>_<probe>.png`` (heatmap). Conventions (spec numeric-misalignment.md §1.12): average
over seeds, clip negative means to 0, show rows ``m_x, m_t, s_0..s_9``, annotate with one decimal rounded half up.
"""

from __future__ import annotations

import argparse
import sys
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pandas as pd

from mmrep.analysis.runs import load_runs, markdown
from mmrep.bias.misalignment import MisalignmentBias

CONFIG_KEYS = {
    "theta": "bias.theta",
    "beta": "bias.beta",
    "dependent": "dataset.dependent",
    "n_semantics": "dataset.n_semantics",
    "seed": "seed",
}


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


def identification_table(runs: pd.DataFrame, probe: str = "mlp", modality: str = "x") -> pd.DataFrame:
    """Tidy mean/std/min/max over seeds per (setting, target), negative means clipped to 0 in ``value``."""
    rows = runs[(runs.metric == "r2") & (runs.probe == probe) & (runs.modality == modality)].copy()
    if rows.empty:
        raise ValueError(f"no r2 rows for probe={probe!r}, modality={modality!r}")
    rows["setting"] = setting_labels(rows)
    order = list(dict.fromkeys(rows["setting"]))
    stats = rows.groupby(["setting", "target"], sort=False)["value"].agg(["mean", "std", "min", "max", "count"]).reset_index()
    stats["value"] = stats["mean"].clip(lower=0.0)
    stats["setting"] = pd.Categorical(stats["setting"], categories=order, ordered=True)
    return stats.sort_values(["setting", "target"]).reset_index(drop=True)


def pivot(table: pd.DataFrame, n_semantics: int = 10) -> pd.DataFrame:
    """Rows ``m_x, m_t, s_0..s_{n-1}`` × settings, one decimal rounded half up (spec §1.12)."""
    rows = ["m_x", "m_t"] + [f"s_{i}" for i in range(n_semantics)]
    wide = table.pivot(index="target", columns="setting", values="value").reindex(rows)
    return wide.map(lambda v: float(Decimal(str(v)).quantize(Decimal("0.1"), ROUND_HALF_UP)) if pd.notna(v) else v)


def heatmap(wide: pd.DataFrame, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * wide.shape[1], 0.45 * wide.shape[0] + 1.6))
    im = ax.imshow(wide.to_numpy(dtype=float), vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(wide.shape[1]), [str(c) for c in wide.columns], rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(wide.shape[0]), list(wide.index))
    for (i, j), v in pd.DataFrame(wide.to_numpy()).stack().items():
        ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=7, color="white" if v < 0.5 else "black")
    fig.colorbar(im, ax=ax, label="R²")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmrep.analysis.numeric", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun directory (or any folder of runs)")
    parser.add_argument("--probe", default="mlp", choices=["linear", "mlp"])
    parser.add_argument("--modality", default="x", help="encoder whose representation is probed (x or t)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: sweep_dir)")
    args = parser.parse_args(argv)
    try:
        runs = load_runs(args.sweep_dir, CONFIG_KEYS)
        table = identification_table(runs, args.probe, args.modality)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    out = args.out or args.sweep_dir
    out.mkdir(parents=True, exist_ok=True)
    stem = f"identification_{args.modality}_{args.probe}"
    table.to_csv(out / "identification.csv", index=False)
    wide = pivot(table, int(runs["n_semantics"].iloc[0]))
    (out / f"{stem}.md").write_text(markdown(wide))
    heatmap(wide, out / f"{stem}.png", f"{args.probe} R² of ẑ_{args.modality} (mean over seeds)")
    print(wide.to_string())
    print(f"\nwrote {out / 'identification.csv'}, {out / (stem + '.md')}, {out / (stem + '.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
