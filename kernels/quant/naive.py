"""Reference group-wise KV quantization (KIVI, Liu et al. ICML 2024; ZipCache, He et al. 2024).

``x [..., D]`` is cut into groups of ``G`` consecutive channels per token.

* int8, symmetric: ``s = max|x| / 127`` (fp16), ``q = round(x / s)`` in [-127, 127].
* int4, asymmetric: ``s = (max - min) / 15``, ``z = min`` (both fp16), ``q = round((x - z) / s)`` in
  [0, 15], channels ``2i`` and ``2i + 1`` packed into one byte (low nibble = even channel).

Dequantization ``x' = q * s`` (int8) or ``q * s + z`` (int4) has ``|x - x'| <= s / 2`` (plus the
rounding of ``z`` to fp16 for int4). Scales are rounded to fp16 *before* quantizing, so the bound
holds for the stored scales.
"""

from __future__ import annotations

import torch


def quantize_naive(x: torch.Tensor, bits: int, group_size: int):
    """Returns ``(data, scale, zero)``: int8 ``[..., D]`` or uint8 ``[..., D/2]``; fp16 ``[..., D/G]``."""
    d = x.shape[-1]
    g = x.float().reshape(*x.shape[:-1], d // group_size, group_size)
    if bits == 8:
        scale = (g.abs().amax(-1) / 127.0).clamp_min(1e-8).half()
        v = g / scale.float()[..., None]
        q = (torch.sign(v) * torch.floor(v.abs() + 0.5)).clamp(-127, 127).to(torch.int8)  # half away from 0
        return q.reshape(x.shape), scale, None
    lo, hi = g.amin(-1), g.amax(-1)
    scale = ((hi - lo) / 15.0).clamp_min(1e-8).half()
    zero = lo.half()
    q = torch.floor((g - zero.float()[..., None]) / scale.float()[..., None] + 0.5).clamp(0, 15).to(torch.uint8)
    q = q.reshape(x.shape)
    packed = q[..., 0::2] | (q[..., 1::2] << 4)
    return packed, scale, zero


def dequantize_naive(data: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, bits: int,
                     group_size: int, dtype=torch.float32) -> torch.Tensor:
    if bits == 8:
        d = data.shape[-1]
        g = data.float().reshape(*data.shape[:-1], d // group_size, group_size)
        return (g * scale.float()[..., None]).reshape(data.shape).to(dtype)
    d = data.shape[-1] * 2
    q = torch.stack([data & 15, data >> 4], dim=-1).reshape(*data.shape[:-1], d).float()
    g = q.reshape(*q.shape[:-1], d // group_size, group_size)
    return (g * scale.float()[..., None] + zero.float()[..., None]).reshape(q.shape).to(dtype)
