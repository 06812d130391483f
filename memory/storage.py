"""Host-side storage of one KV tensor: full precision or group-wise int8/int4.

``StoredKV.pack(x, bits)`` moves a ``[L, H, n, D]`` tensor off the GPU into ordinary (pageable) host
memory; with ``bits`` 8 or 4 it is quantized per token in groups of ``group_size`` channels (KIVI,
Liu et al. 2024; ZipCache, He et al. 2024) by :mod:`vidqa.kernels.quant`, whose Triton kernel runs
on the GPU before the copy and whose PyTorch reference runs on CPU.

Why not pinned memory: page-locking ran at about 1.5 GB/s on the lent H200's host, and the offload
stage of an hour's ingest (13 GB of 7B KV) was timed at 9.3 s, nearly all of it pinning. A plain
copy needs no locking, and four hours of page-locked KV would be more than a workstation can spare.
Bringing the few retrieved blocks back per question is a small copy either way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def _quant():
    from vidqa.kernels import quant  # imported on first use: 16-bit storage needs no kernels

    return quant


def _pageable(t: torch.Tensor) -> torch.Tensor:
    # non_blocking=False: a non-blocking copy to the host would allocate pinned memory (see above)
    return t.to("cpu", copy=True, non_blocking=False)


class HostStaging:
    """Device -> pageable host copies through one reused pinned buffer (one user thread at a time).

    A pageable device-to-host copy goes through the CUDA driver's own staging, which serialises it
    with every other pageable copy of the process: run in the offload thread, it held up the frames
    the main thread sends to the GPU (measured on the H200: +9 s of preprocessing per hour). Here the
    DMA lands in page-locked memory allocated once (no driver staging, no lock), and the copy into
    the fresh pageable tensor -- where the page faults are -- is plain CPU work."""

    def __init__(self):
        self.buffer: torch.Tensor | None = None  # pinned uint8, grown to the largest tensor seen

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        if t.device.type != "cuda":
            return _pageable(t)
        t = t.contiguous()
        n = t.numel() * t.element_size()
        if self.buffer is None or self.buffer.numel() < n:
            self.buffer = None
            self.buffer = torch.empty(max(n, 1), dtype=torch.uint8, pin_memory=True)
        staged = self.buffer[:n].view(t.dtype).view(t.shape)
        staged.copy_(t, non_blocking=True)
        torch.cuda.current_stream(t.device).synchronize()  # the DMA is done before the buffer is read
        return staged.clone()  # pageable; the buffer is free again on return


@dataclass
class StoredKV:
    """One tensor ``[L, H, n, D]`` at rest. ``data`` is the tensor itself (bits 16) or a
    ``QuantizedKV`` (bits 8/4)."""

    data: object
    bits: int
    dtype: torch.dtype

    @staticmethod
    def pack(x: torch.Tensor, bits: int = 16, group_size: int = 32, to_host=None) -> "StoredKV":
        """``x`` stored at ``bits``; ``to_host(t)`` moves each device tensor to pageable host memory
        (default: a plain synchronous copy; the ingest's offload thread passes :class:`HostStaging`)."""
        to_host = to_host or _pageable
        if bits == 16:
            return StoredKV(to_host(x.detach()), 16, x.dtype)
        # Heads narrower than the group (tiny models) use one group per token and head.
        group = math.gcd(group_size, x.shape[-1])
        q = _quant().quantize_kv(x.detach(), bits=bits, group_size=group).map(to_host)
        return StoredKV(q, bits, x.dtype)

    def unpack(self, device, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The tensor on ``device`` (dequantized there when quantized)."""
        dtype = dtype or self.dtype
        if self.bits == 16:
            return self.data.to(device=device, dtype=dtype, non_blocking=True)
        return _quant().dequantize_kv(self.data.to(device)).to(dtype)

    @property
    def nbytes(self) -> int:
        if self.bits == 16:
            return self.data.numel() * self.data.element_size()
        return sum(t.numel() * t.element_size() for t in self.tensors().values())

    def tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """Flat name -> tensor map for safetensors."""
        if self.bits == 16:
            return {f"{prefix}x": self.data.contiguous()}
        return {f"{prefix}{k}": v.contiguous() for k, v in self.data.state_dict().items()}

    def meta(self) -> dict:
        m = {"bits": self.bits, "dtype": str(self.dtype).removeprefix("torch.")}
        if self.bits != 16:
            m["quant"] = self.data.meta()
        return m

    @staticmethod
    def from_tensors(tensors: dict[str, torch.Tensor], meta: dict, prefix: str = "") -> "StoredKV":
        dtype = getattr(torch, meta["dtype"])
        if meta["bits"] == 16:
            return StoredKV(tensors[f"{prefix}x"], 16, dtype)
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        return StoredKV(_quant().QuantizedKV.from_state_dict(state, meta["quant"]), meta["bits"], dtype)
