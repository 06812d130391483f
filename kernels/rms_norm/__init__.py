"""Residual add + RMSNorm in one kernel: :func:`add_rms_norm` (see ``README.md`` beside this file)."""

from __future__ import annotations

import torch

from vidqa.kernels.dispatch import use_triton
from vidqa.kernels.rms_norm.naive import add_rms_norm_naive


def add_rms_norm(x: torch.Tensor, delta: torch.Tensor | None, weight: torch.Tensor, eps: float,
                 backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """``(h, y)`` for ``x``, ``delta`` ``[..., D]`` and ``weight`` ``[D]``: ``h = x + delta`` (``x``
    itself when ``delta`` is None) and ``y = weight * RMSNorm(h)``, both ``[..., D]``."""
    if delta is not None and delta.shape != x.shape:
        raise ValueError(f"delta {tuple(delta.shape)} must have the shape of x {tuple(x.shape)}")
    if weight.shape != x.shape[-1:]:
        raise ValueError(f"weight {tuple(weight.shape)} must be [{x.shape[-1]}]")
    tensors = (x, weight) if delta is None else (x, delta, weight)
    if use_triton(backend, *tensors):
        from vidqa.kernels.rms_norm.triton_impl import add_rms_norm_triton

        return add_rms_norm_triton(x, delta, weight, eps)
    return add_rms_norm_naive(x, delta, weight, eps)


__all__ = ["add_rms_norm"]
