"""One tidy table of every run of a sweep: its overrides and its results (``mmrep analyze sweep <dir>``).

    mmrep analyze sweep outputs/numeric_selection/multiruns/<date> [--out DIR] [--wandb]

Writes ``runs.csv`` in the sweep folder (or ``--out``): one row per (run, ``results.csv`` row) with the run folder
(``run``), one column per command-line override of any run (``.hydra/overrides.yaml``: ``bias.theta``,
``objective.optimizer.lr``, …; each run's resolved value, its default where it did not override the key) and the
``results.csv`` columns (``metric``, ``value``, …) — ready for ``pandas.read_csv(...).groupby([...])``. Prints the runs
with their overrides and names the run folders it skipped and why (no ``results.csv``, unreadable files, a
``results.csv`` that is not a results table). Built by :func:`mmrep.analysis.runs.sweep_table`.
"""

from __future__ import annotations

from pathlib import Path

from mmrep.analysis.cli import publish, run_analysis, study_parser
from mmrep.analysis.runs import sweep_table
from mmrep.core.files import atomic_write

MAX_PRINTED = 30  # runs listed in the summary


def main(argv=None, prog: str | None = None) -> int:
    parser = study_parser(
        "sweep",
        __doc__.split("\n\n")[0],
        prog=prog,
        sweep_help="a multirun directory (or any folder of run folders)",
        out_help="output folder of runs.csv (default: the sweep folder)",
        wandb_help="also log the table to W&B, in the group of the sweep's runs",
    )
    args = parser.parse_args(argv)
    code, result = run_analysis(parser.prog, lambda: sweep_table(args.sweep), [args.sweep])
    if code:
        return code
    table, skipped = result
    out = Path(args.out or args.sweep)
    with atomic_write(out / "runs.csv") as fh:
        table.to_csv(fh, index=False)
    _print_summary(table, skipped)
    print(f"wrote {out / 'runs.csv'} ({len(table)} rows)")
    if args.wandb:
        return publish(parser.prog, args.sweep, {"runs": table}, [], "sweep")
    return 0


def _print_summary(table, skipped: list[tuple[str, str]]) -> None:
    """The runs with the overrides that differ between them (those every run shares on one line), then the run
    folders left out and why."""
    from rich.console import Console
    from rich.table import Table

    per_run = table.groupby("run", sort=False)
    first = per_run.head(1).set_index("run")
    columns = table.attrs.get("override_columns", [])
    differing = [c for c in columns if first[c].astype(str).nunique() > 1]
    shared = [f"{c}={first[c].iloc[0]}" for c in columns if c not in differing]
    view = Table(title=f"{len(first)} runs, {len(table)} result rows", title_justify="left")
    view.add_column("run")
    view.add_column("overrides that differ" if differing else "overrides")
    view.add_column("rows", justify="right")
    counts = per_run.size()
    for name in first.index[:MAX_PRINTED]:
        text = " ".join(f"{c}={first.at[name, c]}" for c in differing) or "(none)"
        view.add_row(name, text, str(counts[name]))
    if len(first) > MAX_PRINTED:
        view.caption = f"... and {len(first) - MAX_PRINTED} more runs"
    Console(width=max(100, Console().width)).print(view)
    if shared:
        print("every run: " + " ".join(shared))
    if skipped:
        print(f"skipped {len(skipped)} run folder{'s' * (len(skipped) != 1)}:")
        for name, reason in skipped:
            print(f"  {name}: {reason}")


if __name__ == "__main__":
    raise SystemExit(main())
