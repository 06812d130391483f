"""ToMe merging (bipartite matching, size-weighted means, windows) and progressive pooling."""

import pytest
import torch
from tokenreduce_data import assert_same_tokens, chunks, make_tokens, source_rows

from vidqa.tokenreduce import PoolReducer, ToMeReducer
from vidqa.tokenreduce import merge as merge_mod
from vidqa.tokenreduce.merge import bipartite_merge
from vidqa.tokens import VisualTokens


def mass(tokens: VisualTokens, mask: torch.Tensor) -> torch.Tensor:
    return (tokens.embeds[mask].double() * tokens.size[mask, None].double()).sum(0)


def test_bipartite_merge_folds_the_best_matched_pair():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.99, 0.05], [1.0, 0.01]])
    size = torch.tensor([1.0, 1.0, 1.0, 3.0])
    kept, merged, new_size = bipartite_merge(x, size, 1)
    # A = {0, 2}, B = {1, 3}; A0 matches B3 best (cos ~1): 0 folds into 3, weighted by size
    assert kept.tolist() == [1, 2, 3] and new_size.tolist() == [1.0, 1.0, 4.0]
    torch.testing.assert_close(merged[2], (x[0] + 3 * x[3]) / 4)
    assert torch.equal(merged[:2], x[1:3])  # untouched rows are returned bit for bit


def test_fallback_matching_equals_the_kernel(monkeypatch):
    g = torch.Generator().manual_seed(0)
    x, size = torch.randn(33, 40, generator=g), torch.rand(33, generator=g) + 0.5
    with_kernel = bipartite_merge(x, size, 12)
    monkeypatch.setattr(merge_mod, "_kernel", lambda: None)
    fallback = bipartite_merge(x, size, 12)
    for a, b in zip(with_kernel, fallback):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("window", [1, 3])
def test_tome_preserves_the_size_weighted_sum_per_group(window):
    tokens = make_tokens(grids=6, h=4, w=5, seed=4)
    tokens.size = torch.rand(len(tokens)) + 0.5
    out = ToMeReducer(keep_ratio=0.3, window=window)(tokens)
    assert len(out) == round(0.3 * len(tokens))
    for w in range(6 // window):
        a = tokens.grid[:, 0] // window == w
        b = out.grid[:, 0] // window == w
        torch.testing.assert_close(mass(out, b), mass(tokens, a), rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(out.size[b].sum(), tokens.size[a].sum())
    source_rows(tokens, out)  # merged tokens keep the metadata of their destination


def test_tome_merges_duplicates_first():
    tokens = make_tokens(grids=1, h=4, w=4, seed=5)
    tokens.embeds[1::2] = tokens.embeds[0::2] * 2  # every odd token points where its even neighbour does
    out = ToMeReducer(keep_ratio=0.5)(tokens)
    # each A token (even) folds into its B twin (odd): survivors are the odd positions, sizes 2
    assert (out.grid[:, 2] % 2 == 1).all() and (out.size == 2).all()
    torch.testing.assert_close(out.embeds, tokens.embeds[0::2] * 1.5)


def test_tome_window_merges_across_time_and_streams_on_window_boundaries():
    static = make_tokens(grids=4, static=True)
    out = ToMeReducer(keep_ratio=0.5, window=2)(static)
    # every token folds into its identical twin in the other grid of its window (checkerboard sets)
    assert (out.size == 2).all()
    torch.testing.assert_close(out.embeds, static.embeds[source_rows(static, out)])
    position = out.grid[:, 1] * 4 + out.grid[:, 2]
    assert ((position + out.grid[:, 0]) % 2 == 1).all(), "survivors are the B half of the checkerboard"
    tokens = make_tokens(grids=8, seed=6)
    whole = ToMeReducer(keep_ratio=0.4, window=2)(tokens)
    stream = ToMeReducer(keep_ratio=0.4, window=2).stream()
    assert_same_tokens(VisualTokens.cat([stream(c) for c in chunks(tokens, 4)]), whole)


def test_pool_pools_the_blocks_of_non_key_grids():
    tokens = make_tokens(grids=4, h=5, w=5, seed=7)  # odd sides: edge blocks of 2 and 1 tokens
    out = PoolReducer(full_every=3)(tokens)
    per_grid = torch.bincount(out.grid[:, 0]).tolist()
    assert per_grid == [25, 9, 9, 25]
    assert out.size.sum() == len(tokens)
    g1 = out.grid[:, 0] == 1
    # the pooled token of block (0, 0) sits at its top-left cell and is the block's mean
    assert out.grid[g1][:3].tolist() == [[1, 0, 0], [1, 0, 2], [1, 0, 4]]
    block = (tokens.grid[:, 0] == 1) & (tokens.grid[:, 1] < 2) & (tokens.grid[:, 2] < 2)
    torch.testing.assert_close(out.embeds[g1][0], tokens.embeds[block].mean(0))
    corner = (tokens.grid[:, 0] == 1) & (tokens.grid[:, 1] == 4) & (tokens.grid[:, 2] == 4)
    assert torch.equal(out.embeds[g1][-1], tokens.embeds[corner][0]) and out.size[g1][-1] == 1


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.75])
def test_pool_keep_ratio_spreads_full_grids_and_lands_near_the_ratio(ratio):
    tokens = make_tokens(grids=40, h=4, w=4)
    out = PoolReducer(keep_ratio=ratio)(tokens)
    per_grid = torch.bincount(out.grid[:, 0], minlength=40)
    assert per_grid[0] == 16 and set(per_grid.tolist()) == {4, 16}
    assert abs(len(out) - ratio * len(tokens)) <= 12  # within one grid's pooling
    full = (per_grid == 16).nonzero().flatten()
    assert (full[1:] - full[:-1]).max() - (full[1:] - full[:-1]).min() <= 1, "full grids spread evenly"


def test_pool_factor_three():
    tokens = make_tokens(grids=2, h=6, w=6)
    out = PoolReducer(full_every=2, factor=3)(tokens)
    assert torch.bincount(out.grid[:, 0]).tolist() == [36, 4]
    torch.testing.assert_close(mass(out, out.grid[:, 0] == 1), mass(tokens, tokens.grid[:, 0] == 1), rtol=1e-5, atol=1e-5)
