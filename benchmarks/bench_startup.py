"""What starting a run costs: whole commands timed (median of ``--repeat`` runs), and the imports of a run split into
the third-party stack and what mmrep adds on top of it.

    .venv/bin/python benchmarks/bench_startup.py             # ~1 min on 2 CPU cores
    .venv/bin/python benchmarks/bench_startup.py --repeat 5

Commands: ``mmrep train --help``, ``--cfg job``, an unknown key (a config error), ``mmrep --help`` and a
``debug=default`` smoke run. Imports: ``python -X importtime`` of the modules a training run loads; each import is
charged to the first package that asked for it, so "mmrep adds" is the self time of mmrep's modules plus every
third-party package that only mmrep imports (not torch, Lightning or Hydra themselves).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict

PY = sys.executable
STACK = ("torch", "pytorch_lightning", "lightning_fabric", "lightning_utilities", "torchmetrics", "hydra", "omegaconf")
# what a training run imports (mmrep.train imports these steps when a run starts)
RUN_IMPORTS = (
    "import mmrep.train; from mmrep.pipeline import build, checks, fit, loggers, measure, resume, errors; "
    "import mmrep.callbacks.bookkeeping, mmrep.callbacks.threads, mmrep.callbacks.progress; "
    "import mmrep.data.numeric, mmrep.objectives.mmcl, mmrep.encoders.mlp, mmrep.metrics.identifiability"
)


def timed(args: list[str], repeat: int) -> tuple[float, int]:
    """Median wall time of ``args`` over ``repeat`` runs, and its exit code."""
    times, code = [], 0
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    for _ in range(repeat):
        start = time.perf_counter()
        code = subprocess.run(args, capture_output=True, env=env, cwd=tempfile.gettempdir()).returncode
        times.append(time.perf_counter() - start)
    return statistics.median(times), code


def import_tree(code: str) -> list[tuple[int, int, str]]:
    """``(self µs, depth, module)`` per import of ``python -X importtime -c code``, in import order."""
    err = subprocess.run([PY, "-X", "importtime", "-c", code], capture_output=True, text=True).stderr
    rows = []
    for line in err.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+\d+ \|( *)(\S+)", line)
        if match:
            rows.append((int(match.group(1)), len(match.group(2)) // 2, match.group(3)))
    return rows


def attribute(rows: list[tuple[int, int, str]]) -> tuple[dict[str, float], dict[str, float]]:
    """Seconds per stack package (torch, Lightning, Hydra …: what any such run pays) and per package mmrep adds
    (``mmrep`` itself, and each package first imported under an mmrep module with no stack package in between)."""
    stack_cost: dict[str, float] = defaultdict(float)
    added: dict[str, float] = defaultdict(float)
    ancestors: list[tuple[int, str]] = []  # (depth, top-level package) of the enclosing imports
    for self_us, depth, module in reversed(
        rows
    ):  # importtime prints a module after its imports: reversed = parents first
        while ancestors and ancestors[-1][0] >= depth:
            ancestors.pop()
        top = module.split(".")[0]
        ancestors.append((depth, top))
        owner = next((p for _, p in reversed(ancestors) if p in STACK or p == "mmrep"), None)
        if owner == "mmrep":
            added[top] += self_us / 1e6
        else:
            stack_cost[owner or top] += self_us / 1e6
    return dict(stack_cost), dict(added)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    out = tempfile.mkdtemp(prefix="mmrep-startup-")
    commands = {
        "mmrep --help": [PY, "-m", "mmrep.cli", "--help"],
        "mmrep train --help": [PY, "-m", "mmrep.train", "--help"],
        "mmrep train --cfg job": [PY, "-m", "mmrep.train", "--cfg", "job"],
        "mmrep train +seeed=3 (key error)": [PY, "-m", "mmrep.train", "+seeed=3", f"hydra.run.dir={out}/e"],
        "import torch": [PY, "-c", "import torch"],
        "import pytorch_lightning": [PY, "-c", "import pytorch_lightning"],
        "mmrep train debug=default": [PY, "-m", "mmrep.train", "debug=default", f"hydra.run.dir={out}/d"],
    }
    print(f"{'command':<36} {'median s':>9}  exit")
    for name, command in commands.items():
        seconds, code = timed(command, 1 if "debug" in name else args.repeat)
        print(f"{name:<36} {seconds:9.2f}  {code}")
    stack_cost, added = attribute(import_tree(RUN_IMPORTS))
    total = sum(stack_cost.values()) + sum(added.values())
    print(f"\nimports of a training run: {total:.2f} s (self times, one process)")
    print("  the stack: " + ", ".join(f"{k} {v:.2f} s" for k, v in sorted(stack_cost.items(), key=lambda kv: -kv[1])
                                        if v >= 0.01))  # fmt: skip
    print("  mmrep adds: " + ", ".join(f"{k} {v:.2f} s" for k, v in sorted(added.items(), key=lambda kv: -kv[1])
                                         if v >= 0.01))  # fmt: skip


if __name__ == "__main__":
    main()
