"""Question-time block retrieval: which chunks of the video the question needs.

Each block is represented by the mean visual key of each of its temporal grids (2 frames for
Qwen2.5-VL) per layer and KV head -- ReKV's per-frame mean keys (Di et al. 2025), finer than one
representative per block as in InfLLM (Xiao et al. 2024) -- and scored by its best grid:

    score[b] = max over grids g of b of  mean over layers l, query heads h, question tokens i of
               q[l, h, i] . s[g, l, h // g_q] / sqrt(Dh)

with ``g_q`` the GQA group size. One mean per 16-frame block is dominated by what every block shares
(background, layout): with the bundled model it ranked the same blocks first for every question,
while a moment that fills two frames still decides its grid's mean. A block without grid keys
(hand-built, or no visual tokens) is represented by its summary key. The selection then keeps the
``first_blocks`` oldest and ``recent_blocks`` newest blocks, and fills the visual-token budget with
the best-scored rest.
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


def block_representatives(blocks: list[KVBlock]) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys ``[R, L, Hkv, Dh]`` that stand for the blocks and the block of each, int64 ``[R]``: the
    grids' mean keys where the block has them, else its summary key."""
    reps = [b.grids.keys if b.grids is not None and b.grids.keys is not None and len(b.grids.keys)
            else b.summary[None] for b in blocks]
    owner = torch.repeat_interleave(torch.arange(len(blocks)), torch.tensor([len(r) for r in reps]))
    return torch.cat([r.float() for r in reps]), owner


def score_blocks(queries: list[torch.Tensor], blocks: list[KVBlock], cache: dict | None = None) -> torch.Tensor:
    """Scores ``[num_blocks]``: each block's best representative (:func:`score_keys`). ``cache``: a
    dict that lives with the memory (``VideoMemory.retrieval_cache``), so that follow-up questions
    reuse the gathered representatives (thousands of grids an hour) instead of gathering them again."""
    if not blocks:
        return torch.zeros(0)
    if cache is not None and cache.get("blocks") == len(blocks):
        keys, owner = cache["keys"], cache["owner"]
    else:
        keys, owner = block_representatives(blocks)
        if cache is not None:
            cache.update(blocks=len(blocks), keys=keys, owner=owner)
    scores = score_keys(queries, keys)
    return torch.full((len(blocks),), float("-inf")).scatter_reduce(0, owner, scores, "amax")


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
