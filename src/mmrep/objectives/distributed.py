"""Contrastive losses over the global batch under DDP.

Each rank encodes its shard; :func:`gather_rows` concatenates every rank's embeddings in rank order, keeping
autograd through this rank's own rows (the others arrive detached). Every rank then computes the same loss ``L`` on
the whole global batch, exactly as one process would on the concatenated batch. The gradient reaching this rank's
encoders is ``∂L/∂h_rank`` only; DDP averages the ranks' gradients, so the loss handed to ``backward`` is scaled by
the world size (:func:`world_size`): ``mean_r W·∂L/∂h_r·∂h_r/∂θ = ∂L/∂θ``, the one-process gradient. This is the
CLIP-style gather (Radford et al. 2021, arXiv:2103.00020, Fig. 3's ``np.dot`` over the global batch) without a
backward collective, so it runs on any backend (gloo, NCCL) and device.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.distributed as dist


def world_size() -> int:
    """Ranks in the default process group (1 outside DDP)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_rows(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Each (n_rank, …) tensor concatenated over the ranks in rank order: (Σ n_r, …); outside DDP the inputs.

    Shards may differ in length (a remainder batch, an empty shard): the lengths travel first, then every tensor,
    padded to its longest shard, in one flat buffer (two collectives in all, whatever the number of tensors)."""
    world = world_size()
    if world == 1 or not tensors:
        return tensors
    rank = dist.get_rank()
    device = tensors[0].device
    dtype = functools.reduce(torch.promote_types, [t.dtype for t in tensors])
    local = torch.tensor([t.shape[0] for t in tensors], device=device)
    sizes = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(sizes, local)
    sizes_by_rank = torch.stack(sizes).tolist()  # [rank][tensor]
    longest = [max(column) for column in zip(*sizes_by_rank)]
    widths = [math.prod(t.shape[1:]) for t in tensors]
    flat = torch.cat(
        [
            _padded(t.detach().to(dtype).reshape(t.shape[0], w), m).reshape(-1)
            for t, w, m in zip(tensors, widths, longest)
        ]
    )
    buffers = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(buffers, flat)
    out = []
    offset = 0
    for i, (t, w, m) in enumerate(zip(tensors, widths, longest)):
        blocks = [
            t
            if r == rank
            else buffers[r][offset : offset + m * w].reshape(m, *t.shape[1:])[: sizes_by_rank[r][i]].to(t.dtype)
            for r in range(world)
        ]
        out.append(torch.cat(blocks))
        offset += m * w
    return tuple(out)


def _padded(x: torch.Tensor, rows: int) -> torch.Tensor:
    """``x`` (n, w) with zero rows appended up to ``rows``."""
    return x if x.shape[0] == rows else torch.cat([x, x.new_zeros(rows - x.shape[0], x.shape[1])])


class _ScaleGrad(torch.autograd.Function):
    """Identity in the forward pass; the gradient times ``factor`` in the backward pass."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, factor: float) -> torch.Tensor:
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.factor, None


def scale_grad(x: torch.Tensor, factor: float) -> torch.Tensor:
    """``x`` unchanged, its gradient multiplied by ``factor`` (a parameter used on the gathered global batch: every
    rank computes its full gradient, so the world-size scaling of the loss must be undone for it)."""
    return x if factor == 1 else _ScaleGrad.apply(x, float(factor))
