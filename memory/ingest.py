"""Streaming ingest: chunks of visual tokens -> KV blocks, at a cost linear in video length.

Each chunk is prefilled into the language model attending only to

* the attention sinks -- the prompt prefix (StreamingLLM, Xiao et al. 2024),
* a recurrent memory -- a few mean-pooled KV entries of every chunk that left the window, a
  training-free, KV-level stand-in for the recurrent memory of VideoLLaMB (Wang et al. 2024) and
  VideoStreaming (Qian et al. 2024), capped at ``recurrent_capacity`` entries (FIFO),
* the last ``window_chunks`` chunks -- ReKV's sliding-window video encoding (Di et al. 2025) and
  InfLLM's local window (Xiao et al. 2024),

never the whole history. The chunk's own KV then leaves the GPU as a :class:`KVBlock`. GPU memory is
therefore bounded by ``sinks + recurrent_capacity + (window_chunks + 1 + OFFLOAD_QUEUE) * chunk``
entries whatever the video's length; host memory grows linearly (one block per chunk).

Offload runs in one background thread (on its own CUDA stream when there is one): quantizing a
chunk's KV and copying it to the host overlaps the next chunks' vision tower and prefill instead
of stalling them. Writing fresh host pages is the slow part of that copy (an hour of 7B KV took
~9 s on the lent H200, at ~1.5 GB/s); the copy goes through one reused pinned buffer
(:class:`~vidqa.memory.storage.HostStaging`) so that it does not hold the driver's pageable-copy
path the main thread needs for the frames. The GPU never waits for it unless ``OFFLOAD_QUEUE``
chunks are still pending. ``finish`` waits for the last ones and re-raises any error of the thread.

With ``window_chunks`` >= the number of chunks and no recurrent memory, every chunk sees the full
history and ingest is exactly a one-shot prefill of the same sequence (tested).
"""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

import torch
from transformers import DynamicCache

from vidqa.config import MemoryConfig
from vidqa.memory.blocks import GridRecord, KVBlock, VideoMemory
from vidqa.memory.cache import cache_from, cache_length, cache_tail
from vidqa.memory.storage import HostStaging, StoredKV
from vidqa.tokens import VisualTokens
from vidqa.vlm.base import ChunkLayout, VLMAdapter


OFFLOAD_QUEUE = 3  # chunks whose KV may wait on the GPU for the offload thread
# Chunks the host may queue on the GPU beyond the one running. Without a bound the host can run
# ahead until CUDA's launch queue is full and then block inside a launch holding the interpreter
# lock, which the decoder threads need (on the lent H200 an hour's ingest waited seconds for frames);
# waiting on an event instead releases the lock. Its effect alone has not been measured.
AHEAD_CHUNKS = 1


class StreamingIngest:
    """Builds a :class:`VideoMemory` chunk by chunk: ``add_chunk`` for each, then ``finish``.

    ``offload_wait_s``: seconds the caller spent waiting for the offload thread (a full queue, and
    the last blocks in ``finish``)."""

    def __init__(self, adapter: VLMAdapter, config: MemoryConfig):
        self.adapter = adapter
        self.config = config
        ids = adapter.tokenize(adapter.prompt_prefix())
        cache = DynamicCache()
        adapter.forward(adapter.embed_ids(ids), adapter.text_positions(len(ids), 0), cache)
        self.sink_keys, self.sink_values = cache_tail(cache, len(ids))
        self.position = len(ids)
        self.blocks: list[KVBlock] = []
        # (keys, values) [L, Hkv, n, Dh] of the chunks in the window, on the device, with the range of
        # their visual entries.
        self.window: deque[tuple[torch.Tensor, torch.Tensor, tuple[int, int]]] = deque()
        self.recurrent_keys: deque[torch.Tensor] = deque()  # each [L, Hkv, 1, Dh]
        self.recurrent_values: deque[torch.Tensor] = deque()
        self.peak_context = 0
        self._offloader = ThreadPoolExecutor(1, thread_name_prefix="vidqa-offload")
        self._pending: deque[Future] = deque()
        self._stream = torch.cuda.Stream(adapter.device) if adapter.device.type == "cuda" else None
        self._staging = HostStaging() if self._stream is not None else None
        self._queued: deque = deque()  # an event after each queued chunk's prefill (CUDA only)
        self.offload_wait_s = 0.0

    def _context(self):
        keys = [self.sink_keys, *self.recurrent_keys, *(k for k, _, _ in self.window)]
        values = [self.sink_values, *self.recurrent_values, *(v for _, v, _ in self.window)]
        return cache_from(torch.cat(keys, dim=2), torch.cat(values, dim=2))

    def add_chunk(self, tokens: VisualTokens, layout: ChunkLayout, t_end: float) -> KVBlock:
        """Prefills one chunk (reduced ``tokens`` of an unreduced ``layout``) and stores its KV.

        ``t_end``: end (s) of the time the chunk covers, for evidence spans.
        """
        a = self.adapter
        open_ids, close_ids = a.tokenize(a.chunk_open(layout.t0)), a.tokenize(a.chunk_close())
        extra = a.chunk_close_embeds()
        vis_start = self.position + len(open_ids)
        after = vis_start + layout.extent
        parts = [a.embed_ids(open_ids), tokens.embeds.to(a.device, a.dtype), a.embed_ids(close_ids)]
        positions = [a.text_positions(len(open_ids), self.position),
                     a.visual_positions(tokens, layout, vis_start),
                     a.text_positions(len(close_ids), after)]
        n_extra = 0
        if extra is not None:
            n_extra = extra.shape[0]
            parts.append(extra.to(a.device, a.dtype))
            positions.append(a.text_positions(n_extra, after + len(close_ids)))
        embeds, pos = torch.cat(parts), torch.cat(positions, dim=1)
        visual = torch.zeros(embeds.shape[0], dtype=torch.bool)
        first_visual = len(open_ids)  # the visual entries are one contiguous run: slices, never a mask
        visual_range = (first_visual, first_visual + len(tokens))
        visual[visual_range[0]:visual_range[1]] = True

        cache = self._context()
        self.peak_context = max(self.peak_context, cache_length(cache) + embeds.shape[0])
        a.forward(embeds, pos, cache, logits_for="hidden")
        keys, values = cache_tail(cache, embeds.shape[0])
        del cache

        block = KVBlock(
            keys=None,  # these three are filled in by the offload thread (_store)
            values=None,
            summary=None,
            visual=visual,
            start=self.position,
            end=after + len(close_ids) + n_extra,
            t_start=float(layout.t0),
            t_end=float(t_end),
            frames=torch.unique(tokens.frame).cpu(),
            tokens_before_reduction=layout.num_tokens,
            grids=None,
        )
        self.blocks.append(block)
        self.position = block.end
        # Nothing here waits for the GPU (no host copy, no boolean mask): the host goes on to the next
        # chunk's frames and vision tower while the GPU still runs this prefill.
        self._offload(block, keys, values, tokens, visual_range)
        self._slide(keys, values, visual_range)
        return block

    def _offload(self, block: KVBlock, keys: torch.Tensor, values: torch.Tensor, tokens: VisualTokens,
                 visual_range: tuple[int, int]) -> None:
        """Queues the packing of ``keys``/``values`` and the block's summaries into ``block``; waits
        while the queue is full."""
        ready = None
        if self._stream is not None:
            ready = torch.cuda.Event()
            ready.record()  # the prefill that wrote them, on the caller's stream
            self._queued.append(ready)
            while len(self._queued) > AHEAD_CHUNKS:
                self._queued.popleft().synchronize()  # the chunk before this one (lock released)
        self._pending.append(self._offloader.submit(self._store, block, keys, values, tokens, visual_range, ready))
        while len(self._pending) > OFFLOAD_QUEUE:
            self._wait_oldest()

    def _describe(self, block: KVBlock, keys: torch.Tensor, tokens: VisualTokens, visual_range) -> None:
        """The block's question-agnostic summaries, on the host: its mean (visual) key and its grids."""
        lo, hi = visual_range
        visual_keys = keys[:, :, lo:hi]  # [L, Hkv, n_visual, Dh]
        block.summary = (visual_keys if hi > lo else keys).float().mean(dim=2).cpu()
        block.grids = GridRecord.of(tokens, visual_keys, self.config.distinct_keys)

    def _store(self, block: KVBlock, keys: torch.Tensor, values: torch.Tensor, tokens: VisualTokens,
               visual_range, ready) -> None:
        bits, group = self.config.kv_bits, self.config.group_size
        if self._stream is None:
            self._describe(block, keys, tokens, visual_range)
            block.keys, block.values = StoredKV.pack(keys, bits, group), StoredKV.pack(values, bits, group)
            return
        with torch.cuda.stream(self._stream):
            self._stream.wait_event(ready)
            # The caller may drop its references (the window slides on) while this stream still reads
            # them: the allocator must not hand their memory out before this stream is done.
            keys.record_stream(self._stream)
            values.record_stream(self._stream)
            tokens.embeds.record_stream(self._stream)
            self._describe(block, keys, tokens, visual_range)
            block.keys = StoredKV.pack(keys, bits, group, to_host=self._staging)
            block.values = StoredKV.pack(values, bits, group, to_host=self._staging)
            self._stream.synchronize()  # nothing of this stream is pending when the references drop

    def _wait_oldest(self) -> None:
        t0 = time.perf_counter()
        try:
            self._pending.popleft().result()
        finally:
            self.offload_wait_s += time.perf_counter() - t0

    def close(self) -> None:
        """Waits for pending offloads (errors re-raised) and stops the thread."""
        try:
            while self._pending:
                self._wait_oldest()
        finally:
            self._offloader.shutdown(wait=True, cancel_futures=True)

    def _slide(self, keys, values, visual_range) -> None:
        """Pushes the new chunk into the window; chunks leaving it feed the recurrent memory."""
        self.window.append((keys, values, visual_range))
        while len(self.window) > self.config.window_chunks:
            k, v, vis = self.window.popleft()
            for sk, sv in _summaries(k, v, vis, self.config.recurrent_tokens):
                self.recurrent_keys.append(sk)
                self.recurrent_values.append(sv)
            while len(self.recurrent_keys) > self.config.recurrent_capacity:
                self.recurrent_keys.popleft()
                self.recurrent_values.popleft()

    def finish(self, model: str, video: dict, config_key: str, stats: dict) -> VideoMemory:
        self.close()
        self.window.clear()
        stats = {**stats, "offload_wait_s": self.offload_wait_s}
        return VideoMemory(
            sink_keys=self.sink_keys.cpu(), sink_values=self.sink_values.cpu(),
            blocks=self.blocks, next_position=self.position, model=model, video=video,
            config_key=config_key, stats={**stats, "peak_context_tokens": self.peak_context},
        )


def _summaries(keys, values, visual_range: tuple[int, int], count: int):
    """``count`` mean-pooled (key, value) entries ``[L, Hkv, 1, Dh]`` over contiguous groups of the
    chunk's visual entries ``visual_range`` (in time order: the first group is the chunk's start)."""
    lo, hi = visual_range
    if count == 0 or hi <= lo:
        return []
    groups = torch.tensor_split(torch.arange(lo, hi), min(count, hi - lo))
    return [(keys[:, :, int(g[0]):int(g[-1]) + 1].mean(dim=2, keepdim=True),
             values[:, :, int(g[0]):int(g[-1]) + 1].mean(dim=2, keepdim=True)) for g in groups]
