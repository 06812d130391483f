"""How many tokens to keep: exact integer budgets for the reducers.

* :func:`round_half_up` -- ``round(x)`` without Python's banker's rounding, so ``keep_ratio * N`` rounds
  the same way everywhere (``round(0.5 * 5) == 2`` in Python; here it is 3).
* :class:`Quota` -- a running budget over temporal grids seen one after another: after every grid the
  number kept so far is ``round_half_up(keep_ratio * tokens seen so far)`` (or more, when a grid must
  keep its ``minimum``). Each grid gets ``floor`` or ``ceil`` of ``keep_ratio * n``, the whole video
  gets exactly ``round_half_up(keep_ratio * N)``, and because the state is two integers the same
  numbers come out whether the video is reduced whole or chunk by chunk.
* :func:`allocate` -- shares a total budget between groups in proportion to ``exp(logits)`` with
  largest-remainder rounding, never giving a group more than it holds (what it cannot take is
  handed on to the others), so the total is met exactly (the QuoTA assignment step, Luo et al. 2025).
* :func:`top_per_group` -- which tokens meet those budgets: the best-ranked ``budget[g]`` of every
  group ``g``, shared by the budget reducer (tokens) and the memory's ask-time budget (KV entries).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


@dataclass
class Quota:
    """Running budget ``round_half_up(keep_ratio * seen)``; every grid keeps at least ``minimum``."""

    keep_ratio: float
    minimum: int = 1
    seen: int = 0
    kept: int = 0

    def take(self, n: int) -> int:
        """How many of the next grid's ``n`` tokens to keep (and count them as kept)."""
        self.seen += n
        k = round_half_up(self.keep_ratio * self.seen) - self.kept
        k = max(min(k, n), min(self.minimum, n))
        self.kept += k
        return k


def allocate(logits: torch.Tensor, capacity: torch.Tensor, total: int) -> torch.Tensor:
    """Integer budgets ``[G]`` (int64) proportional to ``exp(logits [G])`` (``-inf``: weight 0), each at
    most ``capacity [G]``, summing to exactly ``min(total, capacity.sum())``.

    Water-filling: the budget still to give is shared among the groups that are not full, in
    proportion to the softmax of their logits (taken over those groups only, so a sharp softmax that
    underflows for all but the full groups still ranks the others), floors first and the largest
    remainders (earlier group on ties) get the rounding; groups that would overflow are capped and the
    rest is shared again. Each round fills at least one group or finishes, so there are at most ``G``
    rounds. Open groups whose weights are all zero share evenly.
    """
    logits = logits.detach().double().cpu()
    capacity = capacity.detach().long().cpu()
    total = min(int(total), int(capacity.sum()))
    budget = torch.zeros_like(capacity)
    while (left := total - int(budget.sum())) > 0:
        open_ = budget < capacity
        masked = torch.where(open_, logits, torch.full_like(logits, -math.inf))
        w = torch.softmax(masked, 0) if bool(torch.isfinite(masked).any()) else open_.double()
        share = w / w.sum() * left
        add = torch.floor(share).long()
        short = left - int(add.sum())
        if short > 0:
            order = torch.argsort(share - add, descending=True, stable=True)
            add[order[:short]] += 1
        elif short < 0:  # float error pushed a share just over an integer: take it back
            order = torch.argsort(torch.where(add > 0, share - add, torch.full_like(share, 2.0)), stable=True)
            add[order[:-short]] -= 1
        budget = torch.minimum(budget + add, capacity)
    return budget


def top_per_group(rank: torch.Tensor, group: torch.Tensor, budget: torch.Tensor) -> torch.Tensor:
    """Indices (ascending, int64) of the ``budget[g]`` highest ``rank [N]`` items of every group.

    ``group [N]`` (int64) is each item's group in ``0 .. G-1`` (``-1``: in no group, never kept);
    ``budget [G]`` must not exceed the group sizes. Ties keep the earlier item. One sort, no loop over
    groups, so it costs the same for a video of ten thousand grids as for one chunk.
    """
    rank, group, budget = rank.detach().float().cpu(), group.detach().long().cpu(), budget.detach().long().cpu()
    member = (group >= 0).nonzero().flatten()
    order = member[torch.argsort(rank[member], descending=True, stable=True)]
    order = order[torch.argsort(group[order], stable=True)]  # by group, best first inside each
    g = group[order]
    place = torch.arange(order.numel()) - torch.searchsorted(g, g)  # 0 for a group's best item
    return torch.sort(order[place < budget[g]]).values
