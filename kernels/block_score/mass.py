"""Attention mass of representative keys: how much of the question's attention each would draw.

``q [L, Hq, Lq, D]`` question queries per layer, ``keys [R, L, Hkv, D]`` representative keys (one per
layer and KV head for each of ``R`` items), ``log_weight [R]`` the log of how many KV entries each
stands for:

    mass[r] = 1 / (L * Hq * Lq) * sum_{l, h, i} softmax_r( q[l, h, i] . keys[r, l, h // g] / sqrt(D)
                                                          + log_weight[r] )

(``g = Hq / Hkv``). Each query distributes one unit of attention over all representatives of the
video, as it would over the entries themselves; a representative of ``n`` entries counts ``n`` times
(proportional attention, ToMe, Bolya et al. 2023). Summed per block, this is the share of the
question's attention the block would receive in a full-context forward, which is what the question
needs from it (SnapKV, Li et al. 2024, selects entries by the same quantity within one context).
Unlike a mean of dot products it is dominated by the layers and heads that attend sharply -- a
look-up head that finds the needle -- rather than averaged with the ones that do not.

Torch, one layer at a time (``Hq * Lq * R`` logits at once): on a GPU these are a batched matmul and a
softmax, already one library kernel each.
"""

from __future__ import annotations

import torch


def attention_mass(q: torch.Tensor, keys: torch.Tensor, log_weight: torch.Tensor | None = None) -> torch.Tensor:
    """float32 ``[R]`` on ``q``'s device, summing to 1 over ``R`` (see module docstring)."""
    num_layers, hq, lq, d = q.shape
    r, _, hkv, _ = keys.shape
    mass = torch.zeros(r, device=q.device, dtype=torch.float32)
    if r == 0:
        return mass
    keys = keys.to(q.device, torch.float32)
    bias = None if log_weight is None else log_weight.to(q.device, torch.float32)
    for l in range(num_layers):
        ql = q[l].float().view(hkv, hq // hkv, lq, d)
        logits = torch.einsum("kgid,rkd->kgir", ql, keys[:, l]) / d ** 0.5  # [Hkv, g, Lq, R]
        if bias is not None:
            logits = logits + bias
        mass += logits.softmax(dim=-1).sum(dim=(0, 1, 2))
    return mass / (num_layers * hq * lq)
