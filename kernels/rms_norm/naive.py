"""Reference (and CPU path) of :func:`vidqa.kernels.rms_norm.add_rms_norm`."""

from __future__ import annotations

import torch


def add_rms_norm_naive(x: torch.Tensor, delta: torch.Tensor | None, weight: torch.Tensor, eps: float):
    """``(h, y)``: ``h = x + delta`` (``x`` when ``delta`` is None), ``y = weight * RMSNorm(h)``."""
    h = x if delta is None else x + delta
    f = h.float()
    normed = (f * torch.rsqrt(f.pow(2).mean(-1, keepdim=True) + eps)).to(h.dtype)
    return h, weight * normed
