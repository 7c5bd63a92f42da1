"""Fully-connected encoders.

``MLP(modality, out_dim, ...)`` follows the encoder contract: the config (``encoders.<modality>``) is
``_partial_: true`` and the objective calls it with that modality's :class:`ModalitySpec` and the encoding size.
Every hidden activation is a named ``act{l}`` module so alignment metrics
can hook post-activation features (:meth:`MLP.activation_layers`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from mmrep.core.contract import ModalitySpec
from mmrep.core.errors import ConfigError

_ACTIVATIONS = {
    "leaky_relu": lambda slope: nn.LeakyReLU(slope),
    "relu": lambda _: nn.ReLU(),
    "tanh": lambda _: nn.Tanh(),
    "gelu": lambda _: nn.GELU(),
    "elu": lambda _: nn.ELU(),
    "silu": lambda _: nn.SiLU(),
}


def make_activation(name: str, negative_slope: float = 0.01) -> nn.Module:
    """An activation module by name (``encoder.activation``)."""
    try:
        return _ACTIVATIONS[name](negative_slope)
    except KeyError:
        raise ConfigError(
            f"encoder.activation: unknown activation {name!r}; choose from {sorted(_ACTIVATIONS)}"
        ) from None


class MLP(nn.Module):
    """``Linear → act → … → Linear`` on flattened inputs.

    Args:
        in_shape: the modality's :class:`ModalitySpec` or its shape without the batch dimension (flattened).
        out_dim: output width (the encoding size).
        hidden: hidden widths; with ``relative=True`` they are multiples of the input dimension (crossmodal_mislaignment
            encoders.py's ``[10n, 50n, 50n, 50n, 50n, 10n]`` is ``hidden=[10, 50, 50, 50, 50, 10], relative=True``).
        activation, negative_slope: hidden non-linearity (encoders.py: LeakyReLU(0.01)).
        output_activation: also apply the activation after the last layer (the RUS encoders end with one).
        depth, width: when ``depth`` is set it replaces ``hidden``: ``depth`` linear layers, all ``width`` wide
            (default: ``out_dim``) — the RUS ``CustomMLP(12, 12, D_enc)`` is ``depth=D_enc`` with
            ``output_activation=True`` (multimodal_alignment scripts/align_configs/rus_prob.yaml).

    Shapes: ``(B, *in_shape) -> (B, out_dim)``.
    """

    def __init__(
        self,
        in_shape: ModalitySpec | Sequence[int] | int,
        out_dim: int,
        hidden: Sequence[int] = (10, 50, 50, 50, 50, 10),
        relative: bool = True,
        activation: str = "leaky_relu",
        negative_slope: float = 0.01,
        output_activation: bool = False,
        depth: int | None = None,
        width: int | None = None,
    ) -> None:
        super().__init__()
        if isinstance(in_shape, ModalitySpec):
            if in_shape.masked:
                raise ConfigError(
                    "encoder: an MLP takes a plain tensor; use a sequence encoder (e.g. transformer) "
                    "for a masked modality"
                )
            in_shape = in_shape.shape
        in_dim = int(math.prod(in_shape)) if not isinstance(in_shape, int) else in_shape
        if out_dim < 1:
            raise ConfigError(f"objective.encoding_size: must be >= 1, got {out_dim}")
        if depth is not None:
            if int(depth) < 1:
                raise ConfigError(f"encoder.depth: must be >= 1 linear layer, got {depth}")
            widths = [int(width or out_dim)] * (int(depth) - 1)
        else:
            widths = [int(round(h * in_dim)) if relative else int(h) for h in hidden]
        if any(w < 1 for w in widths):
            raise ConfigError(f"encoder.hidden: every width must be >= 1, got {widths}")
        self.in_dim, self.out_dim = in_dim, out_dim
        layers: dict[str, nn.Module] = {}
        dims = [in_dim, *widths, out_dim]
        n_linear = len(dims) - 1
        for l in range(1, n_linear + 1):
            layers[f"fc{l}"] = nn.Linear(dims[l - 1], dims[l])
            if l < n_linear or output_activation:
                layers[f"act{l}"] = make_activation(activation, negative_slope)
        self.net = nn.Sequential()
        for name, module in layers.items():
            self.net.add_module(name, module)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))

    def activation_layers(self) -> list[tuple[str, nn.Module]]:
        """The post-activation modules, input to output, for feature hooks."""
        return [(name, m) for name, m in self.net.named_children() if name.startswith("act")]
