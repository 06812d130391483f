"""vision_fast: the padded MLP and the matmul patch embedding compute what the stock tower does."""

import copy

import numpy as np
import torch

from vidqa.vlm import vision_attention
from vidqa.vlm.vision_attention import packed_vision_attention
from vidqa.vlm.vision_fast import pad_mlp_width, patch_embed_as_matmul, speed_up_vision


def _tower_inputs(adapter, hw=(40, 24), frames=4):
    pixels = np.random.default_rng(2).integers(0, 256, (frames, *hw, 3), dtype=np.uint8)
    inputs = adapter.processor.video_processor(videos=[pixels], return_tensors="pt", do_sample_frames=False)
    return inputs["pixel_values_videos"], inputs["video_grid_thw"]


def _run(visual, pixels, grid):
    with torch.no_grad():
        return visual(pixels, grid_thw=grid).pooler_output


def test_padded_mlp_is_the_same_function_and_reloads(qwen_adapter):
    visual = copy.deepcopy(qwen_adapter.model.model.visual)
    pixels, grid = _tower_inputs(qwen_adapter)
    ref = _run(visual, pixels, grid)
    width = visual.blocks[0].mlp.gate_proj.out_features
    assert pad_mlp_width(visual, multiple=48)  # the tiny tower is 64 wide: 96 needs real padding
    mlp = visual.blocks[0].mlp
    assert mlp.gate_proj.out_features == mlp.up_proj.out_features == mlp.down_proj.in_features == 96 > width
    assert visual.config.intermediate_size == 96
    assert not pad_mlp_width(visual, multiple=48)  # idempotent
    torch.testing.assert_close(_run(visual, pixels, grid), ref, atol=1e-6, rtol=1e-6)
    # the updated config describes the padded weights: a fresh tower from it loads them strictly
    fresh = type(visual)._from_config(visual.config)
    fresh.load_state_dict(visual.state_dict(), strict=True)
    torch.testing.assert_close(_run(fresh.eval(), pixels, grid), ref, atol=1e-6, rtol=1e-6)


def test_patch_embedding_as_matmul_equals_the_convolution(qwen_adapter):
    visual = copy.deepcopy(qwen_adapter.model.model.visual)
    pe = visual.patch_embed
    pe.__dict__.pop("forward", None)  # the stock Conv3d path, whatever the shared adapter did
    x = torch.randn(30, pe.in_channels * pe.temporal_patch_size * pe.patch_size ** 2)
    with torch.no_grad():
        ref = pe(x)
        assert patch_embed_as_matmul(visual)
        got = pe(x)
    assert pe.__dict__.get("forward") is not None
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_speed_up_vision_keeps_the_tower_output(qwen_adapter):
    visual = copy.deepcopy(qwen_adapter.model.model.visual)
    visual.patch_embed.__dict__.pop("forward", None)
    visual.__dict__.pop("_vidqa_fast", None)
    pixels, grid = _tower_inputs(qwen_adapter, hw=(32, 32))
    ref = _run(visual, pixels, grid)
    speed_up_vision(visual)
    speed_up_vision(visual)  # once only
    assert visual.config.intermediate_size % 64 == 0
    torch.testing.assert_close(_run(visual, pixels, grid), ref, atol=1e-5, rtol=1e-5)


def test_segment_plans_are_built_once_per_boundary_tensor(qwen_adapter, monkeypatch):
    """The tower hands the same window / full-attention boundaries to every block: inside the packed
    block their host copies (one sync each) are made once per tensor, not once per block."""
    visual = copy.deepcopy(qwen_adapter.model.model.visual)
    visual.blocks.extend([copy.deepcopy(visual.blocks[0]) for _ in range(3)])  # 5 blocks, one full-attention
    pixels, grid = _tower_inputs(qwen_adapter)
    built = []
    plan = vision_attention._segment_plan

    def counting(cu, n, device):
        before = len(vision_attention._plans)
        out = plan(cu, n, device)
        if len(vision_attention._plans) > before:
            built.append(1)
        return out

    monkeypatch.setattr(vision_attention, "_segment_plan", counting)
    with packed_vision_attention(visual):
        _run(visual, pixels, grid)
        assert len(visual.blocks) == 5 and len(built) == 2  # windows and whole grids
    assert vision_attention._plans is None  # dropped with the block
