"""Retrieval scores of KV blocks against a question: :func:`block_scores` (+ top-k).

The Triton path covers ``reduce="mean"`` (the default used by :mod:`vidqa.memory.retrieve`);
``"max"`` uses the reference. :func:`attention_mass` (``mass.py``) scores representatives by the
softmax attention they would draw, what :mod:`vidqa.memory.retrieve` uses by default.
"""

from __future__ import annotations

import torch

from vidqa.kernels.block_score.mass import attention_mass
from vidqa.kernels.block_score.naive import block_scores_naive
from vidqa.kernels.dispatch import use_triton


def block_scores(q: torch.Tensor, summary: torch.Tensor, topk: int | None = None, reduce: str = "mean",
                 backend: str = "auto", out: torch.Tensor | None = None):
    """Scores ``[NB]`` of ``summary [NB, L, Hkv, D]`` for queries ``q [L, Hq, Lq, D]``; with ``topk``,
    also the indices of the best ``topk`` blocks (descending)."""
    if reduce not in ("mean", "max"):
        raise ValueError("reduce must be 'mean' or 'max'")
    if reduce == "mean" and use_triton(backend, q, summary):
        from vidqa.kernels.block_score.triton_impl import block_scores_triton

        scores = block_scores_triton(q, summary, out=out)
    else:
        scores = block_scores_naive(q, summary, reduce)
        if out is not None:
            out.copy_(scores)
            scores = out
    if topk is None:
        return scores
    k = min(topk, scores.numel())
    return scores, torch.topk(scores, k).indices


__all__ = ["attention_mass", "block_scores"]
