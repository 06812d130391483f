"""`KVBlock` and `VideoMemory`: what ingest produces and every question reads.

A block is the language model's KV of one chunk of video (its timestamp text, vision markers and
visual tokens) for every layer, kept on the host, plus what retrieval needs without touching the
KV itself: a summary key per layer and KV head (the mean of the block's visual keys, as InfLLM's
representative keys), the block's time span and its position range, and a :class:`GridRecord` -- per
temporal grid its mean visual key (ReKV's per-frame mean keys, what retrieval scores) and what the
question-aware budget scores at ask time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from vidqa.memory.storage import StoredKV
from vidqa.tokens import VisualTokens


@dataclass
class GridRecord:
    """Question-agnostic record of the temporal grids (frame groups) of one block, kept at ingest so
    that a question can share a visual-token budget between grids without the block's tokens.

    ``t`` int64 ``[G]``: the grids' global indices (ascending); ``frame`` int64 ``[G]`` / ``time``
    float64 ``[G]``: index and time (s) of each grid's first surviving frame; ``embeds`` float32
    ``[G, D]``: each grid's mean visual token (as the embedding scorer means a grid's tokens);
    ``entry_t`` int64 ``[num_visual]``: the grid ``t`` of each visual KV entry, in entry order;
    ``segment_starts``: grid ``t`` of the segment starts the temporal reducer found in this chunk;
    ``keys`` float32 ``[G, L, Hkv, Dh]``: each grid's mean visual key per layer and KV head, the
    representatives block retrieval scores (ReKV's per-frame mean keys rather than one mean per block:
    :mod:`vidqa.memory.retrieve`). About ``4 (D + L Hkv Dh)`` bytes per grid plus 8 per token, against
    tens of KiB of KV per token.
    """

    t: torch.Tensor
    frame: torch.Tensor
    time: torch.Tensor
    embeds: torch.Tensor
    entry_t: torch.Tensor
    segment_starts: list[int] = field(default_factory=list)
    keys: torch.Tensor | None = None  # None for records built without the KV (hand-made blocks)

    @staticmethod
    def of(tokens: VisualTokens, visual_keys: torch.Tensor | None = None) -> "GridRecord":
        """The record of a chunk's (reduced) tokens, in the order ingest stores them; with the chunk's
        ``visual_keys`` ``[L, Hkv, num_visual, Dh]`` (same order), also each grid's mean key."""
        groups = tokens.frame_groups()
        # tokens keep frame-major order, so a grid's first token carries its first frame
        first = torch.tensor([int(g[0]) for g in groups], dtype=torch.long)
        means = [tokens.embeds[g.to(tokens.embeds.device)].float().mean(0) for g in groups]
        record = GridRecord(
            t=tokens.grid[first, 0].cpu().long(),
            frame=tokens.frame[first].cpu().long(),
            time=tokens.time[first].cpu().double(),
            embeds=torch.stack(means).cpu() if means else torch.zeros(0, tokens.dim),
            entry_t=tokens.grid[:, 0].cpu().long().contiguous(),  # a copy, not a view of the grid
            segment_starts=[int(s) for s in tokens.extra.get("segment_starts", [])],
        )
        if visual_keys is not None:
            record.keys = record.mean_keys(visual_keys)
        return record

    @property
    def entry_grid(self) -> torch.Tensor:
        """The row in ``t`` of each visual entry's grid, int64 ``[num_visual]``."""
        return torch.searchsorted(self.t, self.entry_t)

    @property
    def counts(self) -> torch.Tensor:
        """Visual entries stored per grid, int64 ``[G]``."""
        return torch.bincount(self.entry_grid, minlength=self.t.numel())

    def mean_keys(self, keys: torch.Tensor) -> torch.Tensor:
        """The block's visual ``keys [L, Hkv, num_visual, Dh]`` (entry order) averaged per grid ->
        float32 ``[G, L, Hkv, Dh]`` on the host."""
        owner = self.entry_grid.to(keys.device)
        sums = torch.zeros(*keys.shape[:2], self.t.numel(), keys.shape[-1], device=keys.device, dtype=torch.float32)
        sums.index_add_(2, owner, keys.float())
        counts = self.counts.clamp(min=1).to(sums.device, sums.dtype)
        return (sums / counts.view(1, 1, -1, 1)).permute(2, 0, 1, 3).contiguous().cpu()


@dataclass
class KVBlock:
    """KV of one chunk: ``keys``/``values`` ``[L, Hkv, n, Dh]`` at rest.

    ``visual``: bool ``[n]``, which entries are visual tokens (the rest is prompt text, protected from
    compression); ``summary``: float32 ``[L, Hkv, Dh]``; ``start``/``end``: sequence positions the
    chunk occupies (``end`` exclusive, = where the next chunk starts); ``t_start``/``t_end``:
    seconds covered; ``frames``: sampled-frame indices with at least one surviving token; ``grids``:
    the per-grid record the question-aware budget reads (:class:`GridRecord`).
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
    grids: GridRecord | None = None  # None only for blocks built by hand (no question-aware budget)

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
    # What retrieval derives from the blocks once per memory (not saved; rebuilt after a load).
    retrieval_cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def num_visual_tokens(self) -> int:
        return sum(b.num_visual for b in self.blocks)

    @property
    def segment_starts(self) -> list[int]:
        """Grid ``t`` of every segment start found at ingest, in time order (all chunks)."""
        return [s for b in self.blocks if b.grids is not None for s in b.grids.segment_starts]

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
