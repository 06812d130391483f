"""The question-aware visual-token budget over a stored memory (QuoTA, Luo et al. 2025), at ask time.

Questions are answered over stored KV, not tokens, so the budget reducer
(:class:`~vidqa.tokenreduce.budget.BudgetReducer`) runs here on what ingest kept for it: each block's
:class:`~vidqa.memory.blocks.GridRecord` (per temporal grid its mean visual token, first frame and
time; per visual KV entry its grid).

1. :class:`GridTable`: one summary token per stored grid, ``VisualTokens [G, D]`` (embeds: the grid's
   mean token; frame/time: its first frame; grid ``(t, 0, 0)``; ``extra["segment_starts"]``: the
   starts the temporal reducer found in every chunk), and how many KV entries each grid holds.
2. :func:`plan_budget`: the reducer's own groups (grids, or segments), frame scorer and share
   (:func:`~vidqa.tokenreduce.counts.allocate`): the question gets
   ``min(reducer.total(stored entries), memory token_budget)`` visual entries, shared in proportion
   to ``softmax(score / temperature)``, no group above what it holds, met exactly. With
   ``unit="segment"`` a segment is scored by the mean of its grids' means (each grid counts once,
   however many of its tokens ingest kept).
3. :meth:`BudgetPlan.choose`: inside a group the entries kept are those the question attends to
   most -- the retrieval score of :func:`~vidqa.memory.retrieve.score_keys` (InfLLM's
   representative-key score, Xiao et al. 2024) with every visual entry its own representative, over
   the last ``observation_window`` question queries (SnapKV's observation window, Li et al. 2024) --
   the best ``budget[g]`` of each group (:func:`~vidqa.tokenreduce.counts.top_per_group`). Entries
   are ranked by their keys because a memory keeps no token embeddings (the reducer's ``rank``
   applies to tokens), and the frame scorer must work from the stored grid means: a memory keeps no
   frames, so ``VideoQA`` refuses ``scorer="clip"`` (:func:`ask_budget`).

Keys keep the rotation of ingest, so dropping entries is all that happens: survivors keep their
positions. A block none of whose entries is kept is not brought back; a candidate block crosses to
the device twice (keys to rank, then keys and values to gather), so the device holds what is kept
plus one block at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vidqa.errors import ConfigError
from vidqa.memory.blocks import VideoMemory
from vidqa.memory.retrieve import score_keys
from vidqa.tokenreduce.budget import BudgetReducer
from vidqa.tokenreduce.counts import top_per_group
from vidqa.tokens import VisualTokens


@dataclass
class GridTable:
    """Every stored grid of a memory, in time order (block by block).

    ``tokens``: ``G`` summary tokens (see module docstring; ``size`` = entries each stands for);
    ``block`` int64 ``[G]``: the block holding each grid; ``capacity`` int64 ``[G]``: its visual KV
    entries; ``end`` float64 ``[G]``: when it ends (the next grid of its block starts, or the block
    ends); ``offset`` int64 ``[num_blocks]``: the first row of each block.
    """

    tokens: VisualTokens
    block: torch.Tensor
    capacity: torch.Tensor
    end: torch.Tensor
    offset: torch.Tensor

    @staticmethod
    def of(memory: VideoMemory) -> "GridTable":
        if any(b.grids is None for b in memory.blocks):
            raise ValueError("the question-aware budget needs the grid record of every block (ingest writes it)")
        records = [b.grids for b in memory.blocks]
        t = torch.cat([r.t for r in records])
        capacity = torch.cat([r.counts for r in records])
        sizes = torch.tensor([r.t.numel() for r in records], dtype=torch.long)
        # a grid lasts until the next grid of its block starts, the last one until the block ends
        ends = [torch.cat([r.time[1:], torch.tensor([b.t_end], dtype=torch.float64)])[:r.t.numel()]
                for r, b in zip(records, memory.blocks)]
        zero = torch.zeros_like(t)
        tokens = VisualTokens(
            embeds=torch.cat([r.embeds for r in records]), frame=torch.cat([r.frame for r in records]),
            time=torch.cat([r.time for r in records]), grid=torch.stack([t, zero, zero], 1),
            size=capacity.float(), extra={"segment_starts": memory.segment_starts})
        return GridTable(tokens, torch.repeat_interleave(torch.arange(len(records)), sizes), capacity,
                         torch.cat(ends), torch.cumsum(sizes, 0) - sizes)

    def entry_rows(self, memory: VideoMemory, i: int) -> torch.Tensor:
        """Row of every visual entry of block ``i``, int64 ``[num_visual]``."""
        return self.offset[i] + memory.blocks[i].grids.entry_grid

    def spans(self, rows: torch.Tensor) -> list[tuple[float, float]]:
        """Time spans (s) of the grids at ``rows``; grids next to each other join into one span."""
        spans: list[list[float]] = []
        last = None
        for r in sorted(set(rows.tolist())):
            if last is not None and r == last + 1:
                spans[-1][1] = float(self.end[r])
            else:
                spans.append([float(self.tokens.time[r]), float(self.end[r])])
            last = r
        return [(round(s, 3), round(e, 3)) for s, e in spans]


@dataclass
class BudgetPlan:
    """How many visual entries each group of grids gets: ``group`` int64 ``[G]`` (each row's group),
    ``budgets`` int64 ``[num_groups]`` (summing to ``total``), ``scores`` float32 ``[num_groups]``."""

    table: GridTable
    group: torch.Tensor
    budgets: torch.Tensor
    scores: torch.Tensor

    @property
    def total(self) -> int:
        return int(self.budgets.sum())

    def candidate_blocks(self) -> list[int]:
        """Blocks holding a grid of a group that gets entries, ascending."""
        funded = self.budgets[self.group] > 0
        return torch.unique(self.table.block[funded]).tolist()

    def choose(self, adapter, memory: VideoMemory, queries: list[torch.Tensor]) -> dict[int, torch.Tensor]:
        """Per block with kept entries: which of its visual entries are kept, as ascending int64
        indices among the block's visual entries (``0`` = its first visual entry).

        ``queries``: per layer ``[Hq, w, Dh]`` (the question's last ``w`` queries).
        """
        ranks, groups, owners, ordinals = [], [], [], []
        for i in self.candidate_blocks():
            block = memory.blocks[i]
            place = block.visual.nonzero().flatten().to(adapter.device)
            keys = block.keys.unpack(adapter.device, adapter.dtype)[:, :, place]
            ranks.append(score_keys(queries, keys.permute(2, 0, 1, 3)))  # each entry its own key
            groups.append(self.group[self.table.entry_rows(memory, i)])
            owners.append(torch.full((place.numel(),), i, dtype=torch.long))
            ordinals.append(torch.arange(place.numel()))
        kept = top_per_group(torch.cat(ranks), torch.cat(groups), self.budgets)
        owner, ordinal = torch.cat(owners)[kept], torch.cat(ordinals)[kept]
        return {i: ordinal[owner == i] for i in torch.unique(owner).tolist()}

    def spans(self, memory: VideoMemory, kept: dict[int, torch.Tensor]) -> list[tuple[float, float]]:
        """Time spans of the grids with kept entries (``kept`` as :meth:`choose` returns it)."""
        rows = [self.table.entry_rows(memory, i)[k] for i, k in kept.items()]
        return self.table.spans(torch.cat(rows))


def plan_budget(reducer: BudgetReducer, memory: VideoMemory, context: dict, token_budget: int) -> BudgetPlan | None:
    """The question's plan (module docstring, step 2), or ``None`` when the budget covers every stored
    visual entry (then nothing is dropped). ``context``: the reducer's (``question_embeds [Lq, D]``...)."""
    table = GridTable.of(memory)
    stored = int(table.capacity.sum())
    total = min(reducer.total(stored), token_budget)
    if total >= stored:
        return None
    groups = reducer.groups(table.tokens, context)
    capacity = torch.stack([table.capacity[g].sum() for g in groups])
    budgets, scores = reducer.share(table.tokens, groups, capacity, context, total)
    group = torch.empty(len(table.tokens), dtype=torch.long)
    for g, rows in enumerate(groups):
        group[rows] = g
    return BudgetPlan(table, group, budgets, scores)


def ask_budget(aware) -> BudgetReducer | None:
    """The budget reducer of a chain's question-aware part (``None``: none), checked for ask: one
    budget reducer at most, scoring from what a memory keeps (the embedding scorer)."""
    reducers = list(aware.reducers) if aware is not None else []
    if not reducers:
        return None
    if len(reducers) > 1 or not isinstance(reducers[0], BudgetReducer):
        raise ConfigError(f"ask applies one question-aware reducer (budget); got {', '.join(r.name for r in reducers)}")
    if reducers[0].scorer != "embedding":
        raise ConfigError("budget scorer=clip needs the video's frames, which a saved memory does not keep; "
                          "use scorer=embedding with ask")
    return reducers[0]
