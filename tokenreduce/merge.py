"""Bipartite soft matching and size-weighted merging (ToMe, Bolya et al., ICLR 2023).

Pure tensor math, kept apart from the reducer class as ToMe keeps ``merge.py`` apart from its model
patches. Tokens ``x [N, D]`` are split into sets A and B (alternately by default: even positions are
A); every A token finds its most similar B token (cosine); the ``r`` A tokens with the best matches
fold into their B partners by a size-weighted average, so ``sum(size * x)`` and ``sum(size)`` are
preserved.
"""

from __future__ import annotations

from functools import lru_cache

import torch


@lru_cache(maxsize=1)
def _kernel():
    """The tiled kernel of :mod:`vidqa.kernels.token_match` when that package is there."""
    try:
        from vidqa.kernels.token_match import best_match as kernel_best_match
    except ImportError:
        return None
    return kernel_best_match


def best_match(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row of ``a [Na, D]``: ``(best cosine in b [Nb, D] [Na], its index [Na])``."""
    kernel = _kernel()
    if kernel is not None:
        return kernel(a, b)
    sim = torch.nn.functional.normalize(a.float(), dim=-1) @ torch.nn.functional.normalize(b.float(), dim=-1).T
    return sim.max(dim=-1)


def bipartite_merge(x: torch.Tensor, size: torch.Tensor, r: int, a_mask: torch.Tensor | None = None):
    """Merges ``min(r, |A|)`` tokens of ``x [N, D]`` (sizes ``[N]``) into others.

    ``a_mask`` (bool ``[N]``) says which tokens form A, the ones that may fold (default: even positions).

    Returns ``(kept [N - r] int64, merged_x [N - r, D], merged_size [N - r])``: ``kept`` holds the
    survivors' indices into ``x`` in increasing order; ``merged_x`` their size-weighted means with what
    folded into them (rows nothing folded into are returned unchanged), in ``x``'s dtype.
    """
    n = x.shape[0]
    if a_mask is None:
        a_mask = torch.arange(n, device=x.device) % 2 == 0
    a_mask = a_mask.to(x.device)
    a_idx, b_idx = a_mask.nonzero().flatten(), (~a_mask).nonzero().flatten()
    r = min(int(r), a_idx.numel()) if b_idx.numel() else 0
    if r <= 0:
        return torch.arange(n, device=x.device), x, size
    scores, match = best_match(x[a_idx], x[b_idx])
    order = torch.argsort(scores, descending=True, stable=True)[:r]
    src, dst = a_idx[order], b_idx[match[order]]
    w = size.to(x.device).float()
    mass = x.float() * w[:, None]
    total = w.clone()
    mass.index_add_(0, dst, mass[src])
    total.index_add_(0, dst, w[src])
    keep = torch.ones(n, dtype=torch.bool, device=x.device)
    keep[src] = False
    kept = keep.nonzero().flatten()
    touched = torch.zeros(n, dtype=torch.bool, device=x.device)
    touched[dst] = True
    merged = torch.where(touched[:, None], (mass / total[:, None]).to(x.dtype), x)
    return kept, merged[kept], total[kept].to(size.dtype)
