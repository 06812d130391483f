"""Reference block scoring for retrieval (InfLLM representative keys, ReKV mean keys).

``q [L, Hq, Lq, D]`` question queries per layer, ``summary [NB, L, Hkv, D]`` per-block summary keys:

    score[b] = 1 / (L * Hq * sqrt(D)) * sum_l sum_h mean_i q[l, h, i] . summary[b, l, h // g]

(``g = Hq / Hkv``), i.e. the mean over layers, query heads and question tokens of the scaled dot
product. ``reduce="max"`` takes the maximum over question tokens instead of the mean.
"""

from __future__ import annotations

import torch


def block_scores_naive(q: torch.Tensor, summary: torch.Tensor, reduce: str = "mean") -> torch.Tensor:
    num_layers, hq, lq, d = q.shape
    hkv = summary.shape[2]
    qg = q.float().view(num_layers, hkv, hq // hkv, lq, d)
    dots = torch.einsum("lkgid,blkd->blkgi", qg, summary.float())  # [NB, L, Hkv, g, Lq]
    per = dots.amax(-1) if reduce == "max" else dots.mean(-1)
    return per.sum(dim=(1, 2, 3)) / (num_layers * hq * d ** 0.5)
