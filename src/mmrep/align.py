"""``python -m mmrep.align A.npy B.npy``: the alignment suite between two saved feature matrices.

    python -m mmrep.align feats_x.npy feats_t.npy --metrics all
    python -m mmrep.align a.npy b.npy --metrics mutual_knn,unbiased_cka --k 10 --q 0.95 --csv out.csv

Row i of both files must be the same sample. Accepts ``.npy``, ``.npz`` (one array, or ``file.npz:key``) and
``.pt`` (a tensor). Prints a table (or CSV/JSON with ``--format``); errors name the argument at fault.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mmrep.metrics.alignment import METRICS, AlignmentInputError, alignment_scores


class InputFileError(ValueError):
    pass


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


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m mmrep.align",
        description="Representation alignment between two paired feature matrices (spec rus-alignment §4).",
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


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                              ("cpu" if args.device == "auto" else args.device))
        dtype = getattr(torch, args.dtype)
        X = torch.from_numpy(np.array(load_features(args.A, "A"))).to(device=device, dtype=dtype)
        Y = torch.from_numpy(np.array(load_features(args.B, "B"))).to(device=device, dtype=dtype)
        started = time.perf_counter()
        scores = alignment_scores(
            X, Y, args.metrics, k=args.k, q=args.q, exact_quantile=not args.approx_quantile,
            rbf_sigma=args.rbf_sigma, svcca_dim=args.svcca_dim,
        )
        seconds = time.perf_counter() - started
    except (InputFileError, AlignmentInputError) as err:
        print(f"mmrep.align: error: {_cli_name(str(err))}", file=sys.stderr)
        return 2
    table = pd.DataFrame(
        [{"metric": m, "value": v, "k": args.k if METRICS[m].uses_k else None, "q": args.q} for m, v in scores.items()]
    )
    table["k"] = table["k"].astype("Int64")
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.csv, index=False)
    if args.format == "csv":
        print(table.to_csv(index=False), end="")
    elif args.format == "json":
        print(json.dumps(scores, indent=2))
    else:
        _print_table(scores, X.shape, Y.shape, args, device, seconds)
    return 0


def _cli_name(message: str) -> str:
    """Argument names of the library (X, Y, k, q, ...) as the CLI spells them (A, B, --k, --q, ...)."""
    head, sep, rest = message.partition(": ")
    renamed = {"X": "A", "Y": "B", "X, Y": "A, B", "k": "--k", "q": "--q", "metrics": "--metrics", "rbf_sigma": "--rbf-sigma"}
    return f"{renamed.get(head, head)}{sep}{rest}".replace("[1, N-1]", "[1, N-1] (N = rows of A)")


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
