"""KV quantization, int8 and int4 group-wise: :func:`quantize_kv` / :func:`dequantize_kv`.

See ``README.md`` beside this file for the math; :mod:`.naive` is the reference and CPU path,
:mod:`.triton_impl` the GPU kernels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vidqa.kernels.dispatch import use_triton
from vidqa.kernels.quant.naive import dequantize_naive, quantize_naive


@dataclass
class QuantizedKV:
    """A quantized tensor of logical shape ``shape`` (last dim = channels)."""

    data: torch.Tensor  # int8 [..., D] or uint8 [..., D/2]
    scale: torch.Tensor  # fp16 [..., D/G]
    zero: torch.Tensor | None  # fp16 [..., D/G] (int4) or None
    bits: int
    group_size: int
    shape: tuple
    dtype: torch.dtype

    def map(self, fn) -> "QuantizedKV":
        """The same quantized tensor with ``fn`` applied to each of its stored tensors (data, scale, zero)."""
        return QuantizedKV(fn(self.data), fn(self.scale), None if self.zero is None else fn(self.zero), self.bits,
                           self.group_size, self.shape, self.dtype)

    def to(self, device) -> "QuantizedKV":
        return self.map(lambda t: t.to(device, non_blocking=True))

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.data, self.scale, self.zero) if t is not None)

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {"data": self.data, "scale": self.scale}
        if self.zero is not None:
            out["zero"] = self.zero
        return out

    def meta(self) -> dict:
        return {"bits": self.bits, "group_size": self.group_size, "shape": list(self.shape),
                "dtype": str(self.dtype).removeprefix("torch.")}

    @staticmethod
    def from_state_dict(state: dict, meta: dict) -> "QuantizedKV":
        return QuantizedKV(state["data"], state["scale"], state.get("zero"), meta["bits"], meta["group_size"],
                           tuple(meta["shape"]), getattr(torch, meta["dtype"]))


def _check(x: torch.Tensor, bits: int, group_size: int) -> None:
    if bits not in (4, 8):
        raise ValueError(f"bits must be 4 or 8, got {bits}")
    if x.shape[-1] % group_size or (bits == 4 and group_size % 2):
        raise ValueError(f"channel dim {x.shape[-1]} must be a multiple of group_size {group_size} (even for int4)")


def quantize_kv(x: torch.Tensor, bits: int = 8, group_size: int = 32, backend: str = "auto") -> QuantizedKV:
    """Group-wise quantization of ``x`` ``[..., D]`` (e.g. ``[blocks, heads, tokens, D]``)."""
    _check(x, bits, group_size)
    if use_triton(backend, x):
        from vidqa.kernels.quant.triton_impl import quantize_triton

        data, scale, zero = quantize_triton(x, bits, group_size)
    else:
        data, scale, zero = quantize_naive(x, bits, group_size)
    return QuantizedKV(data, scale, zero, bits, group_size, tuple(x.shape), x.dtype)


def dequantize_kv(q: QuantizedKV, backend: str = "auto", out: torch.Tensor | None = None) -> torch.Tensor:
    """The tensor back, in float32 (callers cast); ``out`` (float32, ``q.shape``) is written when given."""
    if use_triton(backend, q.data):
        from vidqa.kernels.quant.triton_impl import dequantize_triton

        return dequantize_triton(q.data, q.scale, q.zero, q.bits, q.group_size, out=out)
    result = dequantize_naive(q.data, q.scale, q.zero, q.bits, q.group_size)
    if out is not None:
        out.copy_(result)
        return out
    return result


__all__ = ["QuantizedKV", "quantize_kv", "dequantize_kv"]
