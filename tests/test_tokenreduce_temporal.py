"""Temporal reducer: which tokens survive, merging, segments, static videos and scripted events."""

import numpy as np
import torch
from tokenreduce_data import (assert_same_tokens, chunks, gradient_frames, make_tokens, pattern_tokens,
                              source_rows, tokens_from)

from vidqa.tokenreduce import BudgetReducer, TemporalReducer
from vidqa.tokens import VisualTokens

cos = torch.nn.functional.cosine_similarity


def test_kept_tokens_are_exactly_the_least_redundant():
    tokens = make_tokens(grids=3, h=4, w=4, seed=3, noise=0.8)
    x = tokens.embeds.reshape(3, 16, -1)
    out = TemporalReducer(keep_ratio=0.5)(tokens)
    kept = [sorted((g[1] * 4 + g[2]).item() for g in out.grid if g[0] == t) for t in range(3)]
    # grid 0: nothing seen yet, so the 8 least typical (lowest cosine to the grid's mean)
    first = torch.argsort(cos(x[0], x[0].mean(0, keepdim=True)))[:8]
    assert kept[0] == sorted(first.tolist())
    # grid 1: compared with grid 0 (the reference where kept, the previous token where not)
    assert kept[1] == sorted(torch.argsort(cos(x[1], x[0]))[:8].tolist())
    # grid 2: the last kept token where there is one, otherwise the token of grid 1
    last = {i: x[0, i] for i in kept[0]} | {i: x[1, i] for i in kept[1]}
    reference = torch.stack([last.get(i, x[1, i]) for i in range(16)])
    assert kept[2] == sorted(torch.argsort(cos(x[2], reference))[:8].tolist())


def test_threshold_mode_drops_what_repeats_its_reference():
    tokens = make_tokens(grids=2, h=4, w=4, seed=4, noise=0.6)
    sims = cos(tokens.embeds[16:], tokens.embeds[:16])
    threshold = float(sims.median())
    out = TemporalReducer(threshold=threshold)(tokens)
    second = out.grid[out.grid[:, 0] == 1]
    assert sorted((second[:, 1] * 4 + second[:, 2]).tolist()) == (sims <= threshold).nonzero().flatten().tolist()
    assert (out.grid[:, 0] == 0).sum() == 16  # the first grid is all new


def test_a_static_video_collapses():
    static = make_tokens(grids=10, static=True)
    assert len(TemporalReducer(threshold=0.95, min_per_grid=0)(static)) == 16  # only the first grid
    out = TemporalReducer(threshold=0.95)(static)  # default: one token per grid keeps each moment visible
    assert len(out) == 16 + 9 and torch.equal(torch.unique(out.grid[:, 0]), torch.arange(10))
    assert len(TemporalReducer(keep_ratio=0.1)(static)) == round(0.1 * 160)


def test_a_scripted_event_survives_temporal_reduction():
    frames = gradient_frames(12, size=16)
    frames += np.random.default_rng(0).normal(0, 0.01, frames.shape).astype(np.float32)  # sensor noise
    frames[6:8, 8:12, 4:8] = 1.0  # a white square shows for two frames at block (2, 1)
    tokens = pattern_tokens(frames, patch=4)
    for reducer in (TemporalReducer(threshold=0.9), TemporalReducer(keep_ratio=0.1)):
        out = reducer(tokens)
        survivors = {tuple(g) for g in out.grid.tolist()}
        assert (6, 2, 1) in survivors, "the event's first frame must survive"
        assert (8, 2, 1) in survivors, "and the frame where it is gone again"
    out = TemporalReducer(threshold=0.9)(tokens)
    assert len(out) == 16 + 2 + 9, "apart from the first frame, only the event (and one token a frame) is new"


def test_merge_keeps_the_size_weighted_sum_and_the_survivors():
    tokens = make_tokens(grids=8, h=3, w=4, seed=6, noise=0.3)
    dropped = TemporalReducer(threshold=0.97)(tokens)
    merged = TemporalReducer(threshold=0.97, merge=True)(tokens)
    assert torch.equal(merged.grid, dropped.grid) and len(merged) < len(tokens)
    torch.testing.assert_close((merged.embeds * merged.size[:, None]).sum(0), tokens.embeds.sum(0),
                               rtol=1e-5, atol=1e-4)
    assert merged.size.sum() == len(tokens)
    # a merged token is the mean of its run: location (0, 0) is kept at some grids, dropped in between
    at = ((tokens.grid[:, 1] == 0) & (tokens.grid[:, 2] == 0)).nonzero().flatten()
    kept_t = merged.grid[(merged.grid[:, 1] == 0) & (merged.grid[:, 2] == 0), 0].tolist()
    first_run = [i for i in at.tolist() if tokens.grid[i, 0] < (kept_t[1] if len(kept_t) > 1 else 99)]
    row = source_rows(tokens, merged).tolist().index(first_run[0])
    torch.testing.assert_close(merged.embeds[row], tokens.embeds[first_run].mean(0))
    assert merged.size[row] == len(first_run)


def test_merge_streaming_keeps_the_same_survivors():
    tokens = make_tokens(grids=8, h=3, w=4, seed=6, noise=0.3)
    whole = TemporalReducer(threshold=0.97, merge=True)(tokens)
    stream = TemporalReducer(threshold=0.97, merge=True).stream()
    parts = VisualTokens.cat([stream(c) for c in chunks(tokens, 3)])
    assert torch.equal(parts.grid, whole.grid) and torch.equal(parts.frame, whole.frame)
    # a run crossing a chunk boundary loses what came after the boundary; every other survivor is the same
    same = parts.size == whole.size
    assert (parts.size[~same] < whole.size[~same]).all() and 0 < int((~same).sum()) < len(whole)
    torch.testing.assert_close(parts.embeds[same], whole.embeds[same])


def _two_scenes(grids_a=5, grids_b=5, seed=7):
    a = make_tokens(grids=grids_a, seed=seed)
    b = make_tokens(grids=grids_b, seed=seed + 100)
    return tokens_from(torch.cat([a.embeds, b.embeds]), grids_a + grids_b, 4, 4)


def test_scene_cuts_are_segment_starts_whole_or_streamed():
    tokens = _two_scenes()
    out = TemporalReducer(keep_ratio=0.5)(tokens)
    assert out.extra["segment_starts"] == [0, 5]
    change = out.extra["change"]
    assert np.isnan(change[0]) and change[5] > 0.5 and max(change[1:5] + change[6:]) < 0.1
    stream = TemporalReducer(keep_ratio=0.5).stream()
    parts = [stream(c) for c in chunks(tokens, 3)]
    assert [s for p in parts for s in p.extra["segment_starts"]] == [0, 5] == stream.state["segment_starts"]
    # joined, the chunks carry every chunk's starts and changes (the cut at 5 is in the second
    # chunk), so the question-aware budget sees both segments
    joined = VisualTokens.cat(parts)
    assert joined.extra["segment_starts"] == [0, 5]
    np.testing.assert_array_equal(joined.extra["change"], change)
    assert [g.tolist() for g in BudgetReducer(unit="segment").groups(joined, {})] == \
        [(joined.grid[:, 0] < 5).nonzero().flatten().tolist(), (joined.grid[:, 0] >= 5).nonzero().flatten().tolist()]


def test_state_deep_copies_for_a_retry():
    import copy

    tokens = _two_scenes()
    parts = chunks(tokens, 2)
    stream = TemporalReducer(keep_ratio=0.3).stream()
    stream(parts[0])
    saved = copy.deepcopy(stream)
    first = stream(parts[1])
    assert_same_tokens(saved(parts[1]), first)


def test_a_cut_inside_a_grid_starts_one_segment():
    a, b = make_tokens(grids=5, seed=11), make_tokens(grids=5, seed=12)
    mixed = (a.embeds[:16] + b.embeds[:16]) / 2  # the grid's two frames straddle the cut
    tokens = tokens_from(torch.cat([a.embeds, mixed, b.embeds]), 11, 4, 4)
    out = TemporalReducer(keep_ratio=0.5)(tokens)
    assert out.extra["change"][5] > 0.1 and out.extra["change"][6] > 0.1
    assert out.extra["segment_starts"] == [0, 5]
    assert TemporalReducer(keep_ratio=0.5, min_segment=1)(tokens).extra["segment_starts"] == [0, 5, 6]
