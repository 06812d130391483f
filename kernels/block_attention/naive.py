"""Reference attention of question queries over KV blocks picked from a block store.

Shapes: ``q [Hq, Lq, D]``; store ``k, v [NB, Hkv, T, D]`` (float, or quantized as in
:mod:`vidqa.kernels.quant`); ``block_table [S]`` indices of the blocks to attend to, in order;
``block_lens [NB]`` valid tokens per block (the rest is padding); optional dense ``tail_k, tail_v
[Hkv, Lt, D]`` (the question's own keys, appended after the blocks) with causal masking: query ``i``
sees tail key ``j`` iff ``j <= i + Lt - Lq``. Grouped-query attention maps query head ``h`` to KV head
``h // (Hq / Hkv)``. Returns ``o [Hq, Lq, D]`` (float32) and ``lse [Hq, Lq]`` (natural log of the
softmax normaliser, for combining partial results).
"""

from __future__ import annotations

import torch


def gather_dense(k_store, v_store, block_table, block_lens=None):
    """Selected blocks' K/V concatenated: ``[Hkv, sum(lens), D]`` each (float32)."""
    ks, vs = [], []
    for b in block_table.tolist():
        n = int(block_lens[b]) if block_lens is not None else k_store.shape[2]
        ks.append(k_store[b, :, :n].float())
        vs.append(v_store[b, :, :n].float())
    d = k_store.shape[-1]
    empty = k_store.new_zeros(k_store.shape[1], 0, d).float()
    return (torch.cat(ks, dim=1) if ks else empty), (torch.cat(vs, dim=1) if vs else empty)


def block_attention_naive(q, k_store, v_store, block_table, block_lens=None, tail_k=None, tail_v=None,
                          scale: float | None = None):
    hq, lq, d = q.shape
    k, v = gather_dense(k_store, v_store, block_table, block_lens)
    n_ctx = k.shape[1]
    mask = torch.ones(lq, n_ctx, dtype=torch.bool, device=q.device)
    if tail_k is not None:
        lt = tail_k.shape[1]
        k, v = torch.cat([k, tail_k.float()], dim=1), torch.cat([v, tail_v.float()], dim=1)
        causal = torch.ones(lq, lt, dtype=torch.bool, device=q.device).tril(lt - lq)
        mask = torch.cat([mask, causal], dim=1)
    group = hq // k.shape[0]
    k, v = k.repeat_interleave(group, 0), v.repeat_interleave(group, 0)
    scale = scale if scale is not None else d ** -0.5
    logits = torch.einsum("hqd,hkd->hqk", q.float(), k) * scale
    logits = logits.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(logits, dim=-1)
    o = torch.einsum("hqk,hkd->hqd", torch.exp(logits - lse[..., None]), v)
    return o, lse


def combine_partials(outs: list[torch.Tensor], lses: list[torch.Tensor]):
    """Merges attention results over disjoint key sets: ``o = sum_i exp(lse_i - lse) o_i``."""
    lse = torch.logsumexp(torch.stack(lses), dim=0)
    o = sum(torch.exp(l - lse)[..., None] * o for o, l in zip(outs, lses))
    return o, lse
