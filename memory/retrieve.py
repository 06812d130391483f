"""Question-time block retrieval: which chunks of the video the question needs.

Each block is scored by how strongly the question's queries attend to its summary key, per layer
and KV head (InfLLM's representative-key lookup, Xiao et al. 2024; ReKV's per-frame mean keys, Di
et al. 2025):

    score[b] = mean over layers l, query heads h, question tokens i of  q[l, h, i] . s[b, l, h // g] / sqrt(Dh)

with ``g`` the GQA group size. The selection then keeps the ``first_blocks`` oldest and
``recent_blocks`` newest blocks, and fills the visual-token budget with the best-scored rest.
"""

from __future__ import annotations

import torch

from vidqa.kernels.block_score import block_scores
from vidqa.memory.blocks import KVBlock


def score_keys(queries: list[torch.Tensor], keys: torch.Tensor) -> torch.Tensor:
    """Scores ``[B]`` of ``keys [B, L, Hkv, Dh]`` (one key per layer and KV head for each of ``B``
    items) from per-layer queries ``[Hq, Lq, Dh]``: the formula above, by the
    :mod:`vidqa.kernels.block_score` op (Triton on GPU, its reference on CPU). An item is a block's
    summary here, a single KV entry in the ask-time budget (:mod:`vidqa.memory.budget`)."""
    q = torch.stack([qi.float() for qi in queries])  # [L, Hq, Lq, Dh]
    return block_scores(q, keys.to(q.device)).cpu()


def score_blocks(queries: list[torch.Tensor], blocks: list[KVBlock]) -> torch.Tensor:
    """Scores ``[num_blocks]`` of the blocks' summaries (:func:`score_keys`)."""
    if not blocks:
        return torch.zeros(0)
    return score_keys(queries, torch.stack([b.summary for b in blocks]))  # [B, L, Hkv, Dh]


def select_blocks(scores: torch.Tensor, blocks: list[KVBlock], token_budget: int,
                  first_blocks: int = 0, recent_blocks: int = 1) -> list[int]:
    """Indices (ascending) of the blocks to bring back, within ``token_budget`` visual tokens.

    The always-kept blocks come first even if they alone exceed the budget (a question is never
    answered from nothing); then blocks in descending score while they fit.
    """
    n = len(blocks)
    forced = list(range(min(first_blocks, n))) + list(range(max(0, n - recent_blocks), n))
    chosen = set(forced)
    used = sum(blocks[i].num_visual for i in chosen)
    for i in torch.argsort(scores, descending=True, stable=True).tolist():
        if i in chosen:
            continue
        if used + blocks[i].num_visual <= token_budget:
            chosen.add(i)
            used += blocks[i].num_visual
    return sorted(chosen)
