"""Per-question recall: from a `VideoMemory` to the KV cache the question is answered over.

1. Score every block against the question (:mod:`.retrieve`). The question's queries come from a
   cheap pass of the question over the sinks and the newest blocks -- the same context a chunk
   sees during ingest -- captured from the attention layers' own projections.
2. Keep the best blocks within the visual-token budget, bring them back to the device.
3. Positions: ``original`` keeps each block where ingest put it (ReKV); ``compact`` re-rotates the
   keys of each retrieved block so that the blocks sit next to each other after the sinks
   (InfLLM), which keeps 1-D RoPE models inside their trained range on long videos.
4. Optionally compress the retrieved visual KV per layer (:mod:`.compress`, LOOK-M).
5. Optionally prune in the LLM (``layer_keep``, PyramidDrop): deeper layers keep fewer visual
   entries, those the question's queries attend to most at that layer; layers then differ in
   length, so the answer is computed under :func:`vidqa.memory.attention.uneven_attention`.

With a budget that covers every block and ``compress_ratio = 1`` the result is exactly the KV
that a one-shot prefill of the whole sequence would hold (tested).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from vidqa.config import MemoryConfig
from vidqa.memory.blocks import VideoMemory
from vidqa.memory.cache import cache_from
from vidqa.memory.compress import compress_layer
from vidqa.memory.retrieve import score_blocks, select_blocks
from vidqa.vlm.base import VLMAdapter


@dataclass
class Recall:
    """The context of one question: ``cache`` (sinks + retrieved blocks), where the question's
    first token goes (``next_position``), which blocks were used, and how many visual entries the
    question attends to (per layer)."""

    cache: DynamicCache
    next_position: int
    blocks: list[int]
    visual_attended: int
    scores: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    uneven: bool = False  # layers hold different numbers of entries (in-LLM pruning)


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


def recall(adapter: VLMAdapter, memory: VideoMemory, question_embeds: torch.Tensor,
           config: MemoryConfig) -> Recall:
    """Builds the question's context (see module docstring). ``question_embeds`` ``[Lq, D]``."""
    dev, blocks = adapter.device, memory.blocks
    everything_fits = sum(b.num_visual for b in blocks) <= config.token_budget
    queries, scores = None, torch.zeros(len(blocks))
    schedule = config.layer_schedule()
    if not everything_fits or config.compress_ratio < 1 or schedule:
        queries = question_queries(adapter, memory, question_embeds, max(1, config.recent_blocks))
        scores = score_blocks(queries, blocks)
    chosen = list(range(len(blocks))) if everything_fits else select_blocks(
        scores, blocks, config.token_budget, config.first_blocks, config.recent_blocks)

    keys, values, visual = [memory.sink_keys.to(dev)], [memory.sink_values.to(dev)], \
        [torch.zeros(memory.sink_keys.shape[2], dtype=torch.bool)]
    position = memory.sink_keys.shape[2] if config.positions == "compact" else None
    for i in chosen:
        b = blocks[i]
        k = b.keys.unpack(dev, adapter.dtype)
        if position is not None:  # compact: this block now starts where the previous one ended
            k = adapter.rotate_keys(k, position - b.start)
            position += b.end - b.start
        keys.append(k)
        values.append(b.values.unpack(dev, adapter.dtype))
        visual.append(b.visual)
    keys, values, visual = torch.cat(keys, dim=2), torch.cat(values, dim=2), torch.cat(visual)
    next_position = position if position is not None else memory.next_position

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
    return Recall(cache_from(layer_keys, layer_values), next_position, chosen, n_visual, scores, uneven=uneven)
