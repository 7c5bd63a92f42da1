"""OmegaConf resolvers the configs use (registered when :mod:`mmrep.train` is imported)."""

from __future__ import annotations

from omegaconf import OmegaConf


def bf16_or_32() -> str:
    """Lightning precision for ``trainer=gpu``: bf16 mixed precision where the GPU supports it, else float32."""
    import torch  # resolved when a run is built: --help and --cfg need no torch

    return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "32-true"


if not OmegaConf.has_resolver("mmrep.bf16_or_32"):
    OmegaConf.register_new_resolver("mmrep.bf16_or_32", bf16_or_32)


def unique_suffix() -> str:
    """Six random hex digits: with the second-resolution timestamp, a run (or sweep) folder no other run shares, even
    when two start in the same second. Cached per config, and Hydra copies the cache to each sweep job, so every use
    in one run or sweep gets the same value."""
    import secrets

    return secrets.token_hex(3)


if not OmegaConf.has_resolver("mmrep.unique"):
    OmegaConf.register_new_resolver("mmrep.unique", unique_suffix, use_cache=True)
