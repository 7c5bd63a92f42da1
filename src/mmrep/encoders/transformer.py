"""Transformer encoder for token sequences (multimodal_alignment unimodals/common_models.py).

``Linear(F, E)`` projection, optional learnable CLS token, learnable positional embedding (``randn`` init) over
``cls + max_len`` positions, ``depth`` post-norm ``TransformerEncoderLayer(E, nhead, dim_feedforward=E,
dropout=0.1, ReLU)`` layers and a padding mask. The representation is the CLS token of the last layer or the
mean over positions; :meth:`Transformer.layer_features` reads every layer the same way (the original's
scripts/get_alignment.py).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mmrep.core.contract import ModalityInput, ModalitySpec
from mmrep.core.errors import ConfigError


class Transformer(nn.Module):
    """``(B, T, F)`` tokens (or ``{"x": (B, T, F), "mask": (B, T) bool, True = real token}``) → ``(B, out_dim)``.

    Args:
        modality: the modality's :class:`ModalitySpec`: ``(T, F)`` tokens; a vector ``(F,)`` is one token; a grid
            ``(..., F)`` such as AVMNIST's ``(1, 7, 7, 16)`` patches is flattened to tokens (the ViT variant).
        out_dim: representation width; a final ``Linear(E, out_dim)`` is added only when it differs from ``E``.
        depth: number of encoder layers (D_enc). width: E, default F (original: ``hidden_dim = n_features``).
        nhead: attention heads (original: 1). max_len: positional slots (original: 50); default T.
        use_cls: prepend a learnable CLS token and read it (original: sarcasm, humor, AVMNIST) instead of the mean.
        mean_includes_padding: the original's mean ran over padded positions too; the default excludes them.
        dropout: of each layer (original: 0.1, PyTorch's default).
    """

    def __init__(
        self,
        modality: ModalitySpec,
        out_dim: int | None = None,
        depth: int = 1,
        width: int | None = None,
        nhead: int = 1,
        max_len: int | None = None,
        use_cls: bool = False,
        mean_includes_padding: bool = False,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if not isinstance(modality, ModalitySpec):
            modality = ModalitySpec(tuple(modality), kind="sequence")
        # (F,) is one token; (T, F) a sequence; (..., F), e.g. a (1, 7, 7, 16) patch grid, is flattened to tokens
        tokens, features = math.prod(modality.shape[:-1]), modality.shape[-1]
        width = int(width or features)
        max_len = int(max_len or tokens)
        if int(depth) < 1:
            raise ConfigError(f"encoder.depth: a transformer needs >= 1 layer, got {depth}")
        if width % int(nhead):
            raise ConfigError(f"encoder.nhead: width {width} is not divisible by nhead={nhead}")
        if tokens > max_len:
            raise ConfigError(f"encoder.max_len: {max_len} positions for sequences of {tokens} tokens")
        self.use_cls, self.mean_includes_padding = bool(use_cls), bool(mean_includes_padding)
        self.proj = nn.Linear(features, width)
        self.cls = nn.Parameter(torch.randn(1, 1, width)) if self.use_cls else None
        self.pos = nn.Parameter(torch.randn(1, int(self.use_cls) + max_len, width))
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(width, int(nhead), dim_feedforward=width, dropout=dropout, batch_first=True)
            for _ in range(int(depth))
        )
        self.out = nn.Linear(width, int(out_dim)) if out_dim and int(out_dim) != width else nn.Identity()

    def _tokens(self, x: ModalityInput) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Embedded tokens (B, S, E) and the padding mask (B, S), True at padding (PyTorch's convention)."""
        if isinstance(x, torch.Tensor):
            tokens, valid = x, None
        else:
            tokens, valid = x["x"], x.get("mask")
        h = self.proj(tokens.reshape(tokens.shape[0], -1, tokens.shape[-1]))
        if self.cls is not None:
            h = torch.cat([self.cls.expand(h.shape[0], -1, -1), h], dim=1)
            if valid is not None:
                valid = torch.cat([valid.new_ones(valid.shape[0], 1), valid], dim=1)
        h = h + self.pos[:, : h.shape[1]]
        return h, (None if valid is None else ~valid.bool())

    def _pool(self, h: torch.Tensor, padding: torch.Tensor | None) -> torch.Tensor:
        if self.cls is not None:
            return h[:, 0]
        if padding is None or self.mean_includes_padding:
            return h.mean(1)
        keep = (~padding).unsqueeze(-1).to(h.dtype)
        return (h * keep).sum(1) / keep.sum(1).clamp_min(1.0)

    def _run(self, x: ModalityInput):
        h, padding = self._tokens(x)
        for layer in self.layers:
            h = layer(h, src_key_padding_mask=padding)
            yield h, padding

    def forward(self, x: ModalityInput) -> torch.Tensor:
        for h, padding in self._run(x):
            pass
        return self.out(self._pool(h, padding))

    def layer_features(self, x: ModalityInput) -> dict[str, torch.Tensor]:
        """``{"layer{l}": (B, E)}``: each layer's CLS token or (masked) mean, input to output."""
        return {f"layer{l}": self._pool(h, padding) for l, (h, padding) in enumerate(self._run(x), start=1)}
