"""Promises every registered reducer keeps (a matrix over REDUCERS), exact counts, and the registry /
chain spec parser."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenreduce_data import REDUCING, assert_same_tokens, chunks, make_tokens, source_rows

from vidqa.errors import ConfigError
from vidqa.tokenreduce import DEFAULT_CHAIN, REDUCERS, agnostic_spec, build_chain, build_reducer
from vidqa.tokenreduce.counts import Quota, allocate, round_half_up

AGNOSTIC = sorted(n for n, c in REDUCERS.items() if not c.question_aware)


def context_for(tokens):
    return {"question_embeds": tokens.embeds[:3] + 0.1}


def test_every_registered_reducer_is_in_the_matrix():
    assert sorted(REDUCING) == sorted(REDUCERS)


@pytest.mark.parametrize("name", sorted(REDUCERS))
def test_keep_ratio_one_is_the_identity(name):
    tokens = make_tokens(grids=5, h=3, w=5)
    out = build_reducer(name, keep_ratio=1.0)(tokens, context_for(tokens))
    assert_same_tokens(out, tokens)


@pytest.mark.parametrize("name", sorted(REDUCERS))
def test_survivors_keep_their_metadata_order_and_mass(name):
    tokens = make_tokens(grids=6, h=5, w=3, seed=1)
    tokens.size = torch.rand(len(tokens)) * 3 + 1  # as if an earlier reducer had merged
    out = build_reducer(name, **REDUCING[name])(tokens, context_for(tokens))
    assert 0 < len(out) < len(tokens)
    rows = source_rows(tokens, out)
    assert torch.all(rows[1:] > rows[:-1]), "survivors must stay in the original order"
    merged = ~torch.isclose(out.embeds, tokens.embeds[rows]).all(-1)
    if name in ("temporal", "budget"):  # subsets: survivors are input tokens, bit for bit
        assert not merged.any() and torch.equal(out.size, tokens.size[rows])
    else:  # merges: total size is kept, merged tokens carry more than their own
        torch.testing.assert_close(out.size.sum(), tokens.size.sum())
        assert (out.size[merged] > tokens.size[rows][merged]).all()
    assert out.grid_hw == tokens.grid_hw


@pytest.mark.parametrize("name", sorted(REDUCERS))
def test_dtype_and_empty_inputs(name):
    tokens = make_tokens(grids=4).to(dtype=torch.bfloat16)
    reducer = build_reducer(name, **REDUCING[name])
    out = reducer(tokens, context_for(tokens))
    assert out.embeds.dtype == torch.bfloat16 and len(out) < len(tokens)
    empty = tokens.select(torch.zeros(len(tokens), dtype=torch.bool))
    assert len(reducer(empty, context_for(tokens))) == 0


@pytest.mark.parametrize("name", AGNOSTIC)
@pytest.mark.parametrize("grids_per_chunk", [1, 3])
def test_chunk_by_chunk_equals_whole(name, grids_per_chunk):
    tokens = make_tokens(grids=9, h=4, w=5, seed=2)
    whole = build_reducer(name, **REDUCING[name])(tokens)
    stream = build_reducer(name, **REDUCING[name]).stream()
    parts = [stream(c) for c in chunks(tokens, grids_per_chunk)]
    assert_same_tokens(type(tokens).cat(parts), whole)


@pytest.mark.parametrize("ratio", [0.1, 0.25, 0.37, 0.5, 0.8])
@pytest.mark.parametrize("name", ["temporal", "tome", "budget"])
def test_keep_ratio_budgets_are_met_exactly(name, ratio):
    tokens = make_tokens(grids=7, h=3, w=5, seed=3)  # 15 tokens a grid: keep_ratio * 15 is rarely whole
    out = build_reducer(name, keep_ratio=ratio)(tokens, context_for(tokens))
    assert len(out) == round_half_up(ratio * len(tokens))
    if name != "budget":  # a running quota: every grid gets floor or ceil of its share
        per_grid = torch.bincount(out.grid[:, 0])
        assert set(per_grid.tolist()) <= {math.floor(ratio * 15), math.ceil(ratio * 15)}


def test_every_grid_keeps_a_token_when_the_ratio_is_tiny():
    tokens = make_tokens(grids=5)
    for name in ("temporal", "tome"):
        out = build_reducer(name, keep_ratio=0.01)(tokens)
        assert torch.equal(torch.unique(out.grid[:, 0]), torch.arange(5))
        assert len(out) == 5


def test_quota_is_the_same_for_any_split():
    whole, parts = Quota(0.3), Quota(0.3)
    assert whole.take(70) == 21
    assert sum(parts.take(n) for n in (7, 13, 50)) == 21


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 10), st.integers(0, 30)), min_size=1, max_size=12), st.integers(0, 400))
def test_allocate_meets_the_total_and_never_overfills(groups, total):
    weights = torch.tensor([w for w, _ in groups])
    capacity = torch.tensor([c for _, c in groups])
    budget = allocate(weights.log(), capacity, total)
    assert int(budget.sum()) == min(total, int(capacity.sum()))
    assert (budget >= 0).all() and (budget <= capacity).all()


def test_allocate_is_proportional_with_largest_remainders():
    # shares 4.5, 3.0, 1.5 of 9 -> remainders .5, 0, .5: the earlier of the tied groups gets the extra
    assert allocate(torch.tensor([3.0, 2.0, 1.0]).log(), torch.tensor([10, 10, 10]), 9).tolist() == [5, 3, 1]
    # a group that cannot hold its share hands the rest on, in proportion
    assert allocate(torch.tensor([8.0, 1.0, 1.0]).log(), torch.tensor([2, 20, 20]), 12).tolist() == [2, 5, 5]


def test_chain_spec_parsing_split_and_errors():
    chain = build_chain(" temporal:keep_ratio=0.5:merge=false , tome:keep_ratio=0.5:window=2,budget:keep_ratio=0.5")
    agnostic, aware = chain.split()
    assert [r.name for r in agnostic.reducers] == ["temporal", "tome"]
    assert [r.name for r in aware.reducers] == ["budget"]
    assert agnostic.reducers[0].merge is False and agnostic.reducers[1].window == 2
    assert build_chain("temporal:threshold=0.9:merge=yes").reducers[0].merge is True
    assert len(build_chain("")) == 0 and build_chain("").split() == (None, None)
    assert [r.name for r in build_chain(DEFAULT_CHAIN).reducers] == ["temporal", "tome", "budget"]
    assert agnostic_spec(" temporal:keep_ratio=0.5 ,budget:token_budget=9,tome") == "temporal:keep_ratio=0.5,tome"
    with pytest.raises(ConfigError, match="unknown reducer 'magic'; valid: budget, pool, temporal, tome"):
        build_chain("magic:keep_ratio=0.5")
    for bad in ("tome:keep_ratio=2", "tome:speed=3", "tome:window=1.5", "temporal:merge=maybe",
                "tome:keep_ratio", "temporal:keep_ratio=0.5:threshold=0.9", "pool:keep_ratio=0.1",
                "budget:unit=minute", "budget:temperature=0"):
        with pytest.raises(ConfigError):
            build_chain(bad)


def test_chain_applies_in_order_and_streams_each_member():
    tokens = make_tokens(grids=6, h=4, w=4, seed=5)
    spec = "temporal:keep_ratio=0.5,tome:keep_ratio=0.5"
    by_hand = build_reducer("tome", keep_ratio=0.5)(build_reducer("temporal", keep_ratio=0.5)(tokens))
    assert_same_tokens(build_chain(spec)(tokens), by_hand)
    stream = build_chain(spec).stream()
    assert_same_tokens(type(tokens).cat([stream(c) for c in chunks(tokens, 2)]), by_hand)


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(REDUCERS))
def test_on_the_gpu_the_same_tokens_survive(name):
    tokens = make_tokens(grids=8, h=16, w=16, dim=256, seed=9, noise=0.5)
    cpu = build_reducer(name, **REDUCING[name])(tokens, context_for(tokens))
    gpu_in = tokens.to("cuda")
    gpu = build_reducer(name, **REDUCING[name])(gpu_in, context_for(gpu_in))
    assert gpu.embeds.is_cuda
    assert torch.equal(gpu.grid.cpu(), cpu.grid) and torch.equal(gpu.size.cpu(), cpu.size)
    torch.testing.assert_close(gpu.embeds.cpu(), cpu.embeds, rtol=1e-4, atol=1e-4)
