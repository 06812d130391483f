"""`KVBlock` and `VideoMemory`: what ingest produces and every question reads.

A block is the language model's KV of one chunk of video (its timestamp text, vision markers and
visual tokens) for every layer, kept on the host, plus what retrieval needs without touching the
KV itself: a summary key per layer and KV head (the mean of the block's visual keys, as InfLLM's
representative keys and ReKV's per-frame mean keys), the block's time span and its position range.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from vidqa.memory.storage import StoredKV


@dataclass
class KVBlock:
    """KV of one chunk: ``keys``/``values`` ``[L, Hkv, n, Dh]`` at rest.

    ``visual``: bool ``[n]``, which entries are visual tokens (the rest is prompt text, protected from
    compression); ``summary``: float32 ``[L, Hkv, Dh]``; ``start``/``end``: sequence positions the
    chunk occupies (``end`` exclusive, = where the next chunk starts); ``t_start``/``t_end``:
    seconds covered; ``frames``: sampled-frame indices with at least one surviving token.
    """

    keys: StoredKV
    values: StoredKV
    visual: torch.Tensor
    summary: torch.Tensor
    start: int
    end: int
    t_start: float
    t_end: float
    frames: torch.Tensor
    tokens_before_reduction: int

    @property
    def num_tokens(self) -> int:
        return int(self.visual.numel())

    @property
    def num_visual(self) -> int:
        return int(self.visual.sum())

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + self.values.nbytes


@dataclass
class VideoMemory:
    """The ingested video. ``sink_keys``/``sink_values`` ``[L, Hkv, S, Dh]`` hold the prompt prefix
    (system prompt + opening of the user turn), kept in every context as attention sinks
    (StreamingLLM, Xiao et al. 2024). ``next_position`` is where text after the video starts."""

    sink_keys: torch.Tensor
    sink_values: torch.Tensor
    blocks: list[KVBlock]
    next_position: int
    model: str
    video: dict = field(default_factory=dict)  # path, sha256, duration, fps, frames sampled
    config_key: str = ""
    stats: dict = field(default_factory=dict)  # timings, token counts

    @property
    def num_visual_tokens(self) -> int:
        return sum(b.num_visual for b in self.blocks)

    @property
    def host_bytes(self) -> int:
        sink = self.sink_keys.numel() * self.sink_keys.element_size() * 2
        return sink + sum(b.nbytes for b in self.blocks)

    def spans(self, indices) -> list[tuple[float, float]]:
        """Time spans (s) of the given blocks, consecutive blocks joined into one span."""
        spans: list[list[float]] = []
        last = None
        for i in sorted(set(int(i) for i in indices)):
            b = self.blocks[i]
            if last is not None and i == last + 1:
                spans[-1][1] = b.t_end
            else:
                spans.append([b.t_start, b.t_end])
            last = i
        return [(round(s, 3), round(e, 3)) for s, e in spans]
