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
    :mod:`vidqa.memory.retrieve`); ``distinct_keys`` float32 ``[M, L, Hkv, Dh]`` with ``distinct_grid``
    int64 ``[M]`` (the row in ``t`` of each): per grid the few visual keys farthest from its mean
    (:meth:`most_distinct`), which retrieval scores beside the mean, because a small thing on screen
    (a few tokens of a grid) hardly moves the mean. About ``4 (D + (1 + m) L Hkv Dh)`` bytes per grid
    plus 8 per token, against tens of KiB of KV per token.
    """

    t: torch.Tensor
    frame: torch.Tensor
    time: torch.Tensor
    embeds: torch.Tensor
    entry_t: torch.Tensor
    segment_starts: list[int] = field(default_factory=list)
    keys: torch.Tensor | None = None  # None for records built without the KV (hand-made blocks)
    distinct_keys: torch.Tensor | None = None
    distinct_grid: torch.Tensor | None = None

    @staticmethod
    def of(tokens: VisualTokens, visual_keys: torch.Tensor | None = None, distinct: int = 0) -> "GridRecord":
        """The record of a chunk's (reduced) tokens, in the order ingest stores them; with the chunk's
        ``visual_keys`` ``[L, Hkv, num_visual, Dh]`` (same order), also each grid's mean key and its
        ``distinct`` most distinct keys."""
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
            means = record._grid_means(visual_keys)
            record.keys = means.permute(2, 0, 1, 3).contiguous().cpu()
            if distinct and visual_keys.shape[2]:
                record.distinct_keys, record.distinct_grid = record.most_distinct(visual_keys, means, distinct)
        return record

    @property
    def entry_grid(self) -> torch.Tensor:
        """The row in ``t`` of each visual entry's grid, int64 ``[num_visual]``."""
        return torch.searchsorted(self.t, self.entry_t)

    @property
    def counts(self) -> torch.Tensor:
        """Visual entries stored per grid, int64 ``[G]``."""
        return torch.bincount(self.entry_grid, minlength=self.t.numel())

    def _grid_means(self, keys: torch.Tensor) -> torch.Tensor:
        """float32 ``[L, Hkv, G, Dh]`` on ``keys``' device: each grid's mean of ``keys [L, Hkv, n, Dh]``."""
        owner = self.entry_grid.to(keys.device)
        sums = torch.zeros(*keys.shape[:2], self.t.numel(), keys.shape[-1], device=keys.device, dtype=torch.float32)
        sums.index_add_(2, owner, keys.float())
        counts = self.counts.clamp(min=1).to(sums.device, sums.dtype)
        return sums / counts.view(1, 1, -1, 1)

    def most_distinct(self, keys: torch.Tensor, means: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per grid, the ``count`` visual entries whose keys lie farthest from the grid's mean key (at
        most all but one of the grid's entries: the mean stands for the rest).

        ``keys [L, Hkv, n, Dh]`` in entry order, ``means [L, Hkv, G, Dh]`` (:meth:`_grid_means`). The
        distance is relative to the mean key's norm, averaged over layers and KV heads, so that no
        layer's scale dominates. Returns their keys float32 ``[M, L, Hkv, Dh]`` and grid rows int64
        ``[M]`` on the host, grid by grid.

        Why: the exp of a mean dot product is a lower bound on the mean exp (Jensen), loose exactly when
        one of the grid's tokens differs from the rest -- the needle. Keeping the outliers beside the
        mean, as ClusterKV (Liu et al. 2024) keeps several centroids per semantic cluster, lets
        retrieval see them question-agnostically and at ``count`` keys per grid.
        """
        owner = self.entry_grid.to(keys.device)
        centre = means[:, :, owner]  # [L, Hkv, n, Dh]
        dist = ((keys.float() - centre).norm(dim=-1) / centre.norm(dim=-1).clamp(min=1e-6)).mean(dim=(0, 1))
        # entries grouped by grid (stable), farthest first within each grid
        by_dist = torch.argsort(dist, descending=True, stable=True)
        order = by_dist[torch.argsort(owner[by_dist], stable=True)]
        sizes = torch.bincount(owner, minlength=self.t.numel())
        starts = torch.cumsum(sizes, 0) - sizes
        rank = torch.arange(order.numel(), device=keys.device) - starts[owner[order]]
        take = order[rank < (sizes[owner[order]] - 1).clamp(max=count)]
        picked = keys[:, :, take].float().permute(2, 0, 1, 3).contiguous().cpu()
        return picked, owner[take].cpu()


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
