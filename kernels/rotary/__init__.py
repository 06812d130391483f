"""Rotary embedding of queries and keys in one kernel: :func:`rotary_qk` (see ``README.md``)."""

from __future__ import annotations

import torch

from vidqa.kernels.dispatch import use_triton
from vidqa.kernels.rotary.naive import rotary_qk_naive


def rotary_qk(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
              backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Rotated ``q`` ``[N, Hq, D]`` and ``k`` ``[N, Hk, D]`` (any strides, contiguous results; ``Hq != Hk``
    under grouped-query attention) for ``cos``, ``sin`` ``[N, D]`` ("rotate half" layout: dimension
    ``i`` pairs with ``i + D/2``)."""
    if q.dim() != 3 or k.dim() != 3 or q.shape[0] != k.shape[0] or q.shape[2] != k.shape[2] or q.shape[-1] % 2:
        raise ValueError(f"q and k must be [N, Hq, D] and [N, Hk, D] with D even; got {tuple(q.shape)}, {tuple(k.shape)}")
    if cos.shape != (q.shape[0], q.shape[2]) or sin.shape != cos.shape:
        raise ValueError(f"cos and sin must be [{q.shape[0]}, {q.shape[2]}]; got {tuple(cos.shape)}, {tuple(sin.shape)}")
    if use_triton(backend, q, k, cos, sin):
        from vidqa.kernels.rotary.triton_impl import rotary_qk_triton

        return rotary_qk_triton(q, k, cos, sin)
    return rotary_qk_naive(q, k, cos, sin)


__all__ = ["rotary_qk"]
