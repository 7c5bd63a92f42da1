"""Benchmark: generating all 9 redundancies × 11 depths of the RUS data, vectorised vs per-sample Python.

    python benchmarks/bench_rus_generator.py [--num-data 65536]

The baseline runs as the original multimodal_alignment synthetic/generate_prob_data.py does: the label distribution
built combination by combination in Python, then one ``rng.choice(4, p=...)`` per sample, and the heterogeneity
transform applied per (r, depth). mmrep (``mmrep.data.rus.generate_grid``) builds the label table with array operations,
draws all labels with one uniform per sample (the same stream, so the same labels) and shares the transformed modality
across r. Both run in this process; the script checks the arrays are identical and prints the speed-up.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from mmrep.data import rus


def per_sample_dataset(r: int, nets, num_data: int, temperature: float = 0.05):
    red, rule1, rule2 = rus.label_rules(r)
    rng = np.random.RandomState(2)
    W = rus.label_weights(rng)
    xc_bits, xu_bits = rus.bit_table(8).tolist(), rus.bit_table(4).tolist()
    q = np.empty((256 * 16 * 16, 4))
    row = 0
    for c in range(256):
        for u1 in range(16):
            for u2 in range(16):
                v = [xc_bits[c][i] for i in red] + [xu_bits[u1][i] for i in rule1] + [xu_bits[u2][i] for i in rule2]
                logits = [sum(v[k] * W[k, j] for k in range(8)) / temperature for j in range(4)]
                top = max(logits)
                e = [np.exp(z - top) for z in logits]
                q[row] = [x / sum(e) for x in e]
                row += 1
    q = rus.balance(q, np.full(4, 0.25)).reshape(256, 16, 16, 4)
    xc = rng.choice(256, num_data, p=[1 / 256] * 256)  # the original passes a uniform p (another stream)
    xu1, xu2 = rng.choice(16, num_data, p=[1 / 16] * 16), rng.choice(16, num_data, p=[1 / 16] * 16)
    y = np.array([rng.choice(4, p=q[a, b, c]) for a, b, c in zip(xc, xu1, xu2)])
    x0 = np.array([xc_bits[a] + xu_bits[b] for a, b in zip(xc, xu1)], dtype=np.float32)
    raw1 = torch.tensor([xc_bits[a] + xu_bits[c] for a, c in zip(xc, xu2)], dtype=torch.float32)
    out = {}
    for depth, net in enumerate(nets):
        with torch.no_grad():
            out[depth] = (x0, net(raw1).numpy(), y)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--num-data", type=int, default=65_536)
    args = parser.parse_args()
    torch.set_num_threads(1)

    started = time.perf_counter()
    ours = {key: (a["x0"], a["x1"], a["label"]) for key, a in rus.generate_grid(num_data=args.num_data)}
    ours_s = time.perf_counter() - started

    started = time.perf_counter()
    nets = rus.heterogeneity_transforms(10)
    base = {}
    for r in range(9):
        for depth, arrays in per_sample_dataset(r, nets, args.num_data).items():
            base[(r, depth)] = arrays
        print(f"  baseline r={r} done ({time.perf_counter() - started:.1f}s)", flush=True)
    base_s = time.perf_counter() - started

    same = all(all(np.array_equal(o, b) for o, b in zip(ours[k], base[k])) for k in base)
    print(
        f"all 9 × 11 datasets of {args.num_data} samples: per-sample {base_s:.1f}s, mmrep {ours_s:.2f}s "
        f"→ {base_s / ours_s:.0f}× faster; identical arrays: {same}"
    )


if __name__ == "__main__":
    main()
