"""Tables of a factor-probe sweep (``metric=factors``, e.g. ``experiment=shapes_text_selection``).

    python -m mmrep.analysis.factors outputs/shapes_text_selection/multiruns/<date> [--probe mlp] [--out DIR]

Per modality, a factor × bias-setting table of the probe score averaged over seeds with scores clipped to [0, 1]
first, as the paper's figures (spec numeric-misalignment §3.3: "plots average 3 repeats after clipping MCC to
[0,1]"). Writes ``factors.csv`` (tidy: setting, modality, factor, role, mean, std, count) and
``factors_<modality>_<probe>.md``, and prints the tables.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from mmrep.analysis.runs import load_runs, markdown
from mmrep.utils.files import atomic_write

CONFIG_KEYS = {"theta": "bias.theta", "beta": "bias.beta", "seed": "seed"}


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
    rows["setting"] = "θ=" + rows.theta.map(lambda v: _label(v, "all")) + " β=" + rows.beta.map(lambda v: _label(v, "∅"))
    rows["clipped"] = rows.value.clip(0, 1)
    return (rows.groupby(["setting", "modality", "target", "role"], sort=False).clipped
            .agg(["mean", "std", "count"]).reset_index().rename(columns={"target": "factor"}))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmrep.analysis.factors", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--probe", default="mlp", choices=["mlp", "linear"])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        table = factor_table(load_runs(args.sweep, CONFIG_KEYS), args.probe)
    except (FileNotFoundError, ValueError) as err:
        print(f"mmrep.analysis.factors: error: {err}", file=sys.stderr)
        return 2
    out = args.out or args.sweep
    with atomic_write(out / "factors.csv") as fh:
        table.to_csv(fh, index=False, float_format="%.4g")
    for modality, part in table.groupby("modality", sort=False):
        wide = part.pivot_table(index="factor", columns="setting", values="mean", sort=False).round(2)
        text = markdown(wide)
        with atomic_write(out / f"factors_{modality}_{args.probe}.md") as fh:
            fh.write(text + "\n")
        print(f"\n{modality} ({args.probe} probe, mean over seeds of scores clipped to [0, 1])\n{text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
