"""Streaming ingest: chunks of visual tokens -> KV blocks, at a cost linear in video length.

Each chunk is prefilled into the language model attending only to

* the attention sinks -- the prompt prefix (StreamingLLM, Xiao et al. 2024),
* a recurrent memory -- a few mean-pooled KV entries of every chunk that left the window, a
  training-free, KV-level stand-in for the recurrent memory of VideoLLaMB (Wang et al. 2024) and
  VideoStreaming (Qian et al. 2024), capped at ``recurrent_capacity`` entries (FIFO),
* the last ``window_chunks`` chunks -- ReKV's sliding-window video encoding (Di et al. 2025) and
  InfLLM's local window (Xiao et al. 2024),

never the whole history. The chunk's own KV then leaves the GPU as a :class:`KVBlock`. GPU memory is
therefore bounded by ``sinks + recurrent_capacity + (window_chunks + 1) * chunk`` entries whatever
the video's length; host memory grows linearly (one block per chunk).

On CUDA a block leaves the GPU without stopping the CPU (:mod:`vidqa.memory.offload`): its KV, its
summary keys and its grid means are copied on a side stream into pinned slabs while the next chunk
is queued. Until its copy has landed a block's summary and grid means stay on the device (the
block is swapped to the host copies as soon as they have, at the latest in :meth:`finish`); its KV
waits for its copy when first read (:class:`~vidqa.memory.storage.StoredKV`).

With ``window_chunks`` >= the number of chunks and no recurrent memory, every chunk sees the full
history and ingest is exactly a one-shot prefill of the same sequence (tested).
"""

from __future__ import annotations

from collections import deque

import torch
from transformers import DynamicCache

from vidqa.config import MemoryConfig
from vidqa.memory.blocks import GridRecord, KVBlock, VideoMemory
from vidqa.memory.cache import cache_from, cache_length, cache_tail
from vidqa.memory.offload import HostOffload, Landing
from vidqa.memory.storage import StoredKV
from vidqa.tokens import VisualTokens
from vidqa.vlm.base import ChunkLayout, VLMAdapter


class StreamingIngest:
    """Builds a :class:`VideoMemory` chunk by chunk: ``add_chunk`` for each, then ``finish``.

    ``offload``: how blocks reach the host; by default asynchronous on CUDA
    (:meth:`HostOffload.cuda`) and none on CPU, where KV already is host memory.
    """

    def __init__(self, adapter: VLMAdapter, config: MemoryConfig, offload: HostOffload | None = None):
        self.adapter = adapter
        self.config = config
        if offload is None and adapter.device.type == "cuda":
            offload = HostOffload.cuda(adapter.device)
        self.offload = offload
        self.arriving: deque[tuple[Landing, KVBlock]] = deque()  # blocks whose summary is on its way
        ids = adapter.tokenize(adapter.prompt_prefix())
        cache = DynamicCache()
        adapter.forward(adapter.embed_ids(ids), adapter.text_positions(len(ids), 0), cache)
        self.sink_keys, self.sink_values = cache_tail(cache, len(ids))
        self.position = len(ids)
        self.blocks: list[KVBlock] = []
        # (keys, values) [L, Hkv, n, Dh] of the chunks in the window, on the device, and their
        # visual mask [n] (host).
        self.window: deque[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = deque()
        self.recurrent_keys: deque[torch.Tensor] = deque()  # each [L, Hkv, 1, Dh]
        self.recurrent_values: deque[torch.Tensor] = deque()
        self.peak_context = 0

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
        lo, hi = len(open_ids), len(open_ids) + len(tokens)
        visual[lo:hi] = True

        cache = self._context()
        self.peak_context = max(self.peak_context, cache_length(cache) + embeds.shape[0])
        a.forward(embeds, pos, cache, logits_for="hidden")
        keys, values = cache_tail(cache, embeds.shape[0])
        del cache

        bits, group = self.config.kv_bits, self.config.group_size
        block = KVBlock(
            keys=StoredKV.pack(keys, bits, group, offload=self.offload),
            values=StoredKV.pack(values, bits, group, offload=self.offload),
            visual=visual,
            # the visual keys are a slice: a mask on the device would cost a host sync
            summary=(keys[:, :, lo:hi] if len(tokens) else keys).float().mean(dim=2),
            start=self.position,
            end=after + len(close_ids) + n_extra,
            t_start=float(layout.t0),
            t_end=float(t_end),
            frames=torch.unique(tokens.frame).cpu(),
            tokens_before_reduction=layout.num_tokens,
            grids=GridRecord.of(tokens),
        )
        self.blocks.append(block)
        if self.offload is not None:
            self.arriving.append((self.offload.copy([block.summary, block.grids.embeds]), block))
            self._settle(wait=False)
        self.position = block.end
        self._slide(keys, values, visual)
        return block

    def _settle(self, wait: bool) -> None:
        """Swaps blocks whose summary and grid means have landed to the host copies (all of them,
        waiting, with ``wait``), oldest first."""
        while self.arriving and (wait or self.arriving[0][0].done()):
            landing, block = self.arriving.popleft()
            block.summary, block.grids.embeds = landing.wait()

    def _slide(self, keys, values, visual) -> None:
        """Pushes the new chunk into the window; chunks leaving it feed the recurrent memory."""
        self.window.append((keys, values, visual))
        while len(self.window) > self.config.window_chunks:
            k, v, vis = self.window.popleft()
            for sk, sv in _summaries(k, v, vis, self.config.recurrent_tokens):
                self.recurrent_keys.append(sk)
                self.recurrent_values.append(sv)
            while len(self.recurrent_keys) > self.config.recurrent_capacity:
                self.recurrent_keys.popleft()
                self.recurrent_values.popleft()

    def finish(self, model: str, video: dict, config_key: str, stats: dict) -> VideoMemory:
        """The memory, every block on the host (waits for the copies still on their way)."""
        self.window.clear()
        stats = {**stats, "peak_context_tokens": self.peak_context}
        if self.offload is not None:
            self.offload.finish()
            self._settle(wait=True)
            # pinned bytes the blocks' slabs hold, against the memory's host_bytes
            stats["host_reserved_bytes"] = self.offload.arena.reserved_bytes
            self.offload = None  # from now on the slabs live as long as the blocks cut from them
        return VideoMemory(
            sink_keys=self.sink_keys.cpu(), sink_values=self.sink_values.cpu(),
            blocks=self.blocks, next_position=self.position, model=model, video=video,
            config_key=config_key, stats=stats,
        )


def _summaries(keys, values, visual, count: int):
    """``count`` mean-pooled (key, value) entries ``[L, Hkv, 1, Dh]`` over contiguous groups of the
    chunk's visual tokens (in time order: the first group is the chunk's start). ``visual``: the
    host mask ``[n]``; the indices reach the device without a host sync."""
    if count == 0:
        return []
    idx = visual.nonzero().flatten()
    if idx.numel() == 0:
        return []
    out = []
    for g in torch.tensor_split(idx, min(count, idx.numel())):
        g = g.to(keys.device, non_blocking=True)
        out.append((keys[:, :, g].mean(dim=2, keepdim=True), values[:, :, g].mean(dim=2, keepdim=True)))
    return out

