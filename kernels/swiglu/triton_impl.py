"""Triton ``silu(gate) * up`` over flat contiguous tensors, ``BLOCK`` elements per program."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _silu_mul(g_ptr, u_ptr, o_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    g = tl.load(g_ptr + offs, mask=m, other=0.0).to(tl.float32)
    u = tl.load(u_ptr + offs, mask=m, other=0.0).to(tl.float32)
    act = (g / (1.0 + tl.exp(-g))).to(o_ptr.dtype.element_ty).to(tl.float32)  # rounded as torch's silu is
    tl.store(o_ptr + offs, (act * u).to(o_ptr.dtype.element_ty), mask=m)


BLOCK = 2048


def silu_mul_triton(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    g, u = gate.contiguous(), up.contiguous()
    out = torch.empty(g.shape, dtype=torch.promote_types(g.dtype, u.dtype), device=g.device)
    n = g.numel()
    if n:
        _silu_mul[(triton.cdiv(n, BLOCK),)](g, u, out, n, BLOCK=BLOCK)
    return out
