"""Reference (and CPU path) of :func:`vidqa.kernels.swiglu.silu_mul`."""

from __future__ import annotations

import torch


def silu_mul_naive(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.silu(gate) * up
