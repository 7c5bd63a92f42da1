"""``FlexibleTextEncoder2D`` of the image–text experiments (crossmodal_mislaignment encoders.py): one-hot tokens →
``Linear(V, 128)`` → a one-channel ``L × 128`` map → ``Conv2d(4, stride 2, padding 1) + BatchNorm2d + ReLU`` while
both sides are ≥ 4 (25 channels first, doubling, at most 200) → flatten → ``Linear(→ encoding size)``."""

from __future__ import annotations

import torch
from torch import nn

from mmrep.core.contract import ModalityInput, ModalitySpec
from mmrep.core.errors import ConfigError

EMBEDDING, FIRST_CHANNELS, MAX_CHANNELS = 128, 25, 200
MIN_LEN, MAX_LEN = 4, 164  # the original constructor's bounds


class TextCNN2D(nn.Module):
    """``(B, L, V)`` one-hot tokens (or ``{"x": ..., "mask": ...}``, the mask unused) → ``(B, out_dim)``."""

    def __init__(self, modality: ModalitySpec, out_dim: int, embedding: int = EMBEDDING) -> None:
        super().__init__()
        if len(modality.shape) != 2:
            raise ConfigError(
                f"encoder: text_cnn2d needs (L, V) one-hot tokens, the modality has shape {modality.shape}"
            )
        length, vocab = modality.shape
        if not MIN_LEN <= length <= MAX_LEN:
            raise ConfigError(
                f"encoder: text_cnn2d needs {MIN_LEN} <= L <= {MAX_LEN} tokens (the original's bounds), "
                f"the modality has L = {length}"
            )
        self.embed = nn.Linear(vocab, int(embedding))
        blocks, c_in, c_out, h, w = [], 1, FIRST_CHANNELS, length, int(embedding)
        while h >= 4 and w >= 4:
            blocks.append(nn.Sequential(nn.Conv2d(c_in, c_out, 4, 2, 1), nn.BatchNorm2d(c_out), nn.ReLU()))
            c_in, c_out, h, w = c_out, min(2 * c_out, MAX_CHANNELS), h // 2, w // 2
        self.blocks = nn.ModuleList(blocks)
        self.out = nn.Linear(c_in * h * w, int(out_dim))

    def _run(self, x: ModalityInput):
        tokens = x if isinstance(x, torch.Tensor) else x["x"]
        h = self.embed(tokens).unsqueeze(1)
        for block in self.blocks:
            h = block(h)
            yield h

    def forward(self, x: ModalityInput) -> torch.Tensor:
        for h in self._run(x):
            pass
        return self.out(h.flatten(1))

    def layer_features(self, x: ModalityInput) -> dict[str, torch.Tensor]:
        """``{"conv{l}": (B, channels)}``: each block's output averaged over the map."""
        return {f"conv{l}": h.mean(dim=(2, 3)) for l, h in enumerate(self._run(x), start=1)}
