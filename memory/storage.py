"""Host-side storage of one KV tensor: full precision or group-wise int8/int4.

``StoredKV.pack(x, bits)`` moves a ``[L, H, n, D]`` tensor off the GPU (pinned host memory when CUDA
is present, so that bringing it back is an asynchronous copy); with ``bits`` 8 or 4 it is quantized
per token in groups of ``group_size`` channels (KIVI, Liu et al. 2024; ZipCache, He et al. 2024)
by :mod:`vidqa.kernels.quant`, whose Triton kernel runs on the GPU before the copy and whose
PyTorch reference runs on CPU. Given a :class:`~vidqa.memory.offload.HostOffload` (ingest on CUDA),
the copy is queued on a side stream into pinned slabs and ``pack`` returns at once; the stored
tensor is then waited for the first time it is read (:attr:`StoredKV.data`).
"""

from __future__ import annotations

import math

import torch

from vidqa.memory.offload import HostOffload, Landing


def _quant():
    from vidqa.kernels import quant  # imported on first use: 16-bit storage needs no kernels

    return quant


class StoredKV:
    """One tensor ``[L, H, n, D]`` at rest on the host: the tensor itself (bits 16) or a
    ``QuantizedKV`` (bits 8/4). ``landing``: the copy still filling it (offloaded packs), or ``None``.

    :attr:`data` is the only way to its values and the one place that waits for the copy, so every
    reader (unpack, persistence, recall, the ask-time budget) sees landed data; ``nbytes`` and
    ``meta`` read shapes only and never wait.
    """

    def __init__(self, data, bits: int, dtype: torch.dtype, landing: Landing | None = None):
        self._data, self.bits, self.dtype, self._landing = data, bits, dtype, landing

    @property
    def data(self):
        """The host tensor or ``QuantizedKV``, once its copy has landed (waits for it the first time)."""
        if self._landing is not None:
            self._landing.wait()
            self._landing = None
        return self._data

    @property
    def landed(self) -> bool:
        """Whether reading :attr:`data` would not wait (its copy is done or there was none)."""
        return self._landing is None or self._landing.done()

    @staticmethod
    def pack(x: torch.Tensor, bits: int = 16, group_size: int = 32,
             offload: HostOffload | None = None) -> "StoredKV":
        if offload is not None:
            return StoredKV._offload(x, bits, group_size, offload)
        if bits == 16:
            host = x.detach().to("cpu", copy=True)
            if torch.cuda.is_available():
                host = host.pin_memory()
            return StoredKV(host, 16, x.dtype)
        # Heads narrower than the group (tiny models) use one group per token and head.
        group = math.gcd(group_size, x.shape[-1])
        q = _quant().quantize_kv(x.detach(), bits=bits, group_size=group).to("cpu")
        return StoredKV(q, bits, x.dtype)

    @staticmethod
    def _offload(x: torch.Tensor, bits: int, group_size: int, offload: HostOffload) -> "StoredKV":
        """``pack`` through ``offload``: quantized where ``x`` is, then copied without waiting. The
        copy reads tensors nobody else holds (the quantized ones, or a clone at 16 bits), so the
        caller may free or overwrite ``x`` as soon as this returns."""
        if bits == 16:
            landing = offload.copy([x.detach().clone()])
            return StoredKV(landing.host[0], 16, x.dtype, landing)
        quant = _quant()
        q = quant.quantize_kv(x.detach(), bits=bits, group_size=math.gcd(group_size, x.shape[-1]))
        landing = offload.copy([t for t in (q.data, q.scale, q.zero) if t is not None])
        data, scale, *zero = landing.host
        host = quant.QuantizedKV(data, scale, zero[0] if zero else None, q.bits, q.group_size, q.shape, q.dtype)
        return StoredKV(host, bits, x.dtype, landing)

    def unpack(self, device, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The tensor on ``device`` (dequantized there when quantized)."""
        dtype = dtype or self.dtype
        if self.bits == 16:
            return self.data.to(device=device, dtype=dtype, non_blocking=True)
        return _quant().dequantize_kv(self.data.to(device)).to(dtype)

    @property
    def nbytes(self) -> int:
        if self.bits == 16:
            return self._data.numel() * self._data.element_size()
        return self._data.nbytes

    def tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """Flat name -> tensor map for safetensors."""
        if self.bits == 16:
            return {f"{prefix}x": self.data.contiguous()}
        return {f"{prefix}{k}": v.contiguous() for k, v in self.data.state_dict().items()}

    def meta(self) -> dict:
        m = {"bits": self.bits, "dtype": str(self.dtype).removeprefix("torch.")}
        if self.bits != 16:
            m["quant"] = self._data.meta()
        return m

    @staticmethod
    def from_tensors(tensors: dict[str, torch.Tensor], meta: dict, prefix: str = "") -> "StoredKV":
        dtype = getattr(torch, meta["dtype"])
        if meta["bits"] == 16:
            return StoredKV(tensors[f"{prefix}x"], 16, dtype)
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        return StoredKV(_quant().QuantizedKV.from_state_dict(state, meta["quant"]), meta["bits"], dtype)
