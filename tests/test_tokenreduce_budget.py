"""Query-aware budgets: exact totals, relevance-proportional shares, the tokens kept inside a group, and
the two frame scorers (the VLM's embeddings; a tiny random open_clip model built from a config)."""

import json

import numpy as np
import pytest
import torch
from tokenreduce_data import make_tokens

from vidqa.errors import ConfigError
from vidqa.tokenreduce import BudgetReducer, ClipFrameScorer, FrameScorer, build_chain
from vidqa.tokenreduce.counts import allocate

cos = torch.nn.functional.cosine_similarity


class FixedScorer(FrameScorer):
    def __init__(self, values):
        self.values = torch.tensor(values, dtype=torch.float32)

    def scores(self, tokens, groups, context):
        assert len(groups) == len(self.values)
        return self.values


def test_the_relevant_grid_gets_the_most_tokens():
    tokens = make_tokens(grids=4, seed=2, noise=1.0)
    q = tokens.embeds[tokens.grid[:, 0] == 2][:5]
    out = BudgetReducer(keep_ratio=0.25, temperature=0.05)(tokens, {"question_embeds": q})
    counts = torch.bincount(out.grid[:, 0], minlength=4)
    assert len(out) == 16 and int(counts.argmax()) == 2 and counts[2] > counts.sum() / 4


def test_budgets_follow_the_scores_exactly_and_spill_over_full_groups():
    tokens = make_tokens(grids=5, h=3, w=3)
    scores = [0.0, 3.0, 1.0, 0.5, 0.2]
    for total in (7, 20, 30):
        out = BudgetReducer(token_budget=total, temperature=0.5)(
            tokens, {"scorer": FixedScorer(scores), "question_embeds": tokens.embeds[:2]})
        expected = allocate(torch.tensor(scores) / 0.5, torch.full((5,), 9), total)
        assert torch.equal(torch.bincount(out.grid[:, 0], minlength=5), expected)
    # a very sharp softmax fills the relevant grid (9 tokens) and hands the rest to the next best
    out = BudgetReducer(token_budget=12, temperature=1e-4)(tokens, {"scorer": FixedScorer(scores)})
    assert torch.bincount(out.grid[:, 0], minlength=5).tolist() == [0, 9, 3, 0, 0]
    assert BudgetReducer(token_budget=100)(tokens, {"scorer": FixedScorer(scores)}) is tokens


@pytest.mark.parametrize("rank", ["question", "norm"])
def test_inside_a_grid_the_top_ranked_tokens_are_kept(rank):
    tokens = make_tokens(grids=2, h=4, w=4, seed=8, noise=1.0)
    q = torch.randn(3, 16, generator=torch.Generator().manual_seed(1))
    out = BudgetReducer(token_budget=10, rank=rank)(tokens, {"scorer": FixedScorer([1.0, 0.0]), "question_embeds": q})
    for t, b in enumerate(torch.bincount(out.grid[:, 0], minlength=2).tolist()):
        x = tokens.embeds[tokens.grid[:, 0] == t]
        key = cos(x, q.mean(0, keepdim=True)) if rank == "question" else x.norm(dim=-1)
        kept = out.grid[out.grid[:, 0] == t]
        assert sorted((kept[:, 1] * 4 + kept[:, 2]).tolist()) == sorted(torch.argsort(key, descending=True)[:b].tolist())


def test_segments_share_the_budget_as_units():
    tokens = make_tokens(grids=6, h=2, w=2)
    tokens.extra["segment_starts"] = [0, 4]
    out = BudgetReducer(token_budget=6, unit="segment", temperature=1e-4)(tokens, {"scorer": FixedScorer([0.0, 1.0])})
    assert len(out) == 6 and (out.grid[:, 0] >= 4).sum() == 6  # the relevant segment holds 8: takes all 6
    out = BudgetReducer(token_budget=6, unit="segment", temperature=1e-4)(
        tokens, {"scorer": FixedScorer([2.0, 1.0, 0.0]), "segment_starts": [0, 2, 4]})
    assert torch.bincount(out.grid[:, 0] // 2, minlength=3).tolist() == [6, 0, 0]


def test_missing_inputs_are_config_errors():
    tokens = make_tokens(grids=2)
    with pytest.raises(ConfigError, match="question_embeds"):
        BudgetReducer(keep_ratio=0.5)(tokens, {})


# ---------------------------------------------------------------------------- open_clip scorer
TINY_CLIP = {"embed_dim": 16,
             "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
             "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


@pytest.fixture(scope="module")
def clip_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "vidqa-tiny-clip.json"
    path.write_text(json.dumps(TINY_CLIP))
    torch.manual_seed(0)
    return path


@pytest.fixture(scope="module")
def clip_scorer(clip_config):
    return ClipFrameScorer(config=str(clip_config))


def _frames(n=8):
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (n, 40, 48, 3), dtype=np.uint8)


def test_clip_scores_are_the_best_frame_similarity(clip_scorer):
    from PIL import Image

    tokens = make_tokens(grids=4)  # grid t holds frame 2t
    frames = _frames()
    groups = [torch.arange(0, 32), torch.arange(32, 64)]  # two groups of two grids: frames {0, 2}, {4, 6}
    got = clip_scorer.scores(tokens, groups, {"frames": frames, "question": "a red circle"})
    m, pre, tok = clip_scorer.model, clip_scorer.preprocess, clip_scorer.tokenizer
    with torch.no_grad():
        img = m.encode_image(torch.stack([pre(Image.fromarray(f)) for f in frames]))
        txt = m.encode_text(tok(["a red circle"]))
    sim = cos(img, txt)
    torch.testing.assert_close(got, torch.stack([sim[[0, 2]].max(), sim[[4, 6]].max()]), rtol=1e-4, atol=1e-5)


def test_clip_features_are_cached_per_video(clip_scorer, monkeypatch):
    tokens, frames = make_tokens(grids=4), _frames()
    calls = []
    encode = clip_scorer.model.encode_image
    monkeypatch.setattr(clip_scorer.model, "encode_image", lambda x: calls.append(len(x)) or encode(x))
    ctx = {"frames": frames, "question": "a square", "video": "v1"}
    first = clip_scorer.scores(tokens, tokens.frame_groups(), ctx)
    again = clip_scorer.scores(tokens, tokens.frame_groups(), {**ctx, "question": "a circle"})
    assert calls == [4] and not torch.equal(first, again)
    clip_scorer.scores(tokens, tokens.frame_groups(), {**ctx, "video": "v2"})
    assert calls == [4, 4]


def test_clip_checkpoint_loads_from_a_local_file_only(clip_config, clip_scorer, tmp_path):
    ckpt = tmp_path / "tiny.pt"
    torch.save(clip_scorer.model.state_dict(), ckpt)
    loaded = ClipFrameScorer(config=str(clip_config), pretrained=str(ckpt))
    tokens, ctx = make_tokens(grids=3), {"frames": _frames(), "question": "a card"}
    torch.testing.assert_close(loaded.scores(tokens, tokens.frame_groups(), ctx),
                               clip_scorer.scores(tokens, tokens.frame_groups(), ctx))
    with pytest.raises(ConfigError, match="not a local file"):
        ClipFrameScorer(config=str(clip_config), pretrained="openai")
    with pytest.raises(ConfigError, match="unknown open_clip model"):
        ClipFrameScorer(model_name="no-such-model")
    with pytest.raises(ConfigError, match="frames"):
        clip_scorer.scores(tokens, tokens.frame_groups(), {"question": "a card"})


def test_budget_with_the_clip_scorer_from_a_spec(clip_config):
    chain = build_chain(f"budget:scorer=clip:clip_config={clip_config}:token_budget=10:temperature=0.01")
    reducer = chain.reducers[0]
    tokens = make_tokens(grids=4)
    ctx = {"frames": _frames(), "question": "a blue square", "question_embeds": tokens.embeds[:2]}
    out = chain(tokens, ctx)
    scores = reducer.frame_scorer(ctx).scores(tokens, tokens.frame_groups(), ctx)
    expected = allocate(scores / 0.01, torch.full((4,), 16), 10)
    assert len(out) == 10 and torch.equal(torch.bincount(out.grid[:, 0], minlength=4), expected)
