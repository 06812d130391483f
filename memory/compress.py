"""Question-aware multimodal KV compression (LOOK-M, Wan et al. 2024; scores as SnapKV, Li et al. 2024).

For each layer, the last ``observation_window`` question queries attend over the retrieved KV;
the attention each visual entry receives (softmax over all entries, averaged over the window and
the query heads of its KV group, then over KV heads) is its importance. Text entries (timestamps,
markers, the prompt) are always kept: LOOK-M's text-prior. The lowest-scoring visual entries are
evicted and *merged* into their most similar kept visual entry (cosine similarity of keys),
averaging keys and values, LOOK-M's "averaged merging", so evicted content is not simply lost.

The same number of entries is kept in every layer (different entries per layer), so the cache
stays uniform and the stock attention kernels apply. Scores are computed from queries and keys
directly -- no attention weights are materialised by the model.
"""

from __future__ import annotations

import math

import torch


def importance(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Attention mass ``[n]`` that ``queries`` ``[Hq, w, Dh]`` give to ``keys`` ``[Hkv, n, Dh]``."""
    hq, _, dh = queries.shape
    hkv = keys.shape[0]
    q = queries.float().view(hkv, hq // hkv, -1, dh)
    logits = torch.einsum("kgwd,knd->kgwn", q, keys.float()) / math.sqrt(dh)
    return logits.softmax(dim=-1).mean(dim=(0, 1, 2))


def compress_layer(keys: torch.Tensor, values: torch.Tensor, visual: torch.Tensor,
                   queries: torch.Tensor, keep_visual: int, merge: bool = True):
    """Keeps ``keep_visual`` visual entries of one layer (all text entries), merging the rest.

    ``keys``/``values`` ``[Hkv, n, Dh]``; ``visual`` bool ``[n]``; ``queries`` ``[Hq, w, Dh]``.
    Returns ``(keys, values, kept_index)`` with the kept entries in their original order.
    """
    vis_idx = visual.nonzero().flatten()
    if keep_visual >= vis_idx.numel():
        return keys, values, torch.arange(keys.shape[1], device=keys.device)
    score = importance(queries, keys)[vis_idx]
    order = torch.argsort(score, descending=True, stable=True)
    kept_vis, evicted = vis_idx[order[:keep_visual]], vis_idx[order[keep_visual:]]
    keys, values = keys.clone(), values.clone()
    if merge and kept_vis.numel() and evicted.numel():
        flat_k = keys.transpose(0, 1).reshape(keys.shape[1], -1).float()  # [n, Hkv*Dh]
        sim = torch.nn.functional.normalize(flat_k[evicted], dim=-1) @ \
            torch.nn.functional.normalize(flat_k[kept_vis], dim=-1).T
        target = kept_vis[sim.argmax(dim=-1)]  # [E] kept entry each evicted one merges into
        counts = torch.ones(keys.shape[1], device=keys.device).index_add_(
            0, target, torch.ones_like(target, dtype=torch.float))
        for tensor in (keys, values):
            acc = tensor.float().index_add(1, target, tensor[:, evicted].float())
            tensor.copy_((acc / counts.view(1, -1, 1)).to(tensor.dtype))
    keep = torch.sort(torch.cat([(~visual).nonzero().flatten(), kept_vis])).values
    return keys[:, keep], values[:, keep], keep
