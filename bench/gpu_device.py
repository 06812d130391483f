"""Device readings the GPU benchmark takes around its stages: synchronisation, GPU memory (peak and
now), host RSS, freeing cached memory, and telling an out-of-memory error from other failures.

Everything is a no-op (or ``None``) without CUDA, so the same code runs in the CPU smoke test.
"""

from __future__ import annotations

import gc

import torch


def _proc_status_gib(key: str) -> float:
    """A ``/proc/self/status`` memory line (``VmRSS``, ``VmHWM``) in GiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) / 2**20
    return float("nan")


def rss_gib() -> float:
    """Host memory resident now, GiB."""
    return _proc_status_gib("VmRSS")


def rss_peak_gib() -> float:
    """Host memory resident at its highest since the process started (the kernel's high-water mark), GiB."""
    return _proc_status_gib("VmHWM")


def cuda_sync() -> None:
    """Waits for queued GPU work, so that a wall-clock reading after it charges that work to its stage."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def gpu_gib(peak: bool = True) -> float | None:
    """Allocated GPU memory in GiB: the peak since the last reset, or what is allocated now (None on CPU)."""
    if not torch.cuda.is_available():
        return None
    return (torch.cuda.max_memory_allocated() if peak else torch.cuda.memory_allocated()) / 2**30


def gpu_reserved_peak_gib() -> float | None:
    """The caching allocator's peak reservation in GiB (what the process held from the driver), None on CPU."""
    return torch.cuda.max_memory_reserved() / 2**30 if torch.cuda.is_available() else None


def reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def free_memory() -> None:
    """Collects garbage and returns cached GPU blocks, so that one measurement's leftovers do not count in the next."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def is_oom(err: BaseException) -> bool:
    """CUDA out of memory, whether raised as ``OutOfMemoryError`` or as a RuntimeError from a library."""
    return isinstance(err, torch.cuda.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and "out of memory" in str(err).lower())
