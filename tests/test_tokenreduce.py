"""Reducer promises: identity at keep_ratio=1, exact budgets, size-weighted mass preserved,
chunked == whole for agnostic reducers, static video collapses, a scripted event survives."""

import math

import numpy as np
import pytest
import torch

from vidqa.errors import ConfigError
from vidqa.tokenreduce import REDUCERS, TemporalReducer, ToMeReducer, build_chain, build_reducer
from vidqa.tokenreduce.budget import allocate
from vidqa.tokenreduce.merge import bipartite_merge
from vidqa.tokens import VisualTokens


def make_tokens(grids=6, h=4, w=4, dim=16, seed=0, static=False, first_grid=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(h * w, dim, generator=g)
    embeds, meta = [], []
    for t in range(grids):
        x = base.clone() if static else base + 0.05 * torch.randn(h * w, dim, generator=g)
        embeds.append(x)
        for r in range(h):
            for c in range(w):
                meta.append((first_grid + t, r, c))
    grid = torch.tensor(meta)
    return VisualTokens(embeds=torch.cat(embeds), frame=grid[:, 0] * 2, time=grid[:, 0].double() * 2,
                        grid=grid, size=torch.ones(len(grid)), grid_hw=(h, w))


AGNOSTIC = [n for n, c in REDUCERS.items() if not c.question_aware]


def _identity_params(name):
    return {"pool": {"full_every": 1}}.get(name, {"keep_ratio": 1.0})


@pytest.mark.parametrize("name", sorted(REDUCERS))
def test_keep_ratio_one_is_the_identity(name):
    tokens = make_tokens()
    out = build_reducer(name, **_identity_params(name))(tokens, {"question_embeds": torch.randn(3, 16)})
    assert torch.equal(out.embeds, tokens.embeds) and torch.equal(out.grid, tokens.grid)
    assert torch.equal(out.size, tokens.size)


@pytest.mark.parametrize("name,params", [("temporal", {"keep_ratio": 0.3}), ("tome", {"keep_ratio": 0.3}),
                                         ("pool", {"full_every": 2})])
def test_chunked_equals_whole_for_agnostic_reducers(name, params):
    tokens = make_tokens(grids=8)
    whole = build_reducer(name, **params).stream()(tokens)
    stream = build_reducer(name, **params).stream()
    parts = []
    for start in range(0, 8, 3):
        idx = ((tokens.grid[:, 0] >= start) & (tokens.grid[:, 0] < start + 3)).nonzero().flatten()
        parts.append(stream(tokens.select(idx)))
    joined = VisualTokens.cat(parts)
    assert torch.equal(joined.grid, whole.grid)
    torch.testing.assert_close(joined.embeds, whole.embeds)


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.8])
def test_budgets_are_met_exactly(ratio):
    tokens = make_tokens(grids=5)
    for name in ("temporal", "tome"):
        out = build_reducer(name, keep_ratio=ratio)(tokens)
        assert len(out) == 5 * math.ceil(ratio * 16)
    q = {"question_embeds": torch.randn(2, 16)}
    assert len(build_reducer("budget", keep_ratio=ratio)(tokens, q)) == math.ceil(ratio * len(tokens))
    assert len(build_reducer("budget", token_budget=7)(tokens, q)) == 7


def test_tome_preserves_the_size_weighted_mean_and_metadata():
    tokens = make_tokens(grids=3, seed=4)
    out = ToMeReducer(keep_ratio=0.3)(tokens)
    for t in range(3):
        a, b = tokens.grid[:, 0] == t, out.grid[:, 0] == t
        before = (tokens.embeds[a] * tokens.size[a, None]).sum(0)
        after = (out.embeds[b] * out.size[b, None]).sum(0)
        torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)
        assert out.size[b].sum() == tokens.size[a].sum()
    # survivors keep the metadata of the input token they are (grid/time/frame consistent)
    full = {tuple(g): (f, tm) for g, f, tm in zip(tokens.grid.tolist(), tokens.frame.tolist(), tokens.time.tolist())}
    for g, f, tm in zip(out.grid.tolist(), out.frame.tolist(), out.time.tolist()):
        assert full[tuple(g)] == (f, tm)


def test_bipartite_merge_merges_the_most_similar_pair():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.99, 0.05], [1.0, 0.01]])
    kept, merged, size = bipartite_merge(x, torch.ones(4), 1)
    # A = {0, 2}, B = {1, 3}; token 0 is most similar to token 3 -> merged into 3
    assert kept.tolist() == [1, 2, 3] and size.tolist() == [1.0, 1.0, 2.0]
    torch.testing.assert_close(merged[2], (x[0] + x[3]) / 2)


def test_static_video_collapses_and_an_event_survives():
    static = make_tokens(grids=10, static=True)
    out = TemporalReducer(threshold=0.95)(static)
    assert len(out) == 16  # only the first grid: nothing new afterwards
    event = make_tokens(grids=10, static=True)
    where = (event.grid[:, 0] == 6) & (event.grid[:, 1] == 2) & (event.grid[:, 2] == 1)
    event.embeds[where] = torch.randn(int(where.sum()), 16) * 5
    out = TemporalReducer(threshold=0.95)(event)
    survivors = {tuple(g) for g in out.grid.tolist()}
    assert (6, 2, 1) in survivors and (7, 2, 1) in survivors  # appears, then disappears
    assert len(out) == 18


def test_kept_tokens_are_exactly_the_least_redundant():
    tokens = make_tokens(grids=2, seed=3)
    tokens.embeds[16:] = tokens.embeds[:16] + torch.linspace(0, 3, 16)[:, None] * torch.randn(16, 16)
    out = TemporalReducer(keep_ratio=0.25)(tokens)
    second = out.grid[out.grid[:, 0] == 1]
    sims = torch.nn.functional.cosine_similarity(tokens.embeds[16:], tokens.embeds[:16], dim=-1)
    expected = torch.argsort(sims)[:4]
    got = second[:, 1] * 4 + second[:, 2]
    assert sorted(got.tolist()) == sorted(expected.tolist())


def test_budget_gives_relevant_frames_more_tokens():
    tokens = make_tokens(grids=4, seed=2)
    q = tokens.embeds[tokens.grid[:, 0] == 2].mean(0, keepdim=True)
    out = build_reducer("budget", keep_ratio=0.25, temperature=0.01)(tokens, {"question_embeds": q})
    counts = torch.bincount(out.grid[:, 0], minlength=4)
    assert counts[2] == counts.max() and counts.sum() == 16


def test_allocate_respects_capacity_and_total():
    b = allocate(torch.tensor([0.9, 0.05, 0.05]), torch.tensor([3, 10, 10]), 12)
    assert b.tolist()[0] == 3 and b.sum() == 12 and (b <= torch.tensor([3, 10, 10])).all()


def test_pool_reduces_non_key_grids_four_fold():
    tokens = make_tokens(grids=4)
    out = build_reducer("pool", full_every=4)(tokens)
    assert len(out) == 16 + 3 * 4 and out.size.sum() == len(tokens)


def test_chain_parsing_and_unknown_names():
    chain = build_chain("temporal:keep_ratio=0.5, tome:keep_ratio=0.5,budget:keep_ratio=0.5")
    agnostic, aware = chain.split()
    assert [r.name for r in agnostic.reducers] == ["temporal", "tome"]
    assert [r.name for r in aware.reducers] == ["budget"]
    with pytest.raises(ConfigError, match="valid: budget, pool, temporal, tome"):
        build_chain("magic:keep_ratio=0.5")
    with pytest.raises(ConfigError):
        build_chain("tome:keep_ratio=2")
    with pytest.raises(ConfigError):
        build_chain("tome:speed=3")


@pytest.mark.parametrize("spec", ["temporal:keep_ratio=0.5", "tome:keep_ratio=0.5", "pool:full_every=2",
                                  "temporal:keep_ratio=0.7,tome:keep_ratio=0.5"])
def test_every_agnostic_reducer_runs_through_the_full_pipeline(spec, qwen_adapter, tmp_path):
    from vidqa.config import VidqaConfig, VideoConfig
    from vidqa.pipeline import VideoQA

    from videos import make_video

    clip = make_video(tmp_path / "c.mp4", 24, fps=4, width=64, height=48)
    config = VidqaConfig(video=VideoConfig(chunk_frames=4), reducers=spec, cache_dir=str(tmp_path / "c"),
                         max_new_tokens=2)
    qa = VideoQA(model="tiny-random/qwen2_5_vl", config=config, adapter=qwen_adapter)
    memory = qa.ingest(clip)
    assert memory.stats["visual_tokens_kept"] < memory.stats["visual_tokens_in"]
    assert memory.num_visual_tokens == memory.stats["visual_tokens_kept"]
    answer = qa.ask(memory, "What?")
    assert answer.tokens["visual_attended"] == memory.num_visual_tokens
