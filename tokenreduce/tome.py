"""Spatial token merging within each temporal grid (ToMe, Bolya et al. ICLR 2023), merging
before the LLM as in AIM (Zhong et al. 2024, "a 7-fold reduction in FLOPs").

Each grid keeps exactly ``ceil(keep_ratio * n)`` tokens: bipartite soft matching
(:func:`vidqa.tokenreduce.merge.bipartite_merge`) is applied repeatedly until the target is met.
A merged token keeps its destination's metadata and carries the summed ``size``, so that
``sum(size * embedding)`` over the grid is unchanged. Per-grid, hence chunk-by-chunk equals whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from vidqa.tokenreduce.base import Reducer, check_ratio, register
from vidqa.tokenreduce.merge import bipartite_merge
from vidqa.tokens import VisualTokens


@register("tome")
@dataclass
class ToMeReducer(Reducer):
    keep_ratio: float = 0.5

    def __post_init__(self):
        check_ratio(self.keep_ratio)

    def reduce(self, tokens: VisualTokens, context: dict) -> VisualTokens:
        if self.keep_ratio >= 1:
            return tokens
        keep_index, embeds, sizes = [], [], []
        for idx in tokens.frame_groups():
            target = math.ceil(self.keep_ratio * idx.numel())
            local = torch.arange(idx.numel())
            x, size = tokens.embeds[idx], tokens.size[idx]
            while x.shape[0] > target:
                kept, x, size = bipartite_merge(x, size, x.shape[0] - target)
                local = local[kept]
            keep_index.append(idx[local])
            embeds.append(x)
            sizes.append(size)
        index = torch.cat(keep_index)
        out = tokens.select(index)  # metadata of the destinations, original order (sorted)
        order = torch.argsort(index)
        return out.replace(embeds=torch.cat(embeds)[order], size=torch.cat(sizes)[order])
