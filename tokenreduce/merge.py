"""Bipartite soft matching and size-weighted merging (ToMe, Bolya et al., ICLR 2023).

Pure tensor math, kept apart from the reducer classes as ToMe keeps ``merge.py`` apart from its
model patches. Tokens are split alternately into sets A (even positions) and B (odd); every A token
finds its most similar B token (cosine); the ``r`` most similar pairs are merged, the A token
folding into its B partner by a size-weighted average so that ``sum(size * x)`` is preserved.
"""

from __future__ import annotations

import torch


def best_match(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row of ``a`` ``[Na, D]``: the best cosine similarity in ``b`` ``[Nb, D]`` and its index.

    Uses :mod:`vidqa.kernels.token_match` (tiled, no full matrix) when available.
    """
    try:
        from vidqa.kernels.token_match import best_match as kernel_best_match
    except ImportError:
        kernel_best_match = None
    if kernel_best_match is not None:
        return kernel_best_match(a, b)
    sim = torch.nn.functional.normalize(a.float(), dim=-1) @ torch.nn.functional.normalize(b.float(), dim=-1).T
    return sim.max(dim=-1)


def bipartite_merge(x: torch.Tensor, size: torch.Tensor, r: int):
    """Merges ``r`` tokens of ``x`` ``[N, D]`` (sizes ``[N]``) into others.

    Returns ``(kept_index [N - r], merged_x [N - r, D], merged_size [N - r])``: ``kept_index`` are
    the surviving tokens' original indices (sorted); their embeddings are size-weighted averages of
    themselves and what merged into them.
    """
    n = x.shape[0]
    a_idx, b_idx = torch.arange(0, n, 2), torch.arange(1, n, 2)
    r = min(r, a_idx.numel(), b_idx.numel())
    if r <= 0:
        return torch.arange(n), x, size
    scores, match = best_match(x[a_idx], x[b_idx])
    order = torch.argsort(scores, descending=True, stable=True)
    src = a_idx[order[:r]]
    dst = b_idx[match[order[:r]]]
    weighted = x.float() * size[:, None].float()
    total = size.clone().float()
    weighted.index_add_(0, dst, weighted[src])
    total.index_add_(0, dst, total[src])
    keep = torch.ones(n, dtype=torch.bool)
    keep[src] = False
    kept = keep.nonzero().flatten()
    merged = (weighted[kept] / total[kept, None]).to(x.dtype)
    return kept, merged, total[kept].to(size.dtype)
