"""Benchmark: mmrep's fused contrastive losses vs the original formulations, loss + backward, at the paper's batch.

    python benchmarks/bench_infonce.py [--batch 6144] [--dim 6] [--repeats 3] [--device cpu]

Pairs, each run in its own subprocess on the same seeded inputs (so peak memory is the method's own):

* ``infonce``: the symmetric Lp-InfoNCE with fresh negatives of crossmodal_mislaignment utils/losses.py — its
  (B, B, d) difference tensor vs :func:`mmrep.objectives.losses.symmetric_info_nce` (fused row log-sum-exp, no B×B
  matrix);
* ``nt_xent``: SimCLR's 2B×2B logits matrix and cross-entropy (the image–text experiments) vs ``nt_xent``;
* ``cosine`` / ``dot``: in-batch InfoNCE through the full (B, B) similarity matrix vs the fused path.

Prints ms per forward + backward, the speed-up, the relative difference of the values, the largest relative
gradient difference and each side's peak RSS increase (CPU) or peak allocated memory (CUDA).
Targets (issue 14): ≥ 10× faster for the InfoNCE, values equal to 1e-5 relative, gradients to 1e-4.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from mmrep.objectives.losses import nt_xent, symmetric_info_nce


def original_lp_infonce(a, b, c, tau: float = 1.0):
    """The original's LpSimCLR (p = 2, squared, α = 0.5) through an explicit (B, B, d) difference tensor."""
    neg = (a.unsqueeze(1) - c.unsqueeze(0)).pow(2).sum(-1)
    pos = (a - b).pow(2).sum(-1)
    scores = torch.cat([-neg, -pos.unsqueeze(1)], dim=1) / tau
    return 2 * (0.5 * pos / tau + 0.5 * (torch.logsumexp(scores, dim=1) - math.log(scores.shape[1]))).mean()


def matrix_nt_xent(a, b, tau: float = 1.0):
    """SimCLR's loss as the original: [[S_ab, S_aa], [S_bb, S_abᵀ]] with masked self-similarities, cross-entropy."""
    a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    mask = torch.eye(a.shape[0], dtype=torch.bool, device=a.device)
    s_ab = a @ b.T / tau
    s_aa, s_bb = (a @ a.T / tau).masked_fill(mask, -math.inf), (b @ b.T / tau).masked_fill(mask, -math.inf)
    logits = torch.cat([torch.cat([s_ab, s_aa], 1), torch.cat([s_bb, s_ab.T], 1)], 0)
    return F.cross_entropy(logits, torch.arange(2 * a.shape[0], device=a.device))


def matrix_in_batch(a, b, similarity: str, tau: float = 1.0):
    """Symmetric in-batch InfoNCE through the full (B, B) similarity matrix."""

    def one(x, y):
        s = (F.normalize(x, dim=1) @ F.normalize(y, dim=1).T if similarity == "cosine" else x @ y.T) / tau
        return (torch.logsumexp(s, 1) - math.log(s.shape[1]) - s.diagonal()).mean()

    return 0.5 * (one(a, b) + one(b, a))


PAIRS = {  # name: (reference, fused, number of input tensors)
    "infonce": (
        lambda a, b, c, d: 0.5 * (original_lp_infonce(a, b, c) + original_lp_infonce(b, a, d)),
        lambda a, b, c, d: symmetric_info_nce(a, b, c, d),
        4,
    ),
    "nt_xent": (matrix_nt_xent, nt_xent, 2),
    "cosine": (
        lambda a, b: matrix_in_batch(a, b, "cosine"),
        lambda a, b: symmetric_info_nce(a, b, similarity="cosine"),
        2,
    ),
    "dot": (lambda a, b: matrix_in_batch(a, b, "dot"), lambda a, b: symmetric_info_nce(a, b, similarity="dot"), 2),
}


def measure(pair: str, side: int, batch: int, dim: int, repeats: int, device: str) -> dict:
    """Time one side in this process; returns ms/step, the value, the gradients' checksum data and peak memory."""
    fn, n_inputs = PAIRS[pair][side], PAIRS[pair][2]
    g = torch.Generator().manual_seed(0)
    inputs = [(0.5 * torch.randn(batch, dim, generator=g)).to(device).requires_grad_() for _ in range(n_inputs)]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(repeats + 1):  # the first call warms up
        for t in inputs:
            t.grad = None
        start = time.perf_counter()
        loss = fn(*inputs)
        loss.backward()
        if device == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - start)
    peak_mb = (
        torch.cuda.max_memory_allocated() / 2**20
        if device == "cuda"
        else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    )
    grads = torch.cat([t.grad.flatten() for t in inputs]).double().cpu()
    return {"ms": 1e3 * min(times), "value": loss.item(), "grads": grads.tolist(), "peak_mb": peak_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=6144, help="pairs per step (paper: 6144)")
    parser.add_argument("--dim", type=int, default=6, help="encoding size (numeric: |I_θ \\ I_β| = 6)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    parser.add_argument("--one", nargs=2, metavar=("PAIR", "SIDE"), help=argparse.SUPPRESS)  # subprocess mode
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], int(args.one[1]), args.batch, args.dim, args.repeats, args.device)))
        return
    print(f"device={args.device} batch={args.batch} dim={args.dim} threads={torch.get_num_threads()}")
    print(
        f"{'loss':8} {'reference ms':>13} {'fused ms':>9} {'speed-up':>9} {'value rel':>10} {'grad rel':>9} "
        f"{'ref peak MB':>12} {'fused peak MB':>14}"
    )
    for pair in args.pairs:
        sides = []
        for side in (0, 1):
            cmd = [
                sys.executable,
                __file__,
                "--one",
                pair,
                str(side),
                "--batch",
                str(args.batch),
                "--dim",
                str(args.dim),
                "--repeats",
                str(args.repeats),
                "--device",
                args.device,
            ]
            sides.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout))
        ref, fused = sides
        g_ref, g_fused = torch.tensor(ref["grads"]), torch.tensor(fused["grads"])
        value_rel = abs(fused["value"] - ref["value"]) / max(abs(ref["value"]), 1e-12)
        grad_rel = ((g_fused - g_ref).abs().max() / g_ref.abs().max()).item()
        print(
            f"{pair:8} {ref['ms']:13.1f} {fused['ms']:9.1f} {ref['ms'] / fused['ms']:8.1f}× {value_rel:10.1e} "
            f"{grad_rel:9.1e} {ref['peak_mb']:12.0f} {fused['peak_mb']:14.0f}"
        )


if __name__ == "__main__":
    main()
