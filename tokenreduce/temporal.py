"""Temporal redundancy pruning (DyCoke, Tao et al. CVPR 2025; FastVID, Shen et al. 2025; FrameFusion,
Fu et al. 2024).

A token that nearly repeats the co-located token (same ``h, w``) of the last frame where that
location was kept (or, if it never was, of the previous frame) carries little new information. For each temporal grid, every token's cosine
similarity to its location's reference is computed; ``threshold`` mode drops tokens above the
threshold, ``keep_ratio`` mode keeps exactly ``ceil(keep_ratio * n)`` tokens of the grid, the least
similar first (locations never kept before count as fully new). Kept tokens become the new
references. Decisions depend only on earlier grids, so chunk-by-chunk equals whole-video.

Grids whose mean similarity falls below ``1 - cut_threshold`` start a new *segment* (a scene cut);
their indices are recorded in ``extra["segment_starts"]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from vidqa.errors import ConfigError
from vidqa.tokenreduce.base import Reducer, check_ratio, register
from vidqa.tokens import VisualTokens


@register("temporal")
@dataclass
class TemporalReducer(Reducer):
    keep_ratio: float = 1.0
    threshold: float = 0.0  # > 0: threshold mode (drop tokens more similar than this)
    cut_threshold: float = 0.5

    def __post_init__(self):
        check_ratio(self.keep_ratio)
        if not 0 <= self.threshold <= 1:
            raise ConfigError(f"threshold must be in [0, 1], got {self.threshold}")

    def reduce(self, tokens: VisualTokens, context: dict) -> VisualTokens:
        return self.stream()(tokens, context)

    def stream(self) -> "_TemporalStream":
        return _TemporalStream(self)


class _TemporalStream:
    def __init__(self, cfg: TemporalReducer):
        self.cfg = cfg
        self.reference: dict[tuple[int, int], torch.Tensor] = {}  # last kept token per location
        self.previous: dict[tuple[int, int], torch.Tensor] = {}  # last seen token per location

    def __call__(self, tokens: VisualTokens, context: dict | None = None) -> VisualTokens:
        if len(tokens) == 0:
            return tokens
        keep = torch.zeros(len(tokens), dtype=torch.bool)
        cuts = []
        normed = torch.nn.functional.normalize(tokens.embeds.float(), dim=-1)
        for idx in tokens.frame_groups():
            hw = [(int(h), int(w)) for h, w in tokens.grid[idx, 1:].tolist()]
            sim = torch.full((idx.numel(),), -2.0)
            for j, key in enumerate(hw):
                ref = self.reference.get(key, self.previous.get(key))
                if ref is not None:
                    sim[j] = torch.dot(normed[idx[j]], ref)
            known = sim > -2
            if known.any() and 1 - float(sim[known].mean()) > self.cfg.cut_threshold:
                cuts.append(int(tokens.grid[idx[0], 0]))
            if self.cfg.threshold > 0:
                chosen = (sim <= self.cfg.threshold).nonzero().flatten()
            else:
                k = math.ceil(self.cfg.keep_ratio * idx.numel())
                chosen = torch.argsort(sim, stable=True)[:k]
            keep[idx[chosen]] = True
            for j in chosen.tolist():
                self.reference[hw[j]] = normed[idx[j]]
            for j, key in enumerate(hw):
                self.previous[key] = normed[idx[j]]
        out = tokens.select(keep)
        out.extra["segment_starts"] = list(tokens.extra.get("segment_starts", [])) + cuts
        return out
