"""Derive independent, reproducible random streams from one run seed."""

from __future__ import annotations

import numpy as np
import torch

# Named purposes keep the streams of a run independent of each other and of their order of use.
_PURPOSES = {
    "covariance": 1,
    "mixing_x": 2,
    "mixing_t": 3,
    "train": 4,
    "val": 5,
    "probe_fit": 6,
    "probe_eval": 7,
    "shifted": 8,
    "align": 9,
}


def seed_sequence(seed: int, purpose: str, *extra: int) -> np.random.SeedSequence:
    """A SeedSequence for ``purpose`` (one of the keys above) and optional extra integers (step, rank)."""
    return np.random.SeedSequence([int(seed), _PURPOSES[purpose], *[int(e) for e in extra]])


def torch_generator(seed: int, purpose: str, *extra: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded from (seed, purpose, *extra). CPU and CUDA generators are
    different algorithms: the same seed gives different (equally reproducible) draws on each device type."""
    state = seed_sequence(seed, purpose, *extra).generate_state(2, dtype=np.uint32)
    return torch.Generator(device=device).manual_seed(int(state[0]) << 32 | int(state[1]))
