"""``python -m mmrep.align A.npy B.npy``: the alignment suite between two saved feature matrices.

    python -m mmrep.align feats_x.npy feats_t.npy --metrics all
    python -m mmrep.align a.npy b.npy --metrics mutual_knn,unbiased_cka --k 10 --q 0.95 --csv out.csv

Row i of both files must be the same sample. Accepts ``.npy``, ``.npz`` (one array, or ``file.npz:key``) and
``.pt`` (a tensor). Prints a table (or CSV/JSON with ``--format``); errors name the argument at fault.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mmrep.core.files import nearest_existing
from mmrep.metrics.alignment import METRICS, AlignmentInputError, alignment_scores, resolve_metrics
from mmrep.metrics.alignment.preprocess import check_pair


class InputFileError(ValueError):
    pass


class OptionError(ValueError):
    """A command-line option the run cannot use; the message starts with the option's name."""


def load_features(spec: str, name: str) -> np.ndarray:
    """Load an (N, d) array from ``.npy``, ``.npz`` (``path.npz:key`` picks an array) or ``.pt``."""
    path, key = Path(spec), ""
    if ".npz:" in spec:
        head, key = spec.rsplit(":", 1)
        path = Path(head)
    if not path.is_file():
        raise InputFileError(f"{name}: no such file {str(path)!r} (expected an (N, d) array in .npy/.npz/.pt)")
    try:
        if path.suffix == ".npz":
            with np.load(path) as archive:
                keys = list(archive.keys())
                if not key and len(keys) != 1:
                    raise InputFileError(f"{name}: {path} holds arrays {keys}; pick one as {path}:<key>")
                if key and key not in keys:
                    raise InputFileError(f"{name}: {path} has no array {key!r}; it holds {keys}")
                return archive[key or keys[0]]
        if path.suffix == ".pt":
            value = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(value, torch.Tensor):
                raise InputFileError(f"{name}: {path} holds a {type(value).__name__}, expected a tensor")
            return value.numpy()
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except InputFileError:
        raise
    except Exception as err:  # unreadable/corrupt file: say which one
        raise InputFileError(f"{name}: cannot read {path} ({type(err).__name__}: {err})") from None


def parse_args(argv=None, prog: str | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog or "python -m mmrep.align",
        description="Representation alignment between two paired feature matrices (arXiv:2502.16282; the metrics of "
        "multimodal_alignment utils/align_metrics.py).",
        epilog=f"metrics: {', '.join(METRICS)}",
    )
    parser.add_argument("A", help="features of the first representation, (N, d1)")
    parser.add_argument("B", help="features of the second representation, (N, d2), same samples in the same order")
    parser.add_argument("--metrics", default="all", help="'all' or a comma-separated list (default: all)")
    parser.add_argument("--k", type=int, default=100, help="neighbours for the kNN metrics and CKNNA (default 100)")
    parser.add_argument("--q", type=float, default=1.0, help="outlier clamp quantile, 1 = none (default 1)")
    parser.add_argument("--approx-quantile", action="store_true", help="platonic-style mean per-row quantile")
    parser.add_argument("--rbf-sigma", type=float, default=1.0, help="RBF CKA bandwidth (default 1)")
    parser.add_argument("--svcca-dim", type=int, default=10, help="SVCCA singular directions (default 10)")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--format", default="table", choices=["table", "csv", "json"], help="stdout format")
    parser.add_argument("--csv", type=Path, help="also write the results table to this CSV file")
    return parser.parse_args(argv)


def main(argv=None, prog: str | None = None) -> int:
    """The command (``mmrep align`` passes ``prog``); returns the exit code."""
    args = parse_args(argv, prog)
    try:
        # options first (cheap, and nothing is loaded, computed or written before they are known to work)
        if args.svcca_dim < 1:
            raise OptionError(
                f"--svcca-dim: must be >= 1 and <= the number of feature columns of A and B, got {args.svcca_dim}"
            )
        metrics = resolve_metrics(args.metrics)
        device = _resolve_device(args.device)
        if args.csv:
            _check_writable(args.csv)
        dtype = getattr(torch, args.dtype)
        X = torch.from_numpy(np.array(load_features(args.A, "A"))).to(device=device, dtype=dtype)
        Y = torch.from_numpy(np.array(load_features(args.B, "B"))).to(device=device, dtype=dtype)
        X, Y = check_pair(X, Y, ("A", "B"))
        for name, spec, H in (("A", args.A, X), ("B", args.B, Y)):
            if bool((H == H[:1]).all()):
                # every row identical: variances are 0, so CKA / CCA / CMD divide 0 by 0 (NaN or an arbitrary value)
                raise InputFileError(
                    f"{name}: every feature column of {spec} is constant (zero variance); correlation-based "
                    "metrics are undefined for it; pass features that vary across samples"
                )
        metrics = _fit_svcca(metrics, args.metrics, args.svcca_dim, X.shape[1], Y.shape[1])
        started = time.perf_counter()
        scores = alignment_scores(
            X,
            Y,
            metrics,
            k=args.k,
            q=args.q,
            exact_quantile=not args.approx_quantile,
            rbf_sigma=args.rbf_sigma,
            svcca_dim=args.svcca_dim,
        )
        seconds = time.perf_counter() - started
    except (InputFileError, OptionError, AlignmentInputError) as err:
        return _error(_cli_name(str(err)))
    table = pd.DataFrame(
        [{"metric": m, "value": v, "k": args.k if METRICS[m].uses_k else None, "q": args.q} for m, v in scores.items()]
    )
    table["k"] = table["k"].astype("Int64")
    if args.csv:
        try:
            args.csv.parent.mkdir(parents=True, exist_ok=True)
            table.to_csv(args.csv, index=False)
        except OSError as err:  # checked up front, but e.g. a read-only file system only shows when writing
            return _error(f"--csv: cannot write {args.csv} ({err.strerror or err}); choose a writable path")
    if args.format == "csv":
        print(table.to_csv(index=False), end="")
    elif args.format == "json":
        print(json.dumps(scores, indent=2))
    else:
        _print_table(scores, X.shape, Y.shape, args, device, seconds)
    return 0


def _error(message: str) -> int:
    """Report ``message`` as one ``mmrep.align: error: ...`` line (wrapped library text is joined) and return 2."""
    print(f"mmrep.align: error: {' '.join(message.split())}", file=sys.stderr)
    return 2


def _resolve_device(spec: str) -> torch.device:
    """``--device`` as a torch device that exists here: auto → cuda if available, else cpu."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise OptionError(f"--device: invalid device {spec!r}; use auto, cpu, cuda or cuda:<index>") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise OptionError(f"--device: CUDA is not available on this machine ({spec!r}); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise OptionError(
                f"--device: {spec!r} does not exist, this machine has {torch.cuda.device_count()} CUDA device(s); "
                "use cuda:0 .. cuda:<count - 1> or --device cpu"
            )
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise OptionError(f"--device: MPS is not available on this machine ({spec!r}); use --device cpu")
    elif device.type != "cpu":  # meta, xla, ...: parse but cannot hold the features or run the metrics here
        raise OptionError(f"--device: unsupported device {spec!r}; use auto, cpu, cuda or cuda:<index>")
    return device


def _check_writable(path: Path) -> None:
    """Fail before any metric is computed if ``--csv`` cannot be written (the directory is made only at the end)."""
    if path.is_dir():
        raise OptionError(f"--csv: {path} is a directory; give a file path such as {path / 'alignment.csv'}")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise OptionError(f"--csv: {path} is not writable; choose another path")
        return
    ancestor = nearest_existing(path.parent)
    if not ancestor.is_dir():
        raise OptionError(f"--csv: cannot create {path}: {ancestor} is not a directory; choose another path")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OptionError(f"--csv: cannot create {path}: directory {ancestor} is not writable; choose another path")


def _fit_svcca(metrics: list[str], requested: str, dim: int, cols_a: int, cols_b: int) -> list[str]:
    """SVCCA needs ``--svcca-dim`` <= the columns of both inputs. Under ``--metrics all`` it is dropped with a
    note (the rest of the suite is still meaningful, e.g. on 5-d MOSI audio); asked for by name, it is an error."""
    if "svcca" not in metrics or dim <= min(cols_a, cols_b):
        return metrics
    narrow = ", ".join(f"{name} has {cols}" for name, cols in (("A", cols_a), ("B", cols_b)) if cols < dim)
    if [m.strip() for m in requested.split(",") if m.strip()] == ["all"]:
        print(
            f"mmrep.align: note: skipping svcca: --svcca-dim {dim} exceeds the feature columns ({narrow}); "
            f"pass --svcca-dim {min(cols_a, cols_b)} or less to include it",
            file=sys.stderr,
        )
        return [m for m in metrics if m != "svcca"]
    raise OptionError(
        f"--svcca-dim: must be >= 1 and <= the number of feature columns (A has {cols_a}, B has {cols_b}), "
        f"got {dim}; lower it or leave svcca out of --metrics"
    )


def _cli_name(message: str) -> str:
    """Argument names of the library (X, Y, k, q, ...) as the CLI spells them (A, B, --k, --q, ...)."""
    head, sep, rest = message.partition(": ")
    renamed = {
        "X": "A",
        "Y": "B",
        "X, Y": "A, B",
        "k": "--k",
        "q": "--q",
        "metrics": "--metrics",
        "rbf_sigma": "--rbf-sigma",
        "svcca_dim": "--svcca-dim",
    }
    return f"{renamed.get(head, head)}{sep}{rest}".replace("[1, N-2]", "[1, N-2] (N = rows of A)")


def _print_table(scores: dict, shape_a, shape_b, args, device, seconds: float) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"alignment  A {tuple(shape_a)}  B {tuple(shape_b)}",
        caption=f"k={args.k}, q={args.q}, {args.dtype} on {device}; {seconds:.2f}s",
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("definition")
    for metric, value in scores.items():
        table.add_row(metric, f"{value:.6f}", METRICS[metric].summary)
    Console(width=100).print(table)


if __name__ == "__main__":
    sys.exit(main())
