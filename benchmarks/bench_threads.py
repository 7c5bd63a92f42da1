"""CPU threads when runs share a machine: one default numeric run alone vs two at once, with fixed thread counts
and with ``cpu_threads=auto`` (cores ÷ live mmrep processes, re-checked during training).

    python benchmarks/bench_threads.py [--steps 300]

Prints each configuration's training seconds (from the run log) and the ratio to the solo ``auto`` run. Target
(issue 14): two concurrent runs each within 2.5× of a solo run, and a solo run no slower than with torch's default.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path


def start(steps: int, threads: str, folder: Path) -> subprocess.Popen:
    args = [
        sys.executable,
        "-m",
        "mmrep.train",
        f"trainer.max_steps={steps}",
        f"cpu_threads={threads}",
        "metric=identifiability",
        "metric.identifiability.n_fit=512",
        "metric.identifiability.n_eval=512",
        "metric.identifiability.probes=[linear]",
        "logger=none",
        "callbacks.rich_progress_bar=null",
        f"hydra.run.dir={folder}",
    ]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def seconds(process: subprocess.Popen) -> float:
    out = process.communicate()[0]
    found = re.search(r"training took ([0-9.]+)s", out)
    if process.returncode or not found:
        raise RuntimeError(out[-2000:])
    return float(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench_threads_"))
    rows = []
    for label, threads, concurrent in (
        ("solo, torch default (all cores)", "2", 1),
        ("solo, auto", "auto", 1),
        ("two at once, 2 threads each", "2", 2),
        ("two at once, 1 thread each", "1", 2),
        ("two at once, auto", "auto", 2),
    ):
        runs = [start(args.steps, threads, root / f"{len(rows)}_{i}") for i in range(concurrent)]
        rows.append((label, [seconds(r) for r in runs]))
    solo = rows[1][1][0]
    print(f"{args.steps} training steps of the default numeric run, {len(rows)} configurations")
    for label, times in rows:
        print(f"{label:34} " + " ".join(f"{t:6.1f}s" for t in times) + f"   ({max(times) / solo:.2f}× solo auto)")


if __name__ == "__main__":
    main()
