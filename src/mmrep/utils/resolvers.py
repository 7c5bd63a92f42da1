"""OmegaConf resolvers the configs use (registered when :mod:`mmrep.train` is imported)."""

from __future__ import annotations

import torch
from omegaconf import OmegaConf


def bf16_or_32() -> str:
    """Lightning precision for ``trainer=gpu``: bf16 mixed precision where the GPU supports it, else float32."""
    return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "32-true"


if not OmegaConf.has_resolver("mmrep.bf16_or_32"):
    OmegaConf.register_new_resolver("mmrep.bf16_or_32", bf16_or_32)
