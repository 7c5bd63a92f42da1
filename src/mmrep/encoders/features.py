"""Per-layer features of an encoder through forward hooks (for layer-wise alignment, spec rus-alignment §4.1)."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

# Post-activation modules: any of these counts as a layer (the original matched names containing "relu",
# which silently found no layer in tanh encoders, spec §4.1).
ACTIVATION_TYPES = (nn.ReLU, nn.LeakyReLU, nn.GELU, nn.Tanh, nn.ELU, nn.SiLU, nn.Sigmoid, nn.Softplus, nn.PReLU)


def feature_layers(encoder: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules whose outputs are the encoder's layer features, input to output.

    ``encoder.activation_layers()`` when the encoder defines it (our MLP), else every activation module."""
    if hasattr(encoder, "activation_layers"):
        return list(encoder.activation_layers())
    return [(name, m) for name, m in encoder.named_modules() if isinstance(m, ACTIVATION_TYPES)]


@torch.no_grad()
def layer_features(
    encoder: nn.Module, batches: Iterable[torch.Tensor], include_output: bool = False
) -> tuple[list[str], list[torch.Tensor]]:
    """Run ``encoder`` over ``batches`` (each (B, ...)) in eval mode and keep every layer's output.

    Returns ``(names, features)`` with ``features[l]`` of shape (N, d_l) (outputs flattened per sample), on the
    encoder's device. ``include_output`` appends the encoder's final output as layer ``"output"``. Hooks are
    removed and the training mode restored afterwards."""
    layers = feature_layers(encoder)
    if not layers and not include_output:
        raise ValueError(
            f"encoder {type(encoder).__name__} has no activation layers to hook; use include_output=True"
        )
    names = [name for name, _ in layers] + (["output"] if include_output else [])
    collected: list[list[torch.Tensor]] = [[] for _ in names]
    handles = [
        module.register_forward_hook(lambda _m, _i, out, slot=slot: collected[slot].append(out.detach().flatten(1)))
        for slot, (_, module) in enumerate(layers)
    ]
    device = next(encoder.parameters()).device
    was_training = encoder.training
    encoder.eval()
    try:
        for x in batches:
            out = encoder(x.to(device))
            if include_output:
                collected[-1].append(out.detach().flatten(1))
    finally:
        for handle in handles:
            handle.remove()
        encoder.train(was_training)
    return names, [torch.cat(parts) for parts in collected]
