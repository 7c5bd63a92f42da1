"""The command line shared by every analysis (``mmrep analyze <study> ...`` and ``python -m mmrep.analysis.<study>``).

Each study builds its parser with :func:`study_parser` — the sweep folder(s), ``--out`` and ``--wandb`` are the same
everywhere, the study adds its own options — and runs its work inside :func:`run_analysis`, which holds the one error
policy: a missing folder, a folder without (matching) runs or an unusable sweep is one line
``<command>: error: <what>`` on stderr and exit code 1, without a traceback, before anything is written. Usage
errors (an unknown option, a bad choice) stay argparse's: the usage, one ``error:`` line and exit code 2. The
analysis' warnings — the run folders it skips, each with the reason — go to stderr as ``<command>: warning: ...``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

EXIT_ERROR = 1  # a folder, a sweep or a file the analysis cannot use (argparse's usage errors exit with 2)


def module_prog(study: str) -> str:
    """The program name of ``python -m mmrep.analysis.<study>``."""
    return f"python -m mmrep.analysis.{study}"


def command_name(prog: str) -> str:
    """How an error line names the command: ``python -m mmrep.analysis.rus`` → ``mmrep.analysis.rus``, ``mmrep analyze
    rus`` as is."""
    return prog.removeprefix("python -m ")


def study_parser(
    study: str,
    description: str,
    *,
    prog: str | None = None,
    many: bool = False,
    sweep_help: str = "a multirun directory (or any folder of runs)",
    out_help: str | None = None,
    wandb_help: str = "also log the tables and figures to W&B, in the group of the sweep's runs",
) -> argparse.ArgumentParser:
    """The parser of an analysis command with the common arguments: the sweep folder (``sweep``; with ``many`` one
    or more, ``sweeps``), ``--out`` (default: the (first) sweep folder) and ``--wandb``. ``prog`` defaults to
    ``python -m mmrep.analysis.<study>`` (``mmrep analyze`` passes ``mmrep analyze <study>``)."""
    parser = argparse.ArgumentParser(prog=prog or module_prog(study), description=description)
    if many:
        parser.add_argument("sweeps", type=Path, nargs="+", metavar="SWEEP", help=sweep_help)
    else:
        parser.add_argument("sweep", type=Path, metavar="SWEEP", help=sweep_help)
    default = "the first sweep folder" if many else "the sweep folder"
    parser.add_argument("--out", type=Path, default=None, help=out_help or f"output folder (default: {default})")
    parser.add_argument("--wandb", action="store_true", help=wandb_help)
    return parser


def sweeps_of(args: argparse.Namespace) -> list[Path]:
    """The sweep folder(s) a :func:`study_parser` parsed."""
    return list(args.sweeps) if hasattr(args, "sweeps") else [args.sweep]


def check_folders(folders: Sequence[Path]) -> None:
    """FileNotFoundError naming the first of ``folders`` that is not an existing folder."""
    for folder in folders:
        folder = Path(folder)
        if not folder.exists():
            raise FileNotFoundError(f"{folder}: no such folder")
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: not a folder (pass the sweep's multirun directory)")


def fail(prog: str, message: object) -> int:
    """Print ``<command>: error: <message>`` (its first line) to stderr; return the error exit code 1."""
    text = (str(message).strip().splitlines() or [type(message).__name__])[0]
    print(f"{command_name(prog)}: error: {text}", file=sys.stderr)
    return EXIT_ERROR


@contextmanager
def warnings_to_stderr(prog: str) -> Iterator[None]:
    """While inside, the warnings of ``mmrep.analysis.*`` are printed to stderr as ``<command>: warning: <message>``.

    The commands configure no logging, and Python's fallback would print the bare message; a handler of the
    ``mmrep.analysis`` logger says which command warns and still lets the records propagate (to pytest's caplog)."""
    handler = logging.StreamHandler(sys.stderr)  # the stderr of now: pytest's capsys swaps it per test
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter(command_name(prog).replace("%", "%%") + ": warning: %(message)s"))
    logger = logging.getLogger("mmrep.analysis")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def run_analysis(prog: str, analyze: Callable[[], object], folders: Sequence[Path] = ()) -> tuple[int, object]:
    """Check ``folders`` exist, then call ``analyze()``: a missing folder or file or an unusable sweep
    (FileNotFoundError, NotADirectoryError, ValueError) becomes one line ``<command>: error: ...`` on stderr and
    ``(1, None)``; else ``(0, result)``. ``analyze`` should compute before it writes, so an error leaves nothing
    half-written. Its warnings (the runs it skips and why) go to stderr (:func:`warnings_to_stderr`)."""
    try:
        check_folders(folders)
        with warnings_to_stderr(prog):
            return 0, analyze()
    except (FileNotFoundError, NotADirectoryError, ValueError) as err:
        return fail(prog, err), None


def publish(prog: str, sweep: Path, tables: dict, figures: list[Path], analysis: str) -> int:
    """``--wandb``: :func:`mmrep.analysis.publish.publish_cli` (imports W&B only when asked)."""
    from mmrep.analysis.publish import publish_cli

    return publish_cli(prog, sweep, tables, figures, analysis)
