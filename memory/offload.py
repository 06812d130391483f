"""Asynchronous device -> host offload of ingest's KV: a side CUDA stream copying into pinned slabs.

Why (issue #11): ingesting a 1-hour video at Qwen2.5-VL-7B size moved 13.9 GB of KV to the host in
9.3 s of a 56.7 s ingest -- 37x slower than the 0.25 s a pinned copy takes at 55 GB/s. Per chunk,
``StoredKV.pack`` copied on the main stream into a buffer allocated for it (at 8/4 bits
``.to("cpu", non_blocking=True)`` pins a fresh buffer per tensor; at 16 bits a pageable copy was
followed by ``pin_memory()``), and the summary's ``.cpu()`` then stalled the CPU until the GPU had
caught up, so neither the allocations nor the copies overlapped the prefill.

Here a chunk's tensors are copied on a side stream that first waits for the main stream (which
wrote them), into views of a few large pinned slabs (:class:`PinnedArena`; never one allocation
per block), and an event recorded after the copies says when the host views may be read
(:class:`Landing`). Pinning host memory costs time in proportion to its size (every page is
faulted in and locked), so the arena pins its next slab on a thread of its own while the current
one fills: the main thread waits for it only if it runs out first. The sources are marked with
``record_stream``, so the caching allocator hands their memory to no one before the copy has read
it, however soon the caller frees them. At most ``max_in_flight`` landings are outstanding; beyond
that the oldest is waited for, which bounds the device memory held by sources still being copied
if the copy engine falls behind.

Without a stream (CPU, or tests) the same calls copy synchronously into the arena.
"""

from __future__ import annotations

import threading
from collections import deque

import torch

SLAB_BYTES = 256 << 20  # a power of two: the pinned caching allocator rounds every request up to one
ALIGN = 4096  # a page: covers every dtype's alignment; each copy starts on a page of its own


class _Allocation:
    """One slab allocated on a thread of its own (the GIL is released while torch allocates)."""

    def __init__(self, nbytes: int, pin: bool):
        self._slab, self._error = None, None
        self._thread = threading.Thread(target=self._run, args=(nbytes, pin), name="vidqa-pinned-slab")
        self._thread.start()

    def _run(self, nbytes: int, pin: bool) -> None:
        try:
            self._slab = torch.empty(nbytes, dtype=torch.uint8, pin_memory=pin)
        except BaseException as err:  # noqa: BLE001 -- raised where the slab is needed
            self._error = err

    def result(self) -> torch.Tensor:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._slab


class PinnedArena:
    """Host memory handed out as aligned views of large slabs (uint8 ``[slab bytes]``, pinned when
    ``pin``), first fit. A view keeps its slab alive, so slabs live exactly as long as the stored
    tensors cut from them (the blocks of one memory) and nothing is ever released piecemeal.

    A new slab is opened only when no slab has room, so the arena holds what was asked for plus the
    tails too short for a later request (at 7B int8 the 3.5 MiB scales fill the tails the 56 MiB
    data leave; at 16 bits two 112 MiB tensors use 224 MiB of a slab), plus, with ``prefetch``, one
    spare slab being pinned in the background, dropped by :meth:`close`. A request larger than
    ``slab_bytes - align`` gets a slab of its own (the next power of two), whose tail later requests
    can use.
    """

    def __init__(self, slab_bytes: int = SLAB_BYTES, align: int = ALIGN, pin: bool = True,
                 prefetch: bool = True):
        self.slab_bytes, self.align, self.pin, self.prefetch = slab_bytes, align, pin, prefetch
        self.slabs: list[torch.Tensor] = []
        self._used: list[int] = []  # bytes in use from the start of each slab
        self.used_bytes = 0  # bytes handed out (without alignment padding)
        self._spare = _Allocation(slab_bytes, pin) if prefetch else None

    @property
    def reserved_bytes(self) -> int:
        return sum(s.numel() for s in self.slabs)

    def _start(self, i: int) -> int:
        """First offset in slab ``i`` at or after its used bytes whose address is aligned."""
        address = self.slabs[i].data_ptr() + self._used[i]
        return self._used[i] + (-address) % self.align

    def take(self, shape, dtype: torch.dtype) -> torch.Tensor:
        """An uninitialised contiguous host tensor ``shape`` of ``dtype``, aligned to ``align`` bytes."""
        shape = tuple(shape)
        nbytes = dtype.itemsize
        for n in shape:
            nbytes *= n
        if nbytes == 0:
            return torch.empty(shape, dtype=dtype)  # nothing to copy: no reason to open a slab
        slot = next((i for i in range(len(self.slabs)) if self._start(i) + nbytes <= self.slabs[i].numel()), None)
        if slot is None:
            self.slabs.append(self._open(nbytes + self.align))
            self._used.append(0)
            slot = len(self.slabs) - 1
        start = self._start(slot)
        self._used[slot] = start + nbytes
        self.used_bytes += nbytes
        return self.slabs[slot][start:start + nbytes].view(dtype).view(shape)

    def _open(self, need: int) -> torch.Tensor:
        """A new slab of at least ``need`` bytes: the spare when it is large enough (then the next
        spare starts pinning), else one allocated now."""
        if need > self.slab_bytes:
            return torch.empty(1 << (need - 1).bit_length(), dtype=torch.uint8, pin_memory=self.pin)
        if self._spare is None:
            return torch.empty(self.slab_bytes, dtype=torch.uint8, pin_memory=self.pin)
        slab = self._spare.result()
        self._spare = _Allocation(self.slab_bytes, self.pin) if self.prefetch else None
        return slab

    def close(self) -> None:
        """Drops the spare slab and stops prefetching (the slabs in use stay with their views). A
        spare still being pinned is not waited for: its thread frees it when done."""
        self.prefetch = False
        self._spare = None


class Landing:
    """Host tensors that copies are filling: ``host`` may be read once :meth:`wait` returned, or
    :meth:`done` returned True. ``event``: the CUDA event recorded after the copies (``None``: landed)."""

    def __init__(self, host: list[torch.Tensor], event=None):
        self.host, self.event = host, event

    def done(self) -> bool:
        """Whether the copies have landed, without waiting."""
        if self.event is not None and self.event.query():
            self.event = None
        return self.event is None

    def wait(self) -> list[torch.Tensor]:
        """The host tensors, once landed (blocks until then)."""
        if self.event is not None:
            self.event.synchronize()
            self.event = None
        return self.host


class HostOffload:
    """Copies device tensors into ``arena`` memory: on ``stream`` asynchronously (see module
    docstring), or synchronously when ``stream`` is ``None``. One per ingest: :meth:`finish` waits
    for every copy, after which the arena's slabs belong to the tensors cut from them."""

    def __init__(self, arena: PinnedArena, stream=None, max_in_flight: int = 8):
        self.arena, self.stream, self.max_in_flight = arena, stream, max_in_flight
        self.in_flight: deque[Landing] = deque()

    @staticmethod
    def cuda(device) -> "HostOffload":
        """The asynchronous offload of ``device``: pinned slabs, a side stream of its own."""
        return HostOffload(PinnedArena(pin=True), torch.cuda.Stream(device=device))

    def copy(self, sources: list[torch.Tensor]) -> Landing:
        """Queues a host copy of each of ``sources`` (any shapes and dtypes, as the work the caller
        has queued leaves them) and returns their :class:`Landing`. The caller may drop a source at
        once, but must not write one in place afterwards: the side stream reads it when it gets
        there (pass a private copy instead)."""
        host = [self.arena.take(t.shape, t.dtype) for t in sources]
        if self.stream is None:
            for h, t in zip(host, sources):
                h.copy_(t)
            return Landing(host)
        self.stream.wait_stream(torch.cuda.current_stream(self.stream.device))
        with torch.cuda.stream(self.stream):
            for h, t in zip(host, sources):
                h.copy_(t, non_blocking=True)
        event = torch.cuda.Event()
        event.record(self.stream)
        for t in sources:
            if t.is_cuda:
                t.record_stream(self.stream)
        landing = Landing(host, event)
        self.in_flight.append(landing)
        while self.in_flight and (len(self.in_flight) > self.max_in_flight or self.in_flight[0].done()):
            self.in_flight.popleft().wait()
        return landing

    def finish(self) -> None:
        """Waits for every queued copy and closes the arena (its spare slab is dropped)."""
        while self.in_flight:
            self.in_flight.popleft().wait()
        self.arena.close()
