"""Contrastive losses as pure functions of embedding batches.

The numeric spec's "LpSimCLR" (``numeric-misalignment.md`` §1.7) for anchors ``a``, positives ``b`` and
negatives ``c`` (each (N, d)) is

    L = mean_i [ -sim(a_i, b_i)/τ + log( 1/(N+1) · (Σ_j exp(sim(a_i, c_j)/τ) + exp(sim(a_i, b_i)/τ)) ) ]

with ``sim(u, v) = -||u - v||²`` and τ = 1. The original materialised an (N, N, d) tensor of differences; here the
(N, N) similarity matrix comes from one matrix product, so memory is O(N² + N·d).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SIMILARITIES = ("sq_euclidean", "euclidean", "cosine", "dot")


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
        negatives: (M, d) embeddings of independent samples (the spec's fresh same-modality batch); the
            positive is added as an extra candidate, so each row has M + 1 candidates. ``None`` uses the other
            items of ``positive`` as negatives (CLIP-style in-batch; N candidates, the positive among them).
        similarity: one of ``SIMILARITIES``; temperature: τ > 0.
    """
    pos = rowwise_similarity(anchor, positive, similarity) / temperature  # (N,)
    if negatives is None:
        logits = pairwise_similarity(anchor, positive, similarity) / temperature  # (N, N), positive on diagonal
        n_candidates = logits.shape[1]
        lse = torch.logsumexp(logits, dim=1)
    else:
        logits = pairwise_similarity(anchor, negatives, similarity) / temperature  # (N, M)
        n_candidates = logits.shape[1] + 1
        lse = torch.logaddexp(torch.logsumexp(logits, dim=1), pos)
    return (lse - math.log(n_candidates) - pos).mean()


def symmetric_info_nce(
    h_a: torch.Tensor,
    h_b: torch.Tensor,
    neg_a: torch.Tensor | None = None,
    neg_b: torch.Tensor | None = None,
    **kwargs,
) -> torch.Tensor:
    """½ [L(a→b, negatives of a) + L(b→a, negatives of b)] (spec §1.7: negatives share the anchor's modality)."""
    return 0.5 * (info_nce(h_a, h_b, neg_a, **kwargs) + info_nce(h_b, h_a, neg_b, **kwargs))


def ensure_finite(loss: torch.Tensor, step: int, hint: str) -> None:
    """Stop training on a NaN/inf loss with ``non-finite training loss (…) at step N; <hint>``."""
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite training loss ({loss.item()}) at step {step}; {hint}")


def nt_xent(h_a: torch.Tensor, h_b: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """NT-Xent (SimCLR) over the 2N embeddings of N pairs, a scalar (spec numeric-misalignment §3.2).

    ``sim = cos(·,·)/τ``; rows are the 2N items, candidates every other item: ``[[S_ab, S_aa], [S_bb, S_abᵀ]]`` with
    the diagonals of ``S_aa`` and ``S_bb`` masked out, item i's positive is its partner; mean cross-entropy.
    The original averaged ``loss(a, b)`` and ``loss(b, a)``, which are the same rows in another order."""
    a, b = F.normalize(h_a, dim=1), F.normalize(h_b, dim=1)
    n = a.shape[0]
    self_mask = torch.eye(n, dtype=torch.bool, device=a.device)
    s_ab = a @ b.T / temperature
    s_aa = (a @ a.T / temperature).masked_fill(self_mask, float("-inf"))
    s_bb = (b @ b.T / temperature).masked_fill(self_mask, float("-inf"))
    logits = torch.cat([torch.cat([s_ab, s_aa], dim=1), torch.cat([s_bb, s_ab.T], dim=1)], dim=0)
    targets = torch.arange(2 * n, device=a.device)
    return F.cross_entropy(logits, targets)
