"""The question-aware budget in ask (QuoTA over a stored memory): a budget covering everything changes
nothing; otherwise it is met exactly with the shares the reducer gives the stored tokens, the grid
that matches the question gets the most, the question's attention picks the entries inside a grid,
and the segments the temporal reducer found in every chunk are the units."""

import numpy as np
import pytest
import torch

from vidqa.config import MemoryConfig
from vidqa.memory import recall
from vidqa.memory.budget import plan_budget
from vidqa.memory.recall import question_queries
from vidqa.memory.retrieve import score_keys
from vidqa.tokenreduce import BudgetReducer, TemporalReducer
from vidqa.tokenreduce.counts import allocate
from vidqa.tokens import VisualTokens

from memory_data import encode_chunks, frame_side, ingest, random_chunks

FULL = MemoryConfig(window_chunks=10, recurrent_tokens=0, token_budget=10**6)


def _question(adapter, text="Where is the red ball?"):
    """(the question as the model reads it, the question text's embeddings for the scorer)."""
    return adapter.embed_ids(adapter.tokenize(adapter.prompt_question(text))), adapter.embed_ids(adapter.tokenize(text))


def _text_entries(memory, blocks):
    return memory.sink_keys.shape[2] + sum(memory.blocks[i].num_tokens - memory.blocks[i].num_visual for i in blocks)


@pytest.fixture(scope="module")
def qwen_memory(qwen_adapter):
    chunks = random_chunks(qwen_adapter, 4)
    return chunks, ingest(qwen_adapter, chunks, FULL)


@pytest.mark.parametrize("fixture", ["qwen_adapter", "llava_adapter"])
@pytest.mark.parametrize("reducer", [BudgetReducer(token_budget=10**6), BudgetReducer(keep_ratio=1.0)])
def test_a_budget_covering_everything_is_the_plain_recall(request, fixture, reducer):
    adapter = request.getfixturevalue(fixture)
    memory = ingest(adapter, random_chunks(adapter, 3), FULL)
    prompt, question = _question(adapter)
    plain = recall(adapter, memory, prompt, FULL)
    budgeted = recall(adapter, memory, prompt, FULL, budget=reducer, context={"question_embeds": question})
    for a, b in zip(plain.cache.layers, budgeted.cache.layers):
        assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)
    assert (budgeted.blocks, budgeted.spans, budgeted.next_position, budgeted.visual_attended) == \
        (plain.blocks, plain.spans, plain.next_position, plain.visual_attended) == \
        ([0, 1, 2], [(0.0, 12.0)], memory.next_position, memory.num_visual_tokens)
    assert torch.equal(budgeted.visual_grid, plain.visual_grid)


@pytest.mark.parametrize("total", [1, 23, 64])
def test_the_budget_is_met_exactly_with_the_reducers_own_shares(qwen_adapter, qwen_memory, total):
    adapter, (chunks, memory) = qwen_adapter, qwen_memory
    reducer = BudgetReducer(token_budget=total, temperature=0.2)
    prompt, question = _question(adapter)
    rec = recall(adapter, memory, prompt, FULL, budget=reducer, context={"question_embeds": question})
    assert rec.visual_attended == total == rec.visual_grid.numel() < memory.num_visual_tokens
    assert all(layer.keys.shape[2] == _text_entries(memory, rec.blocks) + total for layer in rec.cache.layers)
    # per grid, the shares the same reducer gives the stored tokens themselves
    stored = VisualTokens.cat([t for t, _, _ in chunks])
    groups = stored.frame_groups()
    expected, _ = reducer.share(stored, groups, torch.tensor([g.numel() for g in groups]),
                                {"question_embeds": question}, total)
    got = torch.stack([(rec.visual_grid == t).sum() for t in torch.unique(stored.grid[:, 0])])
    assert torch.equal(got, expected)
    # the spans are those of the grids used (2 s each here), no more
    used = torch.unique(rec.visual_grid)
    covered = sum(e - s for s, e in rec.spans)
    assert covered == 2.0 * used.numel() and all(any(s <= 2.0 * t < e for s, e in rec.spans) for t in used.tolist())
    # the memory's token_budget caps the reducer's
    capped = recall(adapter, memory, prompt, MemoryConfig(**{**FULL.__dict__, "token_budget": 5}), budget=reducer,
                    context={"question_embeds": question})
    assert capped.visual_attended == min(5, total)


def test_the_grid_that_matches_the_question_gets_the_most_entries(qwen_adapter, qwen_memory):
    adapter, (_, memory) = qwen_adapter, qwen_memory
    prompt, _ = _question(adapter)
    reducer = BudgetReducer(token_budget=24, temperature=0.05)
    for block, row in ((0, 0), (2, 1), (3, 1)):
        grids = memory.blocks[block].grids
        target, capacity = int(grids.t[row]), int(grids.counts[row])
        question = grids.embeds[row:row + 1]  # the grid's own mean token: cosine 1 with it alone
        rec = recall(adapter, memory, prompt, FULL, budget=reducer, context={"question_embeds": question})
        counts = torch.bincount(rec.visual_grid, minlength=8)
        # the matching grid takes all it holds (16 of 24), the rest goes to the next most similar
        assert counts[target] == capacity == 16 and counts[target] > counts[torch.arange(8) != target].max()
        assert any(s <= float(grids.time[row]) < e for s, e in rec.spans)


def test_inside_a_grid_the_entries_the_question_attends_to_most_are_kept(qwen_adapter, qwen_memory):
    adapter, (_, memory) = qwen_adapter, qwen_memory
    prompt, question = _question(adapter)
    plan = plan_budget(BudgetReducer(token_budget=40, temperature=10.0), memory, {"question_embeds": question}, 10**6)
    assert plan.total == 40 and bool(((plan.budgets > 0) & (plan.budgets < 16)).all())  # every grid partly kept
    window = [q[:, -FULL.observation_window:] for q in question_queries(adapter, memory, prompt, 1)]
    kept = plan.choose(adapter, memory, window)
    for i, block in enumerate(memory.blocks):
        keys = block.keys.unpack("cpu", adapter.dtype)[:, :, block.visual]
        rank = score_keys(window, keys.permute(2, 0, 1, 3))
        for row, t in enumerate(block.grids.t.tolist()):
            entries = (block.grids.entry_t == t).nonzero().flatten()
            budget = int(plan.budgets[plan.group[plan.table.offset[i] + row]])
            best = entries[torch.argsort(rank[entries], descending=True, stable=True)[:budget]]
            assert torch.equal(kept[i][torch.isin(kept[i], entries)], torch.sort(best).values)


def test_segments_found_in_every_chunk_are_the_budgets_units(qwen_adapter):
    adapter = qwen_adapter
    rng = np.random.default_rng(3)
    scenes = rng.integers(0, 256, (3, frame_side(adapter), frame_side(adapter), 3), dtype=np.uint8)
    chunks = encode_chunks(adapter, scenes[[0] * 6 + [1] * 6 + [2] * 4])  # 4 chunks of 2 grids, cuts at grids 3 and 6
    temporal = TemporalReducer(keep_ratio=0.5)
    memory = ingest(adapter, chunks, FULL, reducer=temporal.stream())
    whole = temporal(VisualTokens.cat([t for t, _, _ in chunks])).extra["segment_starts"]
    assert memory.segment_starts == whole == [0, 3, 6]  # the starts of chunks 2 and 4 are kept
    prompt, question = _question(adapter)
    reducer = BudgetReducer(token_budget=20, unit="segment", temperature=0.05)
    rec = recall(adapter, memory, prompt, FULL, budget=reducer, context={"question_embeds": question})
    # a segment is scored by the mean of its grids' means and holds what its grids hold
    grids = [b.grids for b in memory.blocks]
    t, means, counts = (torch.cat([getattr(g, name) for g in grids]) for name in ("t", "embeds", "counts"))
    segment = torch.searchsorted(torch.tensor(whole), t, right=True) - 1
    q = torch.nn.functional.normalize(question.float().mean(0), dim=0)
    scores = torch.stack([torch.nn.functional.normalize(means[segment == s].mean(0), dim=0) @ q for s in range(3)])
    capacity = torch.stack([counts[segment == s].sum() for s in range(3)])
    expected = allocate(scores / 0.05, capacity, 20)
    got = torch.bincount(torch.searchsorted(torch.tensor(whole), rec.visual_grid, right=True) - 1, minlength=3)
    assert torch.equal(got, expected) and rec.visual_attended == 20
