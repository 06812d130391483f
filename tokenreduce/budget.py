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

In ``VideoQA.ask`` the same reducer runs over the stored memory instead of tokens
(:mod:`vidqa.memory.budget`): :meth:`BudgetReducer.total`, :meth:`~BudgetReducer.groups` and
:meth:`~BudgetReducer.share` are applied to one summary token per stored grid (its mean embedding),
and inside a group the KV entries the question attends to most are kept (no token embeddings are
stored, so ``rank`` applies to tokens only). A memory keeps no frames, so there ``scorer="clip"`` is
refused; the embedding scorer needs only the stored grid means.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vidqa.errors import ConfigError
from vidqa.tokenreduce.base import Reducer, check_ratio, register
from vidqa.tokenreduce.counts import allocate, round_half_up, top_per_group
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

    def total(self, n: int) -> int:
        """How many of ``n`` tokens the question gets: ``token_budget``, else ``round(keep_ratio * n)``, >= 1."""
        return self.token_budget or max(1, round_half_up(self.keep_ratio * n))

    def share(self, tokens: VisualTokens, groups: list[torch.Tensor], capacity: torch.Tensor, context: dict,
              total: int) -> tuple[torch.Tensor, torch.Tensor]:
        """QuoTA's assignment: ``(budgets [G] int64, scores [G] float32)`` for ``groups`` of ``tokens``
        holding ``capacity [G]`` tokens each; budgets follow ``softmax(score / temperature)``, none
        exceeds its capacity, and they sum to exactly ``min(total, capacity.sum())``."""
        scores = self.frame_scorer(context).scores(tokens, groups, context).float().cpu()
        return allocate(scores / self.temperature, capacity, total), scores

    def token_rank(self, tokens: VisualTokens, context: dict) -> torch.Tensor:
        """``[N]``: cosine to the mean question embedding (``rank="question"``), else embedding norm."""
        q = question_vector(context, tokens.embeds.device) if self.rank == "question" else None
        x = tokens.embeds.float()
        return x.norm(dim=-1) if q is None else torch.nn.functional.normalize(x, dim=-1) @ q

    def reduce(self, tokens: VisualTokens, context: dict, state: dict) -> VisualTokens:
        total = self.total(len(tokens))
        if total >= len(tokens):
            return tokens
        groups = self.groups(tokens, context)
        budgets, _ = self.share(tokens, groups, torch.tensor([g.numel() for g in groups]), context, total)
        member = torch.empty(len(tokens), dtype=torch.long)
        for i, g in enumerate(groups):
            member[g.cpu()] = i
        return tokens.select(top_per_group(self.token_rank(tokens, context), member, budgets))
