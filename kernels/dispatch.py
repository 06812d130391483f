"""Choosing between a Triton kernel and its PyTorch reference.

``backend``: ``"auto"`` (Triton for CUDA tensors, the reference otherwise), ``"triton"`` (also on CPU
tensors when ``TRITON_INTERPRET=1``: how CI runs the kernels), ``"naive"``. ``VIDQA_KERNELS``
overrides ``auto``. Triton is imported only when a kernel runs, so importing vidqa never needs it.
"""

from __future__ import annotations

import functools
import os

import torch


def use_triton(backend: str, *tensors: torch.Tensor) -> bool:
    if backend not in ("auto", "triton", "naive"):
        raise ValueError(f"backend must be auto, triton or naive; got {backend!r}")
    if backend == "auto":
        backend = os.environ.get("VIDQA_KERNELS", "auto")
    if backend == "naive":
        return False
    on_cuda = all(t.is_cuda for t in tensors)
    if backend == "triton":
        if not on_cuda and os.environ.get("TRITON_INTERPRET") != "1":
            raise RuntimeError("Triton kernels need CUDA tensors or TRITON_INTERPRET=1")
        return True
    return on_cuda and _triton_available()


@functools.lru_cache(maxsize=None)
def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True
