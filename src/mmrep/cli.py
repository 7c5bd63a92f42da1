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

# name → (module, one-line description); the modules are imported only when their command runs
COMMANDS = {
    "train": ("mmrep.train", "compose a run from the config groups, train and measure it (Hydra overrides)"),
    "align": ("mmrep.align", "alignment metrics between two saved feature matrices"),
    "analyze": ("", "turn a sweep into tables and figures: mmrep analyze <study> SWEEP ..."),
    "data": ("", "generate or prepare a data set: mmrep data <name> ..."),
}
STUDIES = {
    "sweep": ("mmrep.analysis.sweep", "every run's overrides and results in one tidy table (runs.csv)"),
    "numeric": ("mmrep.analysis.numeric", "identification table and heatmap of a numeric misalignment sweep"),
    "factors": ("mmrep.analysis.factors", "factor × setting probe tables of a factor-probe sweep (shapes, MPI3D)"),
    "rus": ("mmrep.analysis.rus", "RUS alignment sweep: alignment vs uniqueness and vs performance"),
    "multibench": ("mmrep.analysis.multibench", "Table 1 of the RUS paper from multibench_alignment sweeps"),
    "misalignment_alignment": (
        "mmrep.analysis.misalignment_alignment",
        "misalignment × alignment study: alignment and identification vs the unbiased block",
    ),
    "uniqueness_objective": (
        "mmrep.analysis.uniqueness_objective",
        "uniqueness × objective study: alignment, accuracy and bit MCC vs U per objective",
    ),
    "vl_uniqueness": ("mmrep.analysis.vl_uniqueness", "vision–language uniqueness sweep: alignment vs U and LM"),
}
DATA = {
    "rus": ("mmrep.data.rus", "generate and cache the RUS synthetic datasets"),
    "mpi3d": ("mmrep.data.mpi3d", "render the MPI3D caption files of the paper settings (render-text)"),
    "causal3dident": (
        "mmrep.data.causal3dident",
        "render the Causal3DIdent caption files of the paper settings (render-text)",
    ),
}


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


def _run_main(module: str, argv: list[str], prog: str) -> int:
    code = importlib.import_module(module).main(argv, prog=prog)
    return 0 if code is None else int(code)


def _train(argv: list[str]) -> int:
    """``python -m mmrep.train ARGS``: Hydra reads ``sys.argv``, whose first item ``python -m`` sets to the file."""
    train = importlib.import_module("mmrep.train")
    sys.argv = [train.__file__, *argv]
    train.cli()
    return 0


def _group(command: str, kind: str, kinds: str, metavar: str, entries: dict, argv: list[str]) -> int:
    if _wants_help(argv):
        print(f"usage: {PROG} {command} <{metavar}> [args ...]\n\n" + _listing(f"{kinds}:", entries))
        print(f"\n'{PROG} {command} <{metavar}> --help' for its arguments.")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in entries:
        return _unknown(kind, name, entries, f"{PROG} {command}")
    return _run_main(entries[name][0], rest, f"{PROG} {command} {name}")


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
    if command == "train":
        return _train(rest)
    if command == "align":
        return _run_main("mmrep.align", rest, f"{PROG} align")
    if command == "analyze":
        return _group("analyze", "study", "studies", "study", STUDIES, rest)
    if command == "data":
        return _group("data", "data set", "data sets", "name", DATA, rest)
    return _unknown("command", command, COMMANDS, PROG)


if __name__ == "__main__":
    sys.exit(main())
