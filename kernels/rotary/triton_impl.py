"""Triton rotary embedding: one program per (token, q or k) covers every head of that token."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _rotary(q_ptr, k_ptr, cos_ptr, sin_ptr, qo_ptr, ko_ptr, HQ, HK, HALF, stride_qn, stride_qh,
            stride_kn, stride_kh, BH: tl.constexpr, BD: tl.constexpr):
    n = tl.program_id(0).to(tl.int64)
    which = tl.program_id(1)
    src = q_ptr
    dst = qo_ptr
    H = HQ
    stride_n = stride_qn
    stride_h = stride_qh
    if which == 1:  # keys: their own head count (grouped-query attention) and strides
        src = k_ptr
        dst = ko_ptr
        H = HK
        stride_n = stride_kn
        stride_h = stride_kh
    heads = tl.arange(0, BH)[:, None]
    cols = tl.arange(0, BD)[None, :]
    m = (heads < H) & (cols < HALF)
    x_off = n * stride_n + heads * stride_h + cols
    x1 = tl.load(src + x_off, mask=m, other=0.0).to(tl.float32)
    x2 = tl.load(src + x_off + HALF, mask=m, other=0.0).to(tl.float32)
    cm = tl.arange(0, BD) < HALF
    row = n * 2 * HALF + tl.arange(0, BD)
    c1 = tl.load(cos_ptr + row, mask=cm, other=0.0)[None, :]
    c2 = tl.load(cos_ptr + row + HALF, mask=cm, other=0.0)[None, :]
    s1 = tl.load(sin_ptr + row, mask=cm, other=0.0)[None, :]
    s2 = tl.load(sin_ptr + row + HALF, mask=cm, other=0.0)[None, :]
    o_off = n * H * 2 * HALF + heads * 2 * HALF + cols
    tl.store(dst + o_off, (x1 * c1 - x2 * s1).to(dst.dtype.element_ty), mask=m)
    tl.store(dst + o_off + HALF, (x2 * c2 + x1 * s2).to(dst.dtype.element_ty), mask=m)


def rotary_qk_triton(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    n, dim = q.shape[0], q.shape[2]
    q = q if q.stride(-1) == 1 else q.contiguous()
    k = k if k.stride(-1) == 1 else k.contiguous()
    cos = cos.float().contiguous()
    sin = sin.float().contiguous()
    qo, ko = torch.empty(q.shape, dtype=q.dtype, device=q.device), torch.empty(k.shape, dtype=k.dtype, device=k.device)
    if n:
        _rotary[(n, 2)](q, k, cos, sin, qo, ko, q.shape[1], k.shape[1], dim // 2, q.stride(0), q.stride(1),
                        k.stride(0), k.stride(1), BH=triton.next_power_of_2(max(q.shape[1], k.shape[1])),
                        BD=triton.next_power_of_2(dim // 2))
    return qo, ko
