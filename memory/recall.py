"""Per-question recall: from a `VideoMemory` to the KV cache the question is answered over.

1. Score every block against the question (:mod:`.retrieve`; by default the attention its grids'
   representatives would draw). The question's queries come from a
   cheap pass of the question over the sinks and the newest blocks -- the same context a chunk
   sees during ingest -- captured from the attention layers' own projections; those of the last
   ``retrieval_window`` prompt tokens score (by default all of them), blended with the answer
   position's own scores when ``answer_weight`` > 0.
2. Keep the best blocks within the visual-token budget, bring them back to the device. With a
   question-aware budget reducer (QuoTA, :mod:`.budget`) the budget is shared between the grids of
   the whole video by their relevance instead, and only the chosen entries of each block come back
   (exactly ``min(reducer total, token_budget)`` visual entries; no block is forced in).
3. Positions: ``original`` keeps each block where ingest put it (ReKV); ``compact`` re-rotates the
   keys of each retrieved block so that the blocks sit next to each other after the sinks
   (InfLLM), which keeps 1-D RoPE models inside their trained range on long videos.
4. Optionally compress the retrieved visual KV per layer (:mod:`.compress`, LOOK-M).
5. Optionally prune in the LLM (``layer_keep``, PyramidDrop): deeper layers keep fewer visual
   entries, those the question's queries attend to most at that layer; layers then differ in
   length, so the answer is computed under :func:`vidqa.memory.attention.bottom_right_attention`.

With a budget that covers every block and ``compress_ratio = 1`` the result is exactly the KV
that a one-shot prefill of the whole sequence would hold (tested), with or without a budget reducer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from vidqa.config import MemoryConfig
from vidqa.memory.blocks import VideoMemory
from vidqa.memory.budget import plan_budget
from vidqa.memory.cache import cache_from
from vidqa.memory.compress import compress_layer
from vidqa.memory.retrieve import blend_shares, score_blocks, select_blocks
from vidqa.vlm.base import VLMAdapter


@dataclass
class Recall:
    """The context of one question: ``cache`` (sinks + retrieved blocks), where the question's
    first token goes (``next_position``), which blocks were used, how many visual entries the
    question attends to (per layer), the time ``spans`` (s) they cover and ``visual_grid`` int64
    ``[n]``: the grid ``t`` of each visual entry brought back (before per-layer compression; -1
    where a block has no grid record). ``scores``: the blocks' retrieval scores when they were
    scored, else the question-aware budget's group scores, else zeros."""

    cache: DynamicCache
    next_position: int
    blocks: list[int]
    visual_attended: int
    scores: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    uneven: bool = False  # layers hold different numbers of entries (in-LLM pruning)
    spans: list[tuple[float, float]] = field(default_factory=list)
    visual_grid: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))


def question_queries(adapter: VLMAdapter, memory: VideoMemory, question_embeds: torch.Tensor,
                     recent_blocks: int) -> list[torch.Tensor]:
    """Per-layer rotated queries ``[Hq, Lq, Dh]`` of the question over sinks + newest blocks."""
    dev = adapter.device
    recent = memory.blocks[-recent_blocks:] if recent_blocks else []
    keys = torch.cat([memory.sink_keys.to(dev)] + [b.keys.unpack(dev, adapter.dtype) for b in recent], dim=2)
    values = torch.cat([memory.sink_values.to(dev)] + [b.values.unpack(dev, adapter.dtype) for b in recent], dim=2)
    positions = adapter.text_positions(question_embeds.shape[0], memory.next_position)
    with adapter.capture_queries() as queries:
        adapter.forward(question_embeds, positions, cache_from(keys, values), logits_for="hidden")
    return list(queries)


def window_queries(queries: list[torch.Tensor], window: int) -> list[torch.Tensor]:
    """The per-layer queries ``[Hq, Lq, Dh]`` of the last ``window`` prompt tokens (0: all of them)."""
    return [q[:, -window:] for q in queries] if window else queries


def recall(adapter: VLMAdapter, memory: VideoMemory, question_embeds: torch.Tensor,
           config: MemoryConfig, budget=None, context: dict | None = None) -> Recall:
    """Builds the question's context (see module docstring). ``question_embeds`` ``[Lq, D]``: the
    question as the model reads it; ``budget``: a question-aware
    :class:`~vidqa.tokenreduce.budget.BudgetReducer` (or ``None``), with its ``context``."""
    dev, blocks = adapter.device, memory.blocks
    plan = plan_budget(budget, memory, context or {}, config.token_budget) if budget is not None else None
    everything_fits = plan is None and sum(b.num_visual for b in blocks) <= config.token_budget
    queries, scores = None, torch.zeros(len(blocks))
    schedule = config.layer_schedule()
    if not everything_fits or config.compress_ratio < 1 or schedule:
        queries = question_queries(adapter, memory, question_embeds, max(1, config.recent_blocks))
    budgeted = None  # under a budget plan: block -> which of its visual entries come back
    if plan is not None:
        budgeted = plan.choose(adapter, memory, [q[:, -config.observation_window:] for q in queries])
        chosen, scores = sorted(budgeted), plan.scores
    else:
        if queries is not None:
            scores = score_blocks(window_queries(queries, config.retrieval_window), blocks,
                                  memory.retrieval_cache, config.retrieval)
            if config.answer_weight > 0:
                answer = score_blocks(window_queries(queries, 1), blocks, memory.retrieval_cache, config.retrieval)
                scores = blend_shares(scores, answer, config.answer_weight)
        chosen = list(range(len(blocks))) if everything_fits else select_blocks(
            scores, blocks, config.token_budget, config.first_blocks, config.recent_blocks)

    keys, values, visual = [memory.sink_keys.to(dev)], [memory.sink_values.to(dev)], \
        [torch.zeros(memory.sink_keys.shape[2], dtype=torch.bool)]
    grids = []
    position = memory.sink_keys.shape[2] if config.positions == "compact" else None
    for i in chosen:
        b = blocks[i]
        k, v, vis = b.keys.unpack(dev, adapter.dtype), b.values.unpack(dev, adapter.dtype), b.visual
        grid = b.grids.entry_t if b.grids is not None else torch.full((b.num_visual,), -1, dtype=torch.long)
        if budgeted is not None:  # only the budget's visual entries of this block, and all its text
            entries = torch.sort(torch.cat([(~vis).nonzero().flatten(), vis.nonzero().flatten()[budgeted[i]]])).values
            grid = grid[budgeted[i]]
            k, v, vis = k[:, :, entries.to(dev)], v[:, :, entries.to(dev)], vis[entries]
        if position is not None:  # compact: this block now starts where the previous one ended
            k = adapter.rotate_keys(k, position - b.start)
            position += b.end - b.start
        keys.append(k)
        values.append(v)
        visual.append(vis)
        grids.append(grid)
    keys, values, visual = torch.cat(keys, dim=2), torch.cat(values, dim=2), torch.cat(visual)
    next_position = position if position is not None else memory.next_position
    spans = plan.spans(memory, budgeted) if plan is not None else memory.spans(chosen)

    n_visual = int(visual.sum())
    layer_keys, layer_values = list(keys), list(values)
    layer_visual = [visual.to(dev)] * len(layer_keys)  # which entries of each layer are visual
    if config.compress_ratio < 1 and n_visual:
        keep = math.ceil(config.compress_ratio * n_visual)
        window = config.observation_window
        for l in range(len(layer_keys)):
            layer_keys[l], layer_values[l], kept = compress_layer(
                keys[l], values[l], layer_visual[l], queries[l][:, -window:], keep)
            layer_visual[l] = layer_visual[l][kept]
        n_visual = keep
    uneven = False
    if schedule and n_visual:
        # PyramidDrop: deeper layers keep fewer visual entries (dropped, not merged, as in FastV).
        for l in range(len(layer_keys)):
            ratio = next((r for start, r in reversed(schedule) if l >= start), 1.0)
            if ratio < 1:
                layer_keys[l], layer_values[l], _ = compress_layer(
                    layer_keys[l], layer_values[l], layer_visual[l],
                    queries[l][:, -config.observation_window:], math.ceil(ratio * n_visual), merge=False)
                uneven = True
    return Recall(cache_from(layer_keys, layer_values), next_position, chosen, n_visual, scores, uneven=uneven,
                  spans=spans, visual_grid=torch.cat(grids) if grids else torch.zeros(0, dtype=torch.long))
