"""Triton group-wise quantization: one program per (block of rows, channel group).

Same math as :mod:`.naive` (fp16 scales rounded before quantizing). int4 loads the even and odd
channels of a group as two tiles and writes one packed byte per pair.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _quant8(x_ptr, q_ptr, s_ptr, rows, D: tl.constexpr, G: tl.constexpr, BR: tl.constexpr):
    pid_r, grp = tl.program_id(0), tl.program_id(1)
    r = pid_r * BR + tl.arange(0, BR)
    c = grp * G + tl.arange(0, G)
    m = r[:, None] < rows
    x = tl.load(x_ptr + r[:, None] * D + c[None, :], mask=m, other=0.0).to(tl.float32)
    s = tl.maximum(tl.max(tl.abs(x), axis=1) / 127.0, 1e-8).to(tl.float16).to(tl.float32)
    q = x / s[:, None]
    q = tl.where(q >= 0, tl.floor(q + 0.5), tl.ceil(q - 0.5))  # round half away from zero
    q = tl.minimum(tl.maximum(q, -127.0), 127.0)
    tl.store(q_ptr + r[:, None] * D + c[None, :], q.to(tl.int8), mask=m)
    tl.store(s_ptr + r * (D // G) + grp, s.to(tl.float16), mask=r < rows)


@triton.jit
def _quant4(x_ptr, q_ptr, s_ptr, z_ptr, rows, D: tl.constexpr, G: tl.constexpr, BR: tl.constexpr):
    pid_r, grp = tl.program_id(0), tl.program_id(1)
    r = pid_r * BR + tl.arange(0, BR)
    half = tl.arange(0, G // 2)
    ce, co = grp * G + 2 * half, grp * G + 2 * half + 1
    m = r[:, None] < rows
    xe = tl.load(x_ptr + r[:, None] * D + ce[None, :], mask=m, other=0.0).to(tl.float32)
    xo = tl.load(x_ptr + r[:, None] * D + co[None, :], mask=m, other=0.0).to(tl.float32)
    lo = tl.minimum(tl.min(xe, axis=1), tl.min(xo, axis=1))
    hi = tl.maximum(tl.max(xe, axis=1), tl.max(xo, axis=1))
    s = tl.maximum((hi - lo) / 15.0, 1e-8).to(tl.float16).to(tl.float32)
    z = lo.to(tl.float16).to(tl.float32)
    qe = tl.minimum(tl.maximum(tl.floor((xe - z[:, None]) / s[:, None] + 0.5), 0.0), 15.0).to(tl.uint8)
    qo = tl.minimum(tl.maximum(tl.floor((xo - z[:, None]) / s[:, None] + 0.5), 0.0), 15.0).to(tl.uint8)
    tl.store(q_ptr + r[:, None] * (D // 2) + (grp * (G // 2) + half)[None, :], qe | (qo << 4), mask=m)
    tl.store(s_ptr + r * (D // G) + grp, s.to(tl.float16), mask=r < rows)
    tl.store(z_ptr + r * (D // G) + grp, z.to(tl.float16), mask=r < rows)


@triton.jit
def _dequant(q_ptr, s_ptr, z_ptr, o_ptr, rows, D: tl.constexpr, G: tl.constexpr, BITS: tl.constexpr,
             BR: tl.constexpr):
    pid_r, grp = tl.program_id(0), tl.program_id(1)
    r = pid_r * BR + tl.arange(0, BR)
    m = r[:, None] < rows
    s = tl.load(s_ptr + r * (D // G) + grp, mask=r < rows, other=0.0).to(tl.float32)
    if BITS == 8:
        c = grp * G + tl.arange(0, G)
        q = tl.load(q_ptr + r[:, None] * D + c[None, :], mask=m, other=0).to(tl.float32)
        tl.store(o_ptr + r[:, None] * D + c[None, :], q * s[:, None], mask=m)
    else:
        half = tl.arange(0, G // 2)
        z = tl.load(z_ptr + r * (D // G) + grp, mask=r < rows, other=0.0).to(tl.float32)
        byte = tl.load(q_ptr + r[:, None] * (D // 2) + (grp * (G // 2) + half)[None, :], mask=m, other=0)
        lo = (byte & 15).to(tl.float32) * s[:, None] + z[:, None]
        hi = (byte >> 4).to(tl.float32) * s[:, None] + z[:, None]
        base = r[:, None] * D + grp * G + 2 * half[None, :]
        tl.store(o_ptr + base, lo, mask=m)
        tl.store(o_ptr + base + 1, hi, mask=m)


BR = 32


def quantize_triton(x: torch.Tensor, bits: int, group_size: int):
    d = x.shape[-1]
    flat = x.reshape(-1, d).contiguous()
    rows = flat.shape[0]
    grid = (triton.cdiv(rows, BR), d // group_size)
    scale = torch.empty(rows, d // group_size, dtype=torch.float16, device=x.device)
    if bits == 8:
        q = torch.empty(rows, d, dtype=torch.int8, device=x.device)
        _quant8[grid](flat, q, scale, rows, D=d, G=group_size, BR=BR)
        return q.reshape(x.shape), scale.reshape(*x.shape[:-1], -1), None
    q = torch.empty(rows, d // 2, dtype=torch.uint8, device=x.device)
    zero = torch.empty_like(scale)
    _quant4[grid](flat, q, scale, zero, rows, D=d, G=group_size, BR=BR)
    lead = x.shape[:-1]
    return q.reshape(*lead, d // 2), scale.reshape(*lead, -1), zero.reshape(*lead, -1)


def dequantize_triton(data, scale, zero, bits: int, group_size: int, out: torch.Tensor | None = None):
    d = data.shape[-1] * (2 if bits == 4 else 1)
    rows = data.numel() // data.shape[-1]
    if out is None:
        out = torch.empty(*data.shape[:-1], d, dtype=torch.float32, device=data.device)
    grid = (triton.cdiv(rows, BR), d // group_size)
    _dequant[grid](data.contiguous(), scale.contiguous(), (zero if zero is not None else scale).contiguous(),
                   out, rows, D=d, G=group_size, BITS=bits, BR=BR)
    return out
