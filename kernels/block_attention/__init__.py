"""Attention of question queries over KV blocks selected from a block store.

:func:`block_attention` picks the Triton kernel (:mod:`.triton_impl`, reads int8/int4 KV in place)
or the PyTorch reference (:mod:`.naive`); :func:`combine_partials` merges results over disjoint key
sets through their log-sum-exp. See ``README.md`` for the math.
"""

from __future__ import annotations

import torch

from vidqa.kernels.block_attention.naive import block_attention_naive, combine_partials
from vidqa.kernels.dispatch import use_triton
from vidqa.kernels.quant import QuantizedKV, dequantize_kv


def block_attention(q: torch.Tensor, k_store, v_store, block_table: torch.Tensor,
                    block_lens: torch.Tensor | None = None, tail_k: torch.Tensor | None = None,
                    tail_v: torch.Tensor | None = None, scale: float | None = None, backend: str = "auto",
                    out: torch.Tensor | None = None, lse: torch.Tensor | None = None):
    """``q [Hq, Lq, D]`` over blocks ``block_table [S]`` of ``k_store/v_store [NB, Hkv, T, D]``
    (tensors or :class:`QuantizedKV`), then the causal ``tail_k/tail_v [Hkv, Lt, D]``.
    Returns ``(o [Hq, Lq, D] float32, lse [Hq, Lq])``."""
    scale = scale if scale is not None else q.shape[-1] ** -0.5
    data = k_store.data if isinstance(k_store, QuantizedKV) else k_store
    if use_triton(backend, q, data):
        from vidqa.kernels.block_attention.triton_impl import block_attention_triton

        # Writes into out/lse itself (no extra copies) when they are float32 on q's device.
        return block_attention_triton(q, k_store, v_store, block_table, block_lens, tail_k, tail_v, scale,
                                      out=out, lse=lse)
    if isinstance(k_store, QuantizedKV):
        k_store, v_store = dequantize_kv(k_store, backend="naive"), dequantize_kv(v_store, backend="naive")
    o, l = block_attention_naive(q, k_store, v_store, block_table, block_lens, tail_k, tail_v, scale)
    if out is not None:
        out.copy_(o)
        o = out
    if lse is not None:
        lse.copy_(l)
        l = lse
    return o, l

__all__ = ["block_attention", "combine_partials"]
