"""How far the original's randomised SVCCA (``torch.svd_lowrank``) is from the exact closed form (issue 13).

    python benchmarks/svcca_randomized_gap.py

On well-conditioned features with N ≫ d the two agree closely; when d > N (more features than samples, as with the
wide layers of real models on a 512-sample alignment set) the randomised top-10 subspace is a poor approximation and
its SVCCA drifts from the exact value, by a different amount for every torch seed. Prints both per setting.
"""

from __future__ import annotations

import torch

from mmrep.metrics.alignment import svcca


def features(n: int, d: int, rank: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two views sharing a ``rank``-dimensional signal, with a slowly decaying spectrum (badly conditioned)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, rank, generator=g)
    scale = torch.logspace(0, -2, d)
    a = (z @ torch.randn(rank, d, generator=g) + 0.5 * torch.randn(n, d, generator=g)) * scale
    b = (z @ torch.randn(rank, d, generator=g) + 0.5 * torch.randn(n, d, generator=g)) * scale.flip(0)
    return a, b


def main() -> None:
    print(f"{'N':>5} {'d':>5}  exact   randomised (torch seeds 0..4)          max |gap|")
    for n, d in ((2048, 64), (512, 512), (256, 1024), (128, 2048)):
        a, b = features(n, d, rank=12, seed=0)
        exact = svcca(a, b)
        approx = []
        for seed in range(5):
            torch.manual_seed(seed)
            approx.append(svcca(a, b, svcca_randomized=True))
        gap = max(abs(x - exact) for x in approx)
        print(f"{n:>5} {d:>5}  {exact:.3f}   " + " ".join(f"{x:.3f}" for x in approx) + f"   {gap:.3f}")


if __name__ == "__main__":
    main()
