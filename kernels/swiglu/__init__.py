"""The gated activation of a SwiGLU MLP in one kernel: :func:`silu_mul` (see ``README.md``)."""

from __future__ import annotations

import torch

from vidqa.kernels.dispatch import use_triton
from vidqa.kernels.swiglu.naive import silu_mul_naive


def silu_mul(gate: torch.Tensor, up: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """``silu(gate) * up`` for two tensors of one shape ``[..., I]``."""
    if gate.shape != up.shape:
        raise ValueError(f"gate {tuple(gate.shape)} and up {tuple(up.shape)} must have one shape")
    if use_triton(backend, gate, up):
        from vidqa.kernels.swiglu.triton_impl import silu_mul_triton

        return silu_mul_triton(gate, up)
    return silu_mul_naive(gate, up)


__all__ = ["silu_mul"]
