"""Reference (and CPU path) of :func:`vidqa.kernels.rotary.rotary_qk`."""

from __future__ import annotations

import torch


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rotary_qk_naive(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """``q``, ``k`` ``[N, H, D]``; ``cos``, ``sin`` ``[N, D]`` -> rotated ``q``, ``k`` in their dtypes."""
    c, s = cos.float().unsqueeze(-2), sin.float().unsqueeze(-2)
    out = []
    for x in (q, k):
        f = x.float()
        out.append((f * c + _rotate_half(f) * s).to(x.dtype))
    return out[0], out[1]
