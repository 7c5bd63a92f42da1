"""Nearest-neighbour lists computed in row blocks, and the rank-based metrics built on them (spec §4.3).

No function here materialises an N×N matrix: the similarity matrix is visited in blocks of rows, so the extra
memory is O(N·k) plus one (block, N) slab (about 256 MB by default).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

_BLOCK_ELEMENTS = 1 << 26  # similarity-slab size: 64M entries = 256 MB in float32


class Neighbors(NamedTuple):
    """The k nearest neighbours of every row under the inner product, self excluded.

    indices: (N, k) int64, by descending similarity. values: (N, k) the similarities ``a_i · a_j``.
    """

    indices: torch.Tensor
    values: torch.Tensor


def block_rows(n: int, width: int, block_size: int | None = None) -> int:
    """Rows per block so that a (rows, width) slab holds about ``_BLOCK_ELEMENTS`` entries."""
    return max(1, min(n, block_size or _BLOCK_ELEMENTS // max(1, width)))


def knn(H: torch.Tensor, k: int, block_size: int | None = None) -> Neighbors:
    """kNN lists of the rows of ``H`` (N, d): per row, the ``k`` other rows with the largest ``h_i · h_j``.

    Same lists as sorting the full Gram matrix with its diagonal masked (the original code), in blocks."""
    n = H.shape[0]
    rows = block_rows(n, n, block_size)
    indices = torch.empty(n, k, dtype=torch.long, device=H.device)
    values = torch.empty(n, k, dtype=H.dtype, device=H.device)
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        sims = H[start:stop] @ H.T  # (b, N)
        local = torch.arange(stop - start, device=H.device)
        sims[local, local + start] = float("-inf")
        values[start:stop], indices[start:stop] = sims.topk(k, dim=1)
    return Neighbors(indices, values)


def match_neighbors(a: Neighbors, b: Neighbors) -> tuple[torch.Tensor, torch.Tensor]:
    """Which of ``a``'s neighbours are also ``b``'s, per row.

    Returns ``hit`` (N, k) bool — ``a.indices[i, m]`` is in row i of ``b`` — and ``b_values`` (N, k): ``b``'s
    similarity for that neighbour where ``hit`` (undefined elsewhere). O(N·k·log k), no N×N."""
    b_sorted, order = b.indices.sort(dim=1)
    position = torch.searchsorted(b_sorted, a.indices).clamp_(max=b_sorted.shape[1] - 1)
    hit = b_sorted.gather(1, position) == a.indices
    b_values = b.values.gather(1, order).gather(1, position)
    return hit, b_values


def mutual_knn_score(a: Neighbors, b: Neighbors) -> float:
    """``(1/N) Σ_i |kNN_A(i) ∩ kNN_B(i)| / k``."""
    hit, _ = match_neighbors(a, b)
    return hit.double().mean().item()


def cycle_knn_score(a: Neighbors, b: Neighbors, block_size: int | None = None) -> float:
    """``(1/N) Σ_i 1[i ∈ ∪_{j ∈ kNN_B(i)} kNN_A(j)]``: going to B's neighbours and back through A returns to i."""
    n, k = b.indices.shape
    rows = block_rows(n, k * k, block_size and max(1, block_size // k))
    returned = 0
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        two_hop = a.indices[b.indices[start:stop]]  # (b, k, k)
        me = torch.arange(start, stop, device=two_hop.device).view(-1, 1, 1)
        returned += (two_hop == me).flatten(1).any(dim=1).sum().item()
    return returned / n


def lcs_lengths(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Longest-common-subsequence length of each row pair of ``x`` (N, k1) and ``y`` (N, k2); (N,) int.

    Row-vectorised dynamic programme: with ``c_j = max(D[i-1, j], D[i-1, j-1] + [x_i = y_j])`` the row
    recurrence ``D[i, j] = max(c_j, D[i, j-1])`` is a running maximum, so each DP row is one ``cummax``."""
    n, k2 = y.shape
    prev = torch.zeros(n, k2 + 1, dtype=torch.int32, device=x.device)
    zero = prev[:, :1]
    for i in range(x.shape[1]):
        match = (x[:, i : i + 1] == y).to(torch.int32)
        candidate = torch.maximum(prev[:, 1:], prev[:, :-1] + match)
        prev = torch.cat([zero, candidate], dim=1).cummax(dim=1).values
    return prev[:, -1]


def levenshtein_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Levenshtein (insert/delete/substitute, unit costs) distance of each row pair; (N,) int.

    With ``c_j = min(D[i-1, j] + 1, D[i-1, j-1] + [x_i ≠ y_j])`` the row recurrence
    ``D[i, j] = min(c_j, D[i, j-1] + 1)`` unrolls to ``j + cummin_j'(c_j' - j')``."""
    n, k2 = y.shape
    cols = torch.arange(k2 + 1, dtype=torch.int32, device=x.device)
    prev = cols.expand(n, -1)
    for i in range(x.shape[1]):
        substitute = (x[:, i : i + 1] != y).to(torch.int32)
        candidate = torch.minimum(prev[:, 1:] + 1, prev[:, :-1] + substitute)
        first = torch.full((n, 1), i + 1, dtype=torch.int32, device=x.device)
        prev = (torch.cat([first, candidate], dim=1) - cols).cummin(dim=1).values + cols
    return prev[:, -1]


def lcs_knn_score(a: Neighbors, b: Neighbors) -> float:
    """``(1/N) Σ_i LCS(kNN_A(i), kNN_B(i))`` of the ordered lists — in [0, k], not divided by k (spec §4.3)."""
    return lcs_lengths(a.indices, b.indices).double().mean().item()


def edit_distance_knn_score(a: Neighbors, b: Neighbors) -> float:
    """``1 − (1/N) Σ_i Lev(kNN_A(i), kNN_B(i)) / k``."""
    k = a.indices.shape[1]
    return 1.0 - levenshtein_distances(a.indices, b.indices).double().mean().item() / k
