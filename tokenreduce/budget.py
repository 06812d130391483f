"""Query-aware token budgets (QuoTA, Luo et al. 2025): the parts of the video relevant to the question
get more tokens, the rest fewer. Runs at question time (``question_aware = True``).

The total budget (``token_budget``, or ``round(keep_ratio * N)``) is shared between groups -- temporal
grids (``unit="grid"``) or segments (``unit="segment"``, starts from ``context["segment_starts"]`` or
``tokens.extra["segment_starts"]`` as the temporal reducer writes them) -- in proportion to
``softmax(score / temperature)`` of a :class:`~vidqa.tokenreduce.scorers.FrameScorer`, with
largest-remainder rounding and no group getting more tokens than it has
(:func:`~vidqa.tokenreduce.counts.allocate`), so the budget is met exactly.

Inside a group the tokens kept are those most similar (cosine) to the mean question embedding
(``rank="question"``, the question-guided choice of QuoTA; without ``question_embeds`` it falls back)
or those with the largest embedding norm (``rank="norm"``, a salience proxy). Ties keep the earlier
token. Survivors are a subset, in order, with their metadata.

Scorers: ``scorer="embedding"`` (default), ``scorer="clip"`` built from ``clip_model`` /
``clip_checkpoint`` / ``clip_config`` on first use, or any scorer object in ``context["scorer"]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vidqa.errors import ConfigError
from vidqa.tokenreduce.base import Reducer, check_ratio, register
from vidqa.tokenreduce.counts import allocate, round_half_up
from vidqa.tokenreduce.scorers import ClipFrameScorer, EmbeddingFrameScorer, question_vector
from vidqa.tokens import VisualTokens


@register("budget")
@dataclass
class BudgetReducer(Reducer):
    question_aware = True
    keep_ratio: float = 0.5
    token_budget: int = 0  # > 0: this many tokens, overriding keep_ratio
    unit: str = "grid"
    temperature: float = 0.1
    rank: str = "question"
    scorer: str = "embedding"
    clip_model: str = ""
    clip_checkpoint: str = ""
    clip_config: str = ""

    def __post_init__(self):
        check_ratio(self.keep_ratio)
        if self.token_budget < 0:
            raise ConfigError(f"budget token_budget must be >= 0, got {self.token_budget}")
        if not self.temperature > 0:
            raise ConfigError(f"budget temperature must be > 0, got {self.temperature}")
        for key, value, valid in (("unit", self.unit, ("grid", "segment")), ("rank", self.rank, ("question", "norm")),
                                  ("scorer", self.scorer, ("embedding", "clip"))):
            if value not in valid:
                raise ConfigError(f"budget {key} must be one of {', '.join(valid)}; got {value!r}")
        self._scorer = None

    def frame_scorer(self, context: dict):
        if context.get("scorer") is not None:
            return context["scorer"]
        if self._scorer is None:
            self._scorer = EmbeddingFrameScorer() if self.scorer == "embedding" else ClipFrameScorer(
                model_name=self.clip_model or None, pretrained=self.clip_checkpoint or None,
                config=self.clip_config or None)
        return self._scorer

    def groups(self, tokens: VisualTokens, context: dict) -> list[torch.Tensor]:
        """Index tensors of each grid or segment, in time order."""
        if self.unit == "grid":
            return tokens.frame_groups()
        starts = context.get("segment_starts", tokens.extra.get("segment_starts")) or []
        t = tokens.grid[:, 0]
        bounds = torch.tensor(sorted(set(int(s) for s in starts)), dtype=t.dtype, device=t.device)
        segment = torch.searchsorted(bounds, t.contiguous(), right=True)
        return [(segment == s).nonzero().flatten() for s in torch.unique(segment)]

    def reduce(self, tokens: VisualTokens, context: dict, state: dict) -> VisualTokens:
        total = self.token_budget or max(1, round_half_up(self.keep_ratio * len(tokens)))
        if total >= len(tokens):
            return tokens
        groups = self.groups(tokens, context)
        scores = self.frame_scorer(context).scores(tokens, groups, context).float().cpu()
        budgets = allocate(scores / self.temperature, torch.tensor([g.numel() for g in groups]), total)
        q = question_vector(context, tokens.embeds.device) if self.rank == "question" else None
        keep = []
        for g, b in zip(groups, budgets.tolist()):
            if b == 0:
                continue
            x = tokens.embeds[g.to(tokens.embeds.device)].float()
            rank = x.norm(dim=-1) if q is None else torch.nn.functional.normalize(x, dim=-1) @ q
            keep.append(g[torch.argsort(rank, descending=True, stable=True)[:b].to(g.device)])
        return tokens.select(torch.cat(keep))
