"""Temporal redundancy reduction (DyCoke, Tao et al. CVPR 2025; FastVID, Shen et al. 2025; FrameFusion,
Fu et al. 2024): a token that nearly repeats what the model already saw at the same place adds little.

Every grid location ``(h, w)`` remembers its *reference*: the last token kept there. For each
temporal grid, in time order, every token's cosine similarity to its location's reference is its
redundancy. A location never kept so far is compared with its token of the previous grid instead
(what was not worth keeping then is not news now unless it changed), and a location seen for the
first time is new and goes first -- among new ones the least typical of the grid (lowest cosine to
the grid's mean token) first. Then

* ``threshold`` mode (``threshold > 0``) keeps the tokens with similarity ``<= threshold``;
* ``keep_ratio`` mode keeps exactly the quota of :class:`~vidqa.tokenreduce.counts.Quota`
  (``round(keep_ratio * tokens seen so far)`` after every grid), least similar first;

and in both every grid keeps at least ``min_per_grid`` tokens (its least redundant), so each sampled
moment stays visible to the model and no chunk comes out empty. Kept tokens become their location's
new reference. ``merge=True`` folds each dropped token into its location's reference token
(size-weighted mean, sizes added, as FrameFusion merges) instead of discarding it.

Segments (the dynamic temporal segmentation of FastVID, which cuts where adjacent frames' global
features stop resembling each other): a grid's *change score* is ``1 - cos(mean token, previous
grid's mean token)``; a score above ``cut_threshold`` starts a new segment, unless the last start is
fewer than ``min_segment`` grids back (a cut inside a 2-frame grid makes the next grid differ from
the mixed one too), and the first grid of a video starts one. ``extra["segment_starts"]`` lists the
grid ``t`` of the starts inside the call, ``extra["change"]`` the score of every grid of the call
(NaN for the first grid of the video), and the stream's state ``segment_starts`` all of them so far.

Streaming: decisions depend only on earlier grids, kept in a small state (one reference and one
previous token per location, the quota's two counts), so a stream fed a video chunk by chunk keeps
exactly the tokens, metadata and segments of one call on the whole video. With ``merge=True`` the
survivors are the same too, but a dropped token whose reference was handed on in an earlier call is
discarded instead of merged (the model has already consumed that token), so embeddings and sizes of
runs crossing a chunk boundary differ; within a call ``sum(size * embeds)`` is preserved over every
dropped token whose reference is in the call.

Shapes: state ``reference``/``previous`` ``[H*W, D]`` float32 (unit vectors) on the embeddings' device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from vidqa.errors import ConfigError
from vidqa.tokenreduce.base import Reducer, check_ratio, register
from vidqa.tokenreduce.counts import Quota
from vidqa.tokens import VisualTokens


@register("temporal")
@dataclass
class TemporalReducer(Reducer):
    keep_ratio: float = 1.0
    threshold: float = 0.0
    merge: bool = False
    min_per_grid: int = 1
    cut_threshold: float = 0.1
    min_segment: int = 2

    def __post_init__(self):
        check_ratio(self.keep_ratio)
        if not 0 <= self.threshold <= 1:
            raise ConfigError(f"temporal threshold must be in [0, 1] (0: keep_ratio mode), got {self.threshold}")
        if self.threshold > 0 and self.keep_ratio < 1:
            raise ConfigError("temporal: give either threshold or keep_ratio, not both")
        if self.min_per_grid < 0:
            raise ConfigError(f"temporal min_per_grid must be >= 0, got {self.min_per_grid}")
        if not 0 < self.cut_threshold <= 2:
            raise ConfigError(f"temporal cut_threshold must be in (0, 2], got {self.cut_threshold}")
        if self.min_segment < 1:
            raise ConfigError(f"temporal min_segment must be >= 1 grids, got {self.min_segment}")

    def initial_state(self) -> dict:
        return {"quota": Quota(self.keep_ratio, self.min_per_grid), "segment_starts": [], "mean": None}

    def _segment(self, state: dict, t: int, embeds: torch.Tensor) -> tuple[float, bool]:
        """Change score of grid ``t`` (its tokens ``embeds [n, D]``) and whether it starts a segment."""
        mean = torch.nn.functional.normalize(embeds.float().mean(0), dim=0)
        change = math.nan if state["mean"] is None else 1 - float(mean @ state["mean"])
        state["mean"] = mean
        starts = state["segment_starts"]
        if not starts or change > self.cut_threshold and t - starts[-1] >= self.min_segment:
            starts.append(t)
            return change, True
        return change, False

    def reduce(self, tokens: VisualTokens, context: dict, state: dict) -> VisualTokens:
        h, w = tokens.grid_hw
        if h * w <= 0:
            raise ValueError("temporal reduction needs tokens.grid_hw (the grid shape) to be set")
        dev = tokens.embeds.device
        if "reference" not in state:  # per location: last kept token, last seen token (unit vectors)
            for name in ("reference", "previous"):
                state[name] = torch.zeros(h * w, tokens.dim, device=dev)
                state["has_" + name] = torch.zeros(h * w, dtype=torch.bool, device=dev)
        ref, has_ref = state["reference"], state["has_reference"]
        prev, has_prev = state["previous"], state["has_previous"]
        location = (tokens.grid[:, 1] * w + tokens.grid[:, 2]).to(dev)
        normed = torch.nn.functional.normalize(tokens.embeds.float(), dim=-1)
        keep = torch.zeros(len(tokens), dtype=torch.bool, device=dev)
        # row (in this call) of the token each location's reference is; -1: handed on in an earlier call
        owner = torch.full((h * w,), -1, dtype=torch.long, device=dev)
        merge_src, merge_dst, starts, changes = [], [], [], []
        for group in tokens.frame_groups():
            idx = group.to(dev)
            loc, x = location[idx], normed[idx]
            t = int(tokens.grid[group[0], 0])
            change, starts_segment = self._segment(state, t, tokens.embeds[idx])
            changes.append(change)
            if starts_segment:
                starts.append(t)
            # cosine to the reference, else to the previous token, else new: below any cosine (-1),
            # the least typical of the grid first
            typical = x @ torch.nn.functional.normalize(x.mean(0), dim=0)
            redundancy = torch.where(has_ref[loc], (x * ref[loc]).sum(-1),
                                     torch.where(has_prev[loc], (x * prev[loc]).sum(-1), typical - 3))
            order = torch.argsort(redundancy, stable=True)
            if self.threshold > 0:
                k = max(int((redundancy <= self.threshold).sum()), min(self.min_per_grid, idx.numel()))
            else:
                k = state["quota"].take(idx.numel())
            chosen, dropped = order[:k], order[k:]
            keep[idx[chosen]] = True
            if self.merge and dropped.numel():
                dst = owner[loc[dropped]]
                merge_src.append(idx[dropped][dst >= 0])
                merge_dst.append(dst[dst >= 0])
            ref[loc[chosen]] = x[chosen]
            has_ref[loc[chosen]] = True
            owner[loc[chosen]] = idx[chosen]
            prev[loc] = x
            has_prev[loc] = True
        out = _fold(tokens, torch.cat(merge_src), torch.cat(merge_dst)) if merge_src else tokens
        out = out.select(keep.cpu())
        out.extra["segment_starts"] = starts
        out.extra["change"] = changes
        return out


def _fold(tokens: VisualTokens, src: torch.Tensor, dst: torch.Tensor) -> VisualTokens:
    """Folds tokens ``src`` into ``dst`` (size-weighted mean, sizes added); other rows stay bit-exact."""
    if src.numel() == 0:
        return tokens
    size = tokens.size.to(tokens.embeds.device).float()
    mass = tokens.embeds.float() * size[:, None]
    total = size.clone()
    mass.index_add_(0, dst, mass[src])
    total.index_add_(0, dst, size[src])
    touched = torch.zeros(len(tokens), dtype=torch.bool, device=mass.device)
    touched[dst] = True
    embeds = torch.where(touched[:, None], (mass / total[:, None]).to(tokens.embeds.dtype), tokens.embeds)
    return tokens.replace(embeds=embeds, size=total.to(tokens.size.device, tokens.size.dtype))
