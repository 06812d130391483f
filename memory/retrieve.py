"""Question-time block retrieval: which chunks of the video the question needs.

Each block is represented, per layer and KV head, by each of its temporal grids (2 frames for
Qwen2.5-VL): the grid's mean visual key (ReKV's per-frame mean keys, Di et al. 2025, finer than
InfLLM's one representative per block, Xiao et al. 2024) and the grid's few most distinct keys
(:meth:`~vidqa.memory.blocks.GridRecord.most_distinct`). Two scores (``MemoryConfig.retrieval``):

* ``mass`` (default): the share of the question's attention the block's representatives draw --
  per layer, query head and question token a softmax over every representative of the video, each
  mean key counted for the entries it stands for (:func:`~vidqa.kernels.block_score.attention_mass`),
  summed per block;
* ``mean``: ReKV's score, the block's best grid mean key by the mean over layers, query heads and
  question tokens of the scaled dot product ``q[l, h, i] . s[g, l, h // g_q] / sqrt(Dh)``.

Why ``mass``: a needle fills a few tokens of one grid and is seen sharply by a few look-up heads.
The grid's mean key dilutes the first; a mean of dot products over every layer and head dilutes the
second. On six held-out hours with the bundled model (225 blocks each, 32 retrieved), ``mean`` put the
needle's block among the retrieved for 8 of 36 needle questions, ``mass`` with two distinct keys per
grid for 36 of 36 (top 10 for all; ``bench/results/quality_synth_tiny_cpu.md``, stop 19). One mean per
16-frame block ranked the same blocks first for every question. A block without grid keys
(hand-built, or no visual tokens) is represented by its summary key. The selection then keeps the
``first_blocks`` oldest and ``recent_blocks`` newest blocks, and fills the visual-token budget with
the best-scored rest.
"""

from __future__ import annotations

import torch

from vidqa.kernels.block_score import attention_mass, block_scores
from vidqa.memory.blocks import KVBlock


def score_keys(queries: list[torch.Tensor], keys: torch.Tensor) -> torch.Tensor:
    """Scores ``[B]`` of ``keys [B, L, Hkv, Dh]`` (one key per layer and KV head for each of ``B``
    items) from per-layer queries ``[Hq, Lq, Dh]``: the ``mean`` formula above, by the
    :mod:`vidqa.kernels.block_score` op (Triton on GPU, its reference on CPU). An item is a block's
    summary here, a single KV entry in the ask-time budget (:mod:`vidqa.memory.budget`)."""
    q = torch.stack([qi.float() for qi in queries])  # [L, Hq, Lq, Dh]
    return block_scores(q, keys.to(q.device)).cpu()


def block_representatives(blocks: list[KVBlock], distinct: bool = True):
    """Keys ``[R, L, Hkv, Dh]`` that stand for the blocks, the block of each (int64 ``[R]``) and the log
    of how many visual entries each stands for (float32 ``[R]``): per grid its mean key (for the
    entries that are not distinct keys) and, with ``distinct``, its most distinct keys (one entry
    each); a block without grid keys is its summary key (for all its visual entries)."""
    reps, weights, per_block = [], [], []
    for b in blocks:
        g = b.grids
        if g is None or g.keys is None or not len(g.keys):
            mine = [b.summary[None].float()], [torch.tensor([float(max(1, b.num_visual))])]
        elif distinct and g.distinct_keys is not None and len(g.distinct_keys):
            rest = g.counts.float() - torch.bincount(g.distinct_grid, minlength=len(g.t)).float()
            mine = [g.keys.float(), g.distinct_keys.float()], [rest, torch.ones(len(g.distinct_keys))]
        else:
            mine = [g.keys.float()], [g.counts.float()]
        reps += mine[0]
        weights += mine[1]
        per_block.append(sum(len(r) for r in mine[0]))
    owner = torch.repeat_interleave(torch.arange(len(blocks)), torch.tensor(per_block))
    return torch.cat(reps), owner, torch.cat(weights).clamp(min=1).log()


def score_blocks(queries: list[torch.Tensor], blocks: list[KVBlock], cache: dict | None = None,
                 method: str = "mass") -> torch.Tensor:
    """Scores ``[num_blocks]`` by ``method`` (module docstring). ``cache``: a dict that lives with the
    memory (``VideoMemory.retrieval_cache``), so that follow-up questions reuse the gathered
    representatives (thousands of grids an hour) instead of gathering them again. They are kept on
    the queries' device: copying them there for every question (310 MB of float32 keys an hour of
    7B video) made a follow-up question's time to first token grow with the video's length."""
    if not blocks:
        return torch.zeros(0)
    device = queries[0].device
    cached = cache.get(method) if cache is not None else None
    if cached is not None and cached[0] == len(blocks) and cached[1].device == device:
        _, keys, owner, log_weight = cached
    else:
        keys, owner, log_weight = block_representatives(blocks, distinct=method == "mass")
        keys, log_weight = keys.to(device), log_weight.to(device)
        if cache is not None:
            cache[method] = (len(blocks), keys, owner, log_weight)
    if method == "mean":
        scores = score_keys(queries, keys)
        return torch.full((len(blocks),), float("-inf")).scatter_reduce(0, owner, scores, "amax")
    q = torch.stack([qi.float() for qi in queries])
    mass = attention_mass(q, keys, log_weight).cpu()
    return torch.zeros(len(blocks)).scatter_add(0, owner, mass)


def blend_shares(window_scores: torch.Tensor, answer_scores: torch.Tensor, answer_weight: float) -> torch.Tensor:
    """Block scores ``[B]``: ``(1 - w)`` times each block's share of the prompt window's attention mass
    plus ``w`` times its share of the answer position's (both ``mass`` scores ``[B]``).

    Why: the whole prompt's attention is spread over the video, which whole-video questions (the main
    scene, the unusual event) need; the answer position's is peaked on what the question names (every
    appearance of a counted object), as SnapKV (Li et al., 2024) reads generation's attention from the
    end of the prompt. Shares, not raw masses, so that neither wins by its number of query tokens; a
    peaked answer share puts its few blocks first and leaves the rest of the budget to the spread one.
    """
    def share(s):
        total = s.sum()
        return s / total if total > 0 else torch.full_like(s, 1.0 / max(1, len(s)))

    return (1.0 - answer_weight) * share(window_scores) + answer_weight * share(answer_scores)


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
