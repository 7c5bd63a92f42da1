"""Contrastive losses as pure functions of embedding batches.

The numeric experiment's "LpSimCLR" (crossmodal_mislaignment utils/losses.py) for anchors ``a``, positives ``b`` and
negatives ``c`` (each (N, d)) is

    L = mean_i [ -sim(a_i, b_i)/τ + log( 1/(N+1) · (Σ_j exp(sim(a_i, c_j)/τ) + exp(sim(a_i, b_i)/τ)) ) ]

with ``sim(u, v) = -||u - v||²`` and τ = 1. The original materialised an (N, N, d) tensor of differences. Here the
row log-sum-exps come from :func:`row_logsumexp`, a fused autograd function that never stores an N×N matrix: row
chunks of logits from one GEMM into a reused buffer, only the per-row log-sum-exp kept, blocks recomputed in the
backward pass (O(chunk·N) memory). Squared distances use ``||u||² + ||v||² − 2u·v``, so the inputs are centred first
(the loss is translation invariant): with a large shared offset the expanded form would lose digits.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SIMILARITIES = ("sq_euclidean", "euclidean", "cosine", "dot")
CHUNK_ELEMENTS = 1 << 22  # logits per chunk buffer (16 MiB in float32)


class _RowLogSumExp(torch.autograd.Function):
    """``lse_i = log Σ_j exp(scale · u_i·v_j + w_j)`` (j ≠ i when ``exclude_self``), chunked over rows of ``u``."""

    @staticmethod
    def _block(u_c, v, w, scale, start, exclude_self, buf):
        torch.mm(u_c, v.T, out=buf)
        buf.mul_(scale)
        if w is not None:
            buf.add_(w)
        if exclude_self:
            rows = torch.arange(buf.shape[0], device=buf.device)
            buf[rows, rows + start] = float("-inf")
        return buf

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)  # under bf16 autocast: float32 sums
    def forward(ctx, u, v, w, scale, exclude_self, chunk):
        n = u.shape[0]
        lse = torch.empty(n, dtype=u.dtype, device=u.device)
        buffer = torch.empty(min(chunk, n), v.shape[0], dtype=u.dtype, device=u.device)
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            block = _RowLogSumExp._block(u[start:stop], v, w, scale, start, exclude_self, buffer[: stop - start])
            peak = block.amax(1, keepdim=True)
            lse[start:stop] = peak.squeeze(1) + block.sub_(peak).exp_().sum(1).log_()
        ctx.save_for_backward(u, v, w, lse)
        ctx.scale, ctx.exclude_self, ctx.chunk = scale, exclude_self, chunk
        return lse

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad_lse):
        u, v, w, lse = ctx.saved_tensors
        scale, chunk = ctx.scale, ctx.chunk
        grad_u = torch.empty_like(u) if ctx.needs_input_grad[0] else None
        grad_v = torch.zeros_like(v) if ctx.needs_input_grad[1] else None
        grad_w = torch.zeros_like(w) if w is not None and ctx.needs_input_grad[2] else None
        buffer = torch.empty(min(chunk, u.shape[0]), v.shape[0], dtype=u.dtype, device=u.device)
        for start in range(0, u.shape[0], chunk):
            stop = min(u.shape[0], start + chunk)
            u_c = u[start:stop]
            block = _RowLogSumExp._block(u_c, v, w, scale, start, ctx.exclude_self, buffer[: stop - start])
            block.sub_(lse[start:stop, None]).exp_().mul_(grad_lse[start:stop, None])  # softmax × upstream grad
            if grad_u is not None:
                torch.mm(block, v, out=grad_u[start:stop])
                grad_u[start:stop].mul_(scale)
            if grad_v is not None:
                grad_v.addmm_(block.T, u_c, alpha=scale)
            if grad_w is not None:
                grad_w.add_(block.sum(0))
        return grad_u, grad_v, grad_w, None, None, None


def row_logsumexp(
    u: torch.Tensor,
    v: torch.Tensor,
    w: torch.Tensor | None = None,
    scale: float = 1.0,
    exclude_self: bool = False,
    chunk: int | None = None,
) -> torch.Tensor:
    """(N,) ``log Σ_j exp(scale · u_i·v_j + w_j)`` for u (N, d), v (M, d), w (M,) or None; ``exclude_self`` leaves
    out j = i (u and v the same items). Differentiable in u, v, w; never holds more than ``chunk`` × M logits."""
    chunk = chunk or max(1, min(u.shape[0], CHUNK_ELEMENTS // max(1, v.shape[0])))
    return _RowLogSumExp.apply(u, v, w, float(scale), bool(exclude_self), int(chunk))


def _candidate_lse(anchor, candidates, similarity: str, temperature: float) -> torch.Tensor:
    """(N,) log Σ_j exp(sim(anchor_i, candidates_j)/τ) without an N×M matrix (sq_euclidean, cosine, dot)."""
    if similarity == "cosine":
        return row_logsumexp(F.normalize(anchor, dim=1), F.normalize(candidates, dim=1), scale=1.0 / temperature)
    if similarity == "dot":
        return row_logsumexp(anchor, candidates, scale=1.0 / temperature)
    # −||u − v||² = 2u·v − ||v||² − ||u||², the last term constant per row
    w = -candidates.square().sum(1) / temperature
    return row_logsumexp(anchor, candidates, w, scale=2.0 / temperature) - anchor.square().sum(1) / temperature


def pairwise_similarity(u: torch.Tensor, v: torch.Tensor, similarity: str = "sq_euclidean") -> torch.Tensor:
    """(N, d) × (M, d) → (N, M) similarities, without an (N, M, d) intermediate."""
    if similarity in ("sq_euclidean", "euclidean"):
        sq = (u.square().sum(1, keepdim=True) + v.square().sum(1).unsqueeze(0) - 2.0 * (u @ v.T)).clamp_min(0.0)
        return -sq if similarity == "sq_euclidean" else -(sq + 1e-12).sqrt()
    if similarity == "cosine":
        return F.normalize(u, dim=1) @ F.normalize(v, dim=1).T
    if similarity == "dot":
        return u @ v.T
    raise ValueError(f"objective.similarity: unknown similarity {similarity!r}; choose from {SIMILARITIES}")


def rowwise_similarity(u: torch.Tensor, v: torch.Tensor, similarity: str = "sq_euclidean") -> torch.Tensor:
    """(N, d) × (N, d) → (N,) similarities of matching rows (computed directly, no cancellation)."""
    if similarity == "sq_euclidean":
        return -(u - v).square().sum(1)
    if similarity == "euclidean":
        return -((u - v).square().sum(1) + 1e-12).sqrt()
    if similarity == "cosine":
        return F.cosine_similarity(u, v, dim=1)
    if similarity == "dot":
        return (u * v).sum(1)
    raise ValueError(f"objective.similarity: unknown similarity {similarity!r}; choose from {SIMILARITIES}")


def info_nce(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negatives: torch.Tensor | None = None,
    *,
    similarity: str = "sq_euclidean",
    temperature: float = 1.0,
) -> torch.Tensor:
    """InfoNCE with log-mean-exp normalisation, a scalar.

    Args:
        anchor, positive: (N, d) paired embeddings.
        negatives: (M, d) embeddings of independent samples (main_numeric.py's fresh same-modality batch); the
            positive is added as an extra candidate, so each row has M + 1 candidates. ``None`` uses the other
            items of ``positive`` as negatives (CLIP-style in-batch; N candidates, the positive among them).
        similarity: one of ``SIMILARITIES``; temperature: τ > 0.
    """
    pos = rowwise_similarity(anchor, positive, similarity) / temperature  # (N,), computed directly
    candidates = positive if negatives is None else negatives  # in-batch: the positive is on the diagonal
    if similarity == "euclidean":  # not a dot product: the (N, M) matrix route
        lse = torch.logsumexp(pairwise_similarity(anchor, candidates, similarity) / temperature, dim=1)
    else:
        if similarity == "sq_euclidean":  # translation invariant: centre so the expanded form keeps its digits
            centre = torch.cat([anchor, candidates]).mean(0).detach()
            anchor, candidates = anchor - centre, candidates - centre
        lse = _candidate_lse(anchor, candidates, similarity, temperature)
    n_candidates = candidates.shape[0] + (negatives is not None)
    if negatives is not None:
        lse = torch.logaddexp(lse, pos)
    return (lse - math.log(n_candidates) - pos).mean()


def symmetric_info_nce(
    h_a: torch.Tensor,
    h_b: torch.Tensor,
    neg_a: torch.Tensor | None = None,
    neg_b: torch.Tensor | None = None,
    **kwargs,
) -> torch.Tensor:
    """½ [L(a→b, negatives of a) + L(b→a, negatives of b)] (utils/losses.py: negatives share the anchor's modality)."""
    return 0.5 * (info_nce(h_a, h_b, neg_a, **kwargs) + info_nce(h_b, h_a, neg_b, **kwargs))


def nonfinite_inputs(batch, prefix: str = "") -> list[str]:
    """The keys of ``batch`` (nested dicts of tensors) whose floating tensors hold NaN or ±inf, dotted
    (``vision.x``)."""
    found = []
    for key, value in (batch or {}).items():
        if isinstance(value, dict):
            found += nonfinite_inputs(value, f"{prefix}{key}.")
        elif isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all():
            found.append(f"{prefix}{key}")
    return found


def ensure_finite(loss: torch.Tensor, step: int, hint: str, batch=None) -> None:
    """Stop training on a NaN/inf loss with ``non-finite training loss (…) at step N; <hint>`` — or, when the
    batch's inputs are not finite themselves, a message that names them and blames the data, not the optimiser."""
    if torch.isfinite(loss):
        return
    bad = nonfinite_inputs(batch)
    if bad:
        inputs = f"input {bad[0]} holds" if len(bad) == 1 else f"inputs {', '.join(bad)} hold"
        hint = (
            f"the batch's {inputs} NaN/inf values: the data are damaged (the loss and the optimiser are not the "
            "cause); check the dataset's files"
        )
    raise FloatingPointError(f"non-finite training loss ({loss.item()}) at step {step}; {hint}")


def nt_xent(h_a: torch.Tensor, h_b: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """NT-Xent (SimCLR) over the 2N embeddings of N pairs, a scalar (crossmodal_mislaignment main_mpi3dreal.py).

    ``sim = cos(·,·)/τ``; rows are the 2N items, candidates every other item: ``[[S_ab, S_aa], [S_bb, S_abᵀ]]`` with
    the diagonals of ``S_aa`` and ``S_bb`` masked out, item i's positive is its partner; mean cross-entropy.
    The original averaged ``loss(a, b)`` and ``loss(b, a)``, which are the same rows in another order."""
    z = F.normalize(torch.cat([h_a, h_b]), dim=1)  # the 2N items; item i's partner is i ± N
    lse = row_logsumexp(z, z, scale=1.0 / temperature, exclude_self=True)  # fused, no 2N×2N matrix
    n = h_a.shape[0]
    partner = (z[:n] * z[n:]).sum(1).repeat(2) / temperature  # cos(a_i, b_i), from the same normalised rows
    return (lse - partner).mean()
