"""Triton block scoring: one program per tile of blocks; the question side is pre-reduced.

With ``reduce="mean"`` the mean over question tokens commutes with the dot product, so the kernel
computes ``sum_{l, kvh} summary[b, l, kvh] . qbar[l, kvh]`` with ``qbar`` the per-KV-head sum of the
mean queries of its group: one pass over the summaries (``NB * L * Hkv * D`` values).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _score_kernel(S, QB, OUT, nb, LH, D: tl.constexpr, BB: tl.constexpr, BD: tl.constexpr):
    b = tl.program_id(0) * BB + tl.arange(0, BB)
    ok = b < nb
    acc = tl.zeros((BB,), tl.float32)
    for j in range(0, LH):
        for d0 in range(0, D, BD):
            d = d0 + tl.arange(0, BD)
            dm = d < D
            s = tl.load(S + b[:, None] * (LH * D) + j * D + d[None, :], mask=ok[:, None] & dm[None, :], other=0.0)
            qb = tl.load(QB + j * D + d, mask=dm, other=0.0)
            acc += tl.sum(s.to(tl.float32) * qb[None, :], axis=1)
    tl.store(OUT + b, acc, mask=ok)


def block_scores_triton(q: torch.Tensor, summary: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    num_layers, hq, lq, d = q.shape
    nb, _, hkv, _ = summary.shape
    qbar = q.float().mean(2).view(num_layers, hkv, hq // hkv, d).sum(2).contiguous()  # [L, Hkv, D]
    qbar = qbar / (num_layers * hq * d ** 0.5)
    s = summary.contiguous()
    if out is None:
        out = torch.empty(nb, device=q.device, dtype=torch.float32)
    bb = 32
    _score_kernel[(triton.cdiv(nb, bb),)](s, qbar, out, nb, num_layers * hkv, D=d, BB=bb, BD=min(128, triton.next_power_of_2(d)))
    return out
