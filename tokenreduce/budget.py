"""Query-aware token budgets per frame (QuoTA, Luo et al. 2025): frames relevant to the question
get more tokens, irrelevant ones fewer.

A :class:`FrameScorer` rates each temporal grid's relevance to the question; the total budget
(``keep_ratio * N`` or ``token_budget``) is shared out in proportion to ``softmax(score /
temperature)`` with largest-remainder rounding, never giving a grid more tokens than it has (the
excess is handed on to the others), so the budget is met exactly. Inside a grid the tokens most
similar to the question embedding are kept (highest norm when there is none).

Scorers:

* :class:`EmbeddingFrameScorer` -- cosine between the mean question embedding (the LLM's input
  embeddings of the question, ``context["question_embeds"]`` ``[Lq, D]``) and each grid's mean token;
* :class:`ClipFrameScorer` -- open_clip text-image similarity on the frames themselves
  (``context["frames"]`` uint8 ``[T, H, W, 3]`` indexed by token ``frame``; ``context["question"]``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from vidqa.errors import ConfigError
from vidqa.tokenreduce.base import Reducer, check_ratio, register
from vidqa.tokens import VisualTokens


class FrameScorer:
    """``scores(tokens, groups, context) -> [G]`` relevance of each temporal grid."""

    def scores(self, tokens: VisualTokens, groups: list[torch.Tensor], context: dict) -> torch.Tensor:
        raise NotImplementedError


class EmbeddingFrameScorer(FrameScorer):
    def scores(self, tokens, groups, context):
        q = context.get("question_embeds")
        if q is None:
            raise ConfigError("the budget reducer needs the question's embeddings in context['question_embeds']")
        qv = torch.nn.functional.normalize(q.float().mean(0), dim=0)
        means = torch.stack([tokens.embeds[g].float().mean(0) for g in groups])
        return torch.nn.functional.normalize(means, dim=-1) @ qv.to(means.device)


class ClipFrameScorer(FrameScorer):
    """open_clip model (``model_name`` + local ``pretrained`` checkpoint, or a ready ``model``)."""

    def __init__(self, model=None, preprocess=None, tokenizer=None, model_name: str = "ViT-B-32",
                 pretrained: str | None = None):
        import open_clip

        if model is None:
            model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=pretrained)
            tokenizer = open_clip.get_tokenizer(model_name)
        self.model, self.preprocess, self.tokenizer = model.eval(), preprocess, tokenizer

    def scores(self, tokens, groups, context):
        from PIL import Image

        frames, question = context.get("frames"), context.get("question")
        if frames is None or question is None:
            raise ConfigError("ClipFrameScorer needs context['frames'] and context['question']")
        picks = [int(tokens.frame[g[0]]) for g in groups]
        images = torch.stack([self.preprocess(Image.fromarray(frames[i])) for i in picks])
        with torch.no_grad():
            img = torch.nn.functional.normalize(self.model.encode_image(images).float(), dim=-1)
            txt = torch.nn.functional.normalize(self.model.encode_text(self.tokenizer([question])).float(), dim=-1)
        return (img @ txt.T)[:, 0]


def allocate(weights: torch.Tensor, capacity: torch.Tensor, total: int) -> torch.Tensor:
    """Integer budgets ``[G]`` summing to ``min(total, capacity.sum())``, proportional to ``weights``,
    each at most ``capacity``; largest remainders get the rounding."""
    total = min(int(total), int(capacity.sum()))
    budget = torch.zeros_like(capacity)
    open_ = capacity > 0
    while total - int(budget.sum()) > 0 and open_.any():
        left = total - int(budget.sum())
        w = torch.where(open_, weights, torch.zeros_like(weights))
        share = w / w.sum() * left if w.sum() > 0 else open_.float() / open_.sum() * left
        add = torch.floor(share).long()
        remainder = share - add
        short = left - int(add.sum())
        if short > 0:
            add[torch.argsort(remainder, descending=True, stable=True)[:short]] += 1
        budget = torch.minimum(budget + add, capacity)
        open_ = budget < capacity
    return budget


@register("budget")
@dataclass
class BudgetReducer(Reducer):
    question_aware = True
    keep_ratio: float = 0.5
    token_budget: int = 0  # > 0 overrides keep_ratio
    temperature: float = 0.1
    scorer: str = "embedding"  # or "clip"

    def __post_init__(self):
        check_ratio(self.keep_ratio)
        if self.token_budget < 0 or self.temperature <= 0:
            raise ConfigError("token_budget must be >= 0 and temperature > 0")
        if self.scorer not in ("embedding", "clip"):
            raise ConfigError(f"scorer must be 'embedding' or 'clip', got {self.scorer!r}")

    def reduce(self, tokens: VisualTokens, context: dict) -> VisualTokens:
        total = self.token_budget or math.ceil(self.keep_ratio * len(tokens))
        if total >= len(tokens):
            return tokens
        groups = tokens.frame_groups()
        scorer = context.get("scorer") or (EmbeddingFrameScorer() if self.scorer == "embedding" else None)
        if scorer is None:
            raise ConfigError("the clip scorer needs a ClipFrameScorer in context['scorer']")
        scores = scorer.scores(tokens, groups, context).float().cpu()
        weights = torch.softmax(scores / self.temperature, dim=0)
        capacity = torch.tensor([g.numel() for g in groups])
        budgets = allocate(weights, capacity, total)
        q = context.get("question_embeds")
        keep = []
        for g, b in zip(groups, budgets.tolist()):
            if b == 0:
                continue
            x = tokens.embeds[g].float()
            rank = x.norm(dim=-1) if q is None else torch.nn.functional.normalize(x, dim=-1) @ \
                torch.nn.functional.normalize(q.float().mean(0), dim=0).to(x.device)
            keep.append(g[torch.argsort(rank.cpu(), descending=True, stable=True)[:b]])
        return tokens.select(torch.cat(keep))
