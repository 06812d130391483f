"""Triton residual add + RMSNorm: one program per row of ``[rows, D]`` (``D`` up to a few thousand)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _add_rms_norm(x_ptr, d_ptr, w_ptr, h_ptr, y_ptr, D, eps, HAS_DELTA: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    m = cols < D
    x = tl.load(x_ptr + row * D + cols, mask=m, other=0.0)
    if HAS_DELTA:
        d = tl.load(d_ptr + row * D + cols, mask=m, other=0.0)
        # PyTorch adds two bf16 tensors in float32 and rounds once: the same here.
        x = (x.to(tl.float32) + d.to(tl.float32)).to(h_ptr.dtype.element_ty)
        tl.store(h_ptr + row * D + cols, x, mask=m)
    f = x.to(tl.float32)
    rstd = tl.math.rsqrt(tl.sum(f * f, axis=0) / D + eps)
    normed = (f * rstd).to(h_ptr.dtype.element_ty).to(tl.float32)
    w = tl.load(w_ptr + cols, mask=m, other=0.0).to(tl.float32)
    tl.store(y_ptr + row * D + cols, (w * normed).to(y_ptr.dtype.element_ty), mask=m)


def add_rms_norm_triton(x: torch.Tensor, delta: torch.Tensor | None, weight: torch.Tensor, eps: float):
    d = x.shape[-1]
    flat = x.reshape(-1, d).contiguous()
    rows = flat.shape[0]
    y = torch.empty(x.shape, dtype=torch.promote_types(weight.dtype, x.dtype), device=x.device)
    if delta is None:
        h = x
        dflat = flat  # unused
    else:
        dflat = delta.reshape(-1, d).contiguous()
        h = torch.empty(x.shape, dtype=torch.promote_types(x.dtype, delta.dtype), device=x.device)
    if rows:
        _add_rms_norm[(rows,)](flat, dflat, weight.contiguous(), h, y, d, eps, HAS_DELTA=delta is not None,
                               BLOCK=triton.next_power_of_2(d))
    return h, y
