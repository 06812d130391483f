"""Token merging within each temporal grid (ToMe, Bolya et al. ICLR 2023), before the LLM as in AIM
(Zhong et al. 2024, "a 7-fold reduction in FLOPs").

Tokens are merged in groups: one temporal grid (``window=1``) or ``window`` consecutive grids (grid
``t`` belongs to group ``t // window``, so a static background also merges across time). Set A of the
matching is a checkerboard in space and time (a token's rank among its grid's remaining tokens plus
``t``, even), so each token's spatial neighbours and its twin in the next grid are in the other set;
for one grid this is ToMe's alternating split. Each group
keeps its share of the running quota (:class:`~vidqa.tokenreduce.counts.Quota`: floor or ceil of
``keep_ratio * n``, at least one token, the whole video exactly ``round(keep_ratio * N)`` whenever
``keep_ratio * n >= 1``) by rounds of bipartite soft matching
(:func:`~vidqa.tokenreduce.merge.bipartite_merge`) until the quota is met. A merged token keeps its
destination's frame/time/grid and carries the summed ``size``, so ``sum(size * embeds)`` of a group is
unchanged and attention can be re-weighted by size (proportional attention).

Streaming: the only state is the quota's two counts, so chunk-by-chunk equals whole whenever chunks
hold whole groups (always for ``window=1``; for ``window > 1`` when chunk boundaries fall on multiples
of ``window`` grids -- a group split by a chunk boundary is merged as two groups).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vidqa.errors import ConfigError
from vidqa.tokenreduce.base import Reducer, check_ratio, register
from vidqa.tokenreduce.counts import Quota
from vidqa.tokenreduce.merge import bipartite_merge
from vidqa.tokens import VisualTokens


@register("tome")
@dataclass
class ToMeReducer(Reducer):
    keep_ratio: float = 0.5
    window: int = 1

    def __post_init__(self):
        check_ratio(self.keep_ratio)
        if self.window < 1:
            raise ConfigError(f"tome window must be >= 1 grids, got {self.window}")

    def initial_state(self) -> dict:
        return {"quota": Quota(self.keep_ratio, minimum=1)}

    def reduce(self, tokens: VisualTokens, context: dict, state: dict) -> VisualTokens:
        dev = tokens.embeds.device
        window = tokens.grid[:, 0] // self.window
        kept_index, embeds, sizes = [], [], []
        for w in torch.unique(window):
            group = (window == w).nonzero().flatten().to(dev)
            target = state["quota"].take(group.numel())
            local = torch.arange(group.numel(), device=dev)
            x, size = tokens.embeds[group], tokens.size[group.to(tokens.size.device)]
            t = tokens.grid[group.to(tokens.grid.device), 0].to(dev)
            while x.shape[0] > target:
                kept, x, size = bipartite_merge(x, size, x.shape[0] - target, _checkerboard(t[local]))
                local = local[kept]
            kept_index.append(group[local])
            embeds.append(x)
            sizes.append(size)
        index = torch.cat(kept_index)
        if index.numel() == len(tokens):
            return tokens
        out = tokens.select(index.cpu())  # metadata of the destinations, original order
        order = torch.argsort(index)  # groups are contiguous in time, but sort to be sure
        return out.replace(embeds=torch.cat(embeds)[order], size=torch.cat(sizes)[order.to(tokens.size.device)])


def _checkerboard(t: torch.Tensor) -> torch.Tensor:
    """Set A for tokens of grids ``t [n]`` (sorted): rank within the grid plus ``t`` is even."""
    start = torch.searchsorted(t, t)  # index of the grid's first token
    rank = torch.arange(t.numel(), device=t.device) - start
    return (rank + t) % 2 == 0
