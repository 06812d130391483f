"""Progressive spatial pooling (Visual Context Window Extension, Ye et al. 2024, "reduces memory usage
by approximately 45%"; the slow/fast split of SlowFast-LLaVA, Xu et al. 2024): some temporal grids
keep full resolution, the others are average-pooled over ``factor x factor`` blocks.

Which grids stay full depends only on their global index ``t``:

* explicit: ``full_every=k`` keeps grids ``t % k == 0`` full;
* ``keep_ratio``-driven (``full_every=0``): a fraction ``f = (r - 1/factor^2) / (1 - 1/factor^2)`` of
  the grids stays full, spread evenly (grid ``t`` is full when ``floor(t f) > floor((t - 1) f)``, so
  grid 0 always is). The count is ``r * N`` up to the pooling of one grid (plus edge blocks of
  grids whose sides are not multiples of ``factor``) -- a pattern, not an exact budget; ``r`` must be
  at least ``1/factor^2``.

A pooled token is the size-weighted mean of its block, carries the block's total ``size``, and takes
the frame/time/grid of the block's top-left token (the first in row-major order): a real cell of the
grid, so its M-RoPE position stays an integer (a block centre would sit between cells). Grids or
blocks already thinned by an earlier reducer pool whatever is left of them. Stateless per grid, so
chunk by chunk equals whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from vidqa.errors import ConfigError
from vidqa.tokenreduce.base import Reducer, check_ratio, register
from vidqa.tokens import VisualTokens


@register("pool")
@dataclass
class PoolReducer(Reducer):
    keep_ratio: float = 0.5
    full_every: int = 0
    factor: int = 2

    def __post_init__(self):
        check_ratio(self.keep_ratio)
        if self.factor < 2:
            raise ConfigError(f"pool factor must be >= 2, got {self.factor}")
        if self.full_every < 0:
            raise ConfigError(f"pool full_every must be >= 0 (0: from keep_ratio), got {self.full_every}")
        floor = 1 / self.factor**2
        if self.full_every == 0 and self.keep_ratio < floor:
            raise ConfigError(f"pool with factor {self.factor} keeps at least {floor:g} of the tokens; "
                              f"got keep_ratio={self.keep_ratio} (raise factor or add tome)")

    def full_grids(self, t: torch.Tensor) -> torch.Tensor:
        """Bool ``[len(t)]``: which of the global grid indices ``t`` keep full resolution."""
        if self.full_every > 0:
            return t % self.full_every == 0
        floor = 1 / self.factor**2
        f = (self.keep_ratio - floor) / (1 - floor)
        t = t.double()
        return torch.floor(t * f + 1e-9) > torch.floor((t - 1) * f + 1e-9)

    def reduce(self, tokens: VisualTokens, context: dict, state: dict) -> VisualTokens:
        t = tokens.grid[:, 0]
        pooled = ~self.full_grids(t)
        if not bool(pooled.any()):
            return tokens
        # one id per (grid, block); full-resolution tokens get ids of their own
        blocks_w = math.ceil(max(tokens.grid_hw[1], int(tokens.grid[:, 2].max()) + 1) / self.factor)
        blocks_h = math.ceil(max(tokens.grid_hw[0], int(tokens.grid[:, 1].max()) + 1) / self.factor)
        block = (t * blocks_h + tokens.grid[:, 1] // self.factor) * blocks_w + tokens.grid[:, 2] // self.factor
        n, mdev = len(tokens), tokens.grid.device
        key = torch.where(pooled, block, -1 - torch.arange(n, device=mdev))
        _, group = torch.unique(key, return_inverse=True)
        head = torch.full((int(group.max()) + 1,), n, dtype=torch.long, device=mdev).scatter_reduce(
            0, group, torch.arange(n, device=mdev), reduce="amin")
        dev = tokens.embeds.device
        group_d, head_d = group.to(dev), head.to(dev)
        size = tokens.size.to(dev).float()
        mass = torch.zeros(head.numel(), tokens.dim, device=dev).index_add_(
            0, group_d, tokens.embeds.float() * size[:, None])
        total = torch.zeros(head.numel(), device=dev).index_add_(0, group_d, size)
        alone = torch.bincount(group, minlength=head.numel()).to(dev) == 1
        embeds = tokens.embeds.clone()
        embeds[head_d] = torch.where(alone[:, None], tokens.embeds[head_d], (mass / total[:, None]).to(embeds.dtype))
        sizes = tokens.size.clone()
        sizes[head.to(sizes.device)] = total.to(sizes.device, sizes.dtype)
        keep = torch.zeros(n, dtype=torch.bool, device=mdev)
        keep[head] = True
        return tokens.replace(embeds=embeds, size=sizes).select(keep)
