"""``mmrep``: the one command line of the project.

    mmrep train [HYDRA OVERRIDES]            # = python -m mmrep.train ...
    mmrep align A.npy B.npy [OPTIONS]        # = python -m mmrep.align ...
    mmrep analyze                            # list the studies
    mmrep analyze <study> SWEEP [OPTIONS]    # = python -m mmrep.analysis.<study> ...
    mmrep analyze sweep SWEEP                # every run's overrides and results in SWEEP/runs.csv
    mmrep data                               # list the data preparers
    mmrep data <name> [OPTIONS]              # = python -m mmrep.data.<name> ...

Commands are dispatched by module name and imported only when run, so ``mmrep --help``, the listings and
``mmrep train --help`` (Hydra's help) start without importing torch. Unknown names are one ``mmrep: error:`` line with
the closest match and exit code 2, as argparse's usage errors; every analysis shares one error policy
(:mod:`mmrep.analysis.cli`: one line, exit code 1).
"""

from __future__ import annotations

import difflib
import importlib
import sys

PROG = "mmrep"
# The commands, studies and data preparers are entry points of the package (pyproject.toml:
# [project.entry-points."mmrep.commands" | "mmrep.studies" | "mmrep.data"]), loaded only when run: this module knows
# none of them, and another installed package can add its own studies or data preparers the same way.
GROUPS = {"commands": "mmrep.commands", "studies": "mmrep.studies", "data": "mmrep.data"}
# one-line descriptions of the shipped ones (an entry point of another package is listed with its target)
DESCRIPTIONS = {
    "train": "compose a run from the config groups, train and measure it (Hydra overrides)",
    "align": "alignment metrics between two saved feature matrices",
    "analyze": "turn a sweep into tables and figures: mmrep analyze <study> SWEEP ...",
    "data": "generate or prepare a data set: mmrep data <name> ...",
    "studies/sweep": "every run's overrides and results in one tidy table (runs.csv)",
    "studies/numeric": "identification table and heatmap of a numeric misalignment sweep",
    "studies/factors": "factor × setting probe tables of a factor-probe sweep (shapes, MPI3D)",
    "studies/rus": "RUS alignment sweep: alignment vs uniqueness and vs performance",
    "studies/multibench": "Table 1 of the RUS paper from multibench_alignment sweeps",
    "studies/misalignment_alignment": "misalignment × alignment: alignment and identification vs the unbiased block",
    "studies/uniqueness_objective": "uniqueness × objective study: alignment, accuracy and bit MCC vs U per objective",
    "studies/objectives": "objective study: which objective recovers θ \\ β (numeric), alignment vs U (RUS)",
    "studies/vl_uniqueness": "vision–language uniqueness sweep: alignment vs U and LM",
    "data/rus": "generate and cache the RUS synthetic datasets",
    "data/mpi3d": "render the MPI3D caption files of the paper settings (render-text)",
    "data/causal3dident": "render the Causal3DIdent caption files of the paper settings (render-text)",
}


def entries(kind: str) -> dict[str, tuple[str, str]]:
    """``{name: (entry point target, description)}`` of one kind (``commands``, ``studies``, ``data``)."""
    from importlib.metadata import entry_points

    found = {ep.name: ep.value for ep in entry_points(group=GROUPS[kind])}
    if not found:
        raise SystemExit(f"{PROG}: error: no {kind} registered: mmrep's package metadata is missing (pip install -e .)")
    prefix = "" if kind == "commands" else f"{kind}/"
    return {n: (v, DESCRIPTIONS.get(prefix + n, v)) for n, v in sorted(found.items(), key=lambda kv: kv[0] != "sweep")}


# the top-level commands, as (unused target, description) like :func:`entries`' listings
COMMANDS = {name: ("", DESCRIPTIONS[name]) for name in ("train", "align", "analyze", "data")}


def _listing(title: str, entries: dict[str, tuple[str, str]]) -> str:
    width = max(map(len, entries))
    return "\n".join([title, *(f"  {name.ljust(width)}  {text}" for name, (_, text) in entries.items())])


def _usage() -> str:
    return (
        f"usage: {PROG} <command> [args ...]\n\n"
        "Multimodal representation learning: train, measure alignment, analyse sweeps, prepare data.\n\n"
        + _listing("commands:", COMMANDS)
        + f"\n\n'{PROG} <command> --help' for a command's arguments; '{PROG} analyze' and '{PROG} data' list their"
        " names.\n"
    )


def _unknown(kind: str, name: str, choices, usage: str) -> int:
    close = difflib.get_close_matches(name, list(choices), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f" (choose from {', '.join(choices)})"
    print(f"{usage}: error: unknown {kind} {name!r}{hint}", file=sys.stderr)
    return 2


def _wants_help(args: list[str]) -> bool:
    return not args or args[0] in ("-h", "--help")


def _run(target: str, argv: list[str], prog: str) -> int:
    """Call the entry point ``module:function`` as ``function(argv, prog=prog)``."""
    module, _, function = target.partition(":")
    code = getattr(importlib.import_module(module), function or "main")(argv, prog=prog)
    return 0 if code is None else int(code)


def _group(command: str, kind: str, kinds: str, metavar: str, entries: dict, argv: list[str]) -> int:
    if _wants_help(argv):
        print(f"usage: {PROG} {command} <{metavar}> [args ...]\n\n" + _listing(f"{kinds}:", entries))
        print(f"\n'{PROG} {command} <{metavar}> --help' for its arguments.")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in entries:
        return _unknown(kind, name, entries, f"{PROG} {command}")
    return _run(entries[name][0], rest, f"{PROG} {command} {name}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if _wants_help(argv):
        print(_usage(), end="")
        return 0
    if argv[0] == "--version":
        from importlib.metadata import version

        print(f"{PROG} {version('mmrep')}")
        return 0
    command, rest = argv[0], argv[1:]
    if command in ("train", "align"):
        return _run(entries("commands")[command][0], rest, f"{PROG} {command}")
    if command == "analyze":
        return _group("analyze", "study", "studies", "study", entries("studies"), rest)
    if command == "data":
        return _group("data", "data set", "data sets", "name", entries("data"), rest)
    return _unknown("command", command, COMMANDS, PROG)


if __name__ == "__main__":
    sys.exit(main())
