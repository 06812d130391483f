"""Progressive spatial pooling: every ``full_every``-th temporal grid keeps full resolution, the
others are 2x2 average-pooled (size-weighted) -- the Visual Context Window Extension recipe (Ye et
al. 2024, "reduces memory usage by approximately 45%"), as also done by SlowFast-LLaVA.

A pooled token keeps the metadata of the block's top-left token (its position in the grid) and
carries the block's total size. Whether a grid is pooled depends only on its global index, so
chunk-by-chunk equals whole.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vidqa.errors import ConfigError
from vidqa.tokenreduce.base import Reducer, register
from vidqa.tokens import VisualTokens


@register("pool")
@dataclass
class PoolReducer(Reducer):
    full_every: int = 4

    def __post_init__(self):
        if self.full_every < 1:
            raise ConfigError(f"full_every must be >= 1, got {self.full_every}")

    def reduce(self, tokens: VisualTokens, context: dict) -> VisualTokens:
        if self.full_every == 1:
            return tokens
        keep = torch.zeros(len(tokens), dtype=torch.bool)
        embeds = tokens.embeds.float().clone()
        sizes = tokens.size.clone().float()
        for idx in tokens.frame_groups():
            if int(tokens.grid[idx[0], 0]) % self.full_every == 0:
                keep[idx] = True
                continue
            block = (tokens.grid[idx, 1] // 2) * 100_000 + tokens.grid[idx, 2] // 2
            for b in torch.unique(block):
                members = idx[block == b]
                head = members[0]  # top-left: smallest (h, w) in row-major order
                w = tokens.size[members].float()
                embeds[head] = (tokens.embeds[members].float() * w[:, None]).sum(0) / w.sum()
                sizes[head] = w.sum()
                keep[head] = True
        out = tokens.replace(embeds=embeds.to(tokens.embeds.dtype), size=sizes.to(tokens.size.dtype))
        return out.select(keep)
