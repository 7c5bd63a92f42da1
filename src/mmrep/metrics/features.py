"""Per-layer features of an encoder, for layer-wise alignment (multimodal_alignment scripts/get_alignment.py).

An encoder owns its readout when it defines ``layer_features(x) -> dict[name, (B, d)]`` (input to output; a
sequence encoder returns the CLS token or the masked mean per layer there). Otherwise every post-activation
module is hooked and its output flattened per sample — the fallback for plain MLPs.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from lightning_fabric.utilities.apply_func import move_data_to_device
from torch import nn

from mmrep.core.contract import ModalityInput

# Post-activation modules: any of these counts as a layer (the original matched names containing "relu",
# which silently found no layer in tanh encoders, scripts/get_alignment.py).
ACTIVATION_TYPES = (nn.ReLU, nn.LeakyReLU, nn.GELU, nn.Tanh, nn.ELU, nn.SiLU, nn.Sigmoid, nn.Softplus, nn.PReLU)


def feature_layers(encoder: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules whose outputs are the encoder's layer features, input to output (hook fallback).

    ``encoder.activation_layers()`` when the encoder defines it (our MLP), else every activation module."""
    if hasattr(encoder, "activation_layers"):
        return list(encoder.activation_layers())
    return [(name, m) for name, m in encoder.named_modules() if isinstance(m, ACTIVATION_TYPES)]


def _hooked_features(encoder: nn.Module, x: ModalityInput) -> tuple[list[str], list[torch.Tensor], torch.Tensor]:
    layers = feature_layers(encoder)
    collected: list[torch.Tensor | None] = [None] * len(layers)

    def keep(slot):
        def hook(_module, _inputs, out):
            collected[slot] = out.detach().flatten(1)

        return hook

    handles = [module.register_forward_hook(keep(slot)) for slot, (_, module) in enumerate(layers)]
    try:
        out = encoder(x)
    finally:
        for handle in handles:
            handle.remove()
    return [name for name, _ in layers], collected, out


@torch.no_grad()
def layer_features(
    encoder: nn.Module, batches: Iterable[ModalityInput], include_output: bool = False
) -> tuple[list[str], list[torch.Tensor]]:
    """Run ``encoder`` over ``batches`` (each a modality input: a (B, ...) tensor or a dict such as
    ``{"x", "mask"}``) in eval mode and keep every layer's features.

    Returns ``(names, features)`` with ``features[l]`` of shape (N, d_l), on the encoder's device.
    ``include_output`` appends the encoder's final output as layer ``"output"``. The training mode is restored
    and hooks are removed afterwards."""
    device = next(encoder.parameters()).device
    was_training = encoder.training
    encoder.eval()
    names: list[str] = []
    parts: list[list[torch.Tensor]] = []
    try:
        for x in batches:
            x = move_data_to_device(x, device)
            if hasattr(encoder, "layer_features"):
                layers = encoder.layer_features(x)
                names, feats = list(layers), [h.detach().flatten(1) for h in layers.values()]
                out = encoder(x) if include_output else None
            else:
                names, feats, out = _hooked_features(encoder, x)
            if include_output:
                names, feats = [*names, "output"], [*feats, out.detach().flatten(1)]
            if not names:
                raise ValueError(
                    f"encoder {type(encoder).__name__} has no layers to read (no layer_features(), no activation "
                    "modules); use include_output=True"
                )
            if not parts:
                parts = [[] for _ in names]
            for slot, h in enumerate(feats):
                parts[slot].append(h)
    finally:
        encoder.train(was_training)
    return names, [torch.cat(p) for p in parts]
