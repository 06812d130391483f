"""vision_fused: the fused block forward computes what the stock Qwen2.5-VL block does."""

import copy
import os

import numpy as np
import pytest
import torch

from vidqa.vlm.vision_attention import packed_vision_attention
from vidqa.vlm.vision_fused import fuse_vision_blocks

from kernel_counts import count_kernel_calls

TRITON = os.environ.get("TRITON_INTERPRET") == "1" or torch.cuda.is_available()


def _tower_and_inputs(adapter, hw=(40, 24), frames=4):
    visual = copy.deepcopy(adapter.model.model.visual)
    for block in visual.blocks:
        block.__dict__.pop("forward", None)  # the stock block, whatever the shared adapter did
    pixels = np.random.default_rng(3).integers(0, 256, (frames, *hw, 3), dtype=np.uint8)
    inputs = adapter.processor.video_processor(videos=[pixels], return_tensors="pt", do_sample_frames=False)
    return visual, inputs["pixel_values_videos"], inputs["video_grid_thw"]


def _run(visual, pixels, grid):
    with torch.no_grad(), packed_vision_attention(visual):
        return visual(pixels, grid_thw=grid).pooler_output


def _count_kernel_calls(monkeypatch) -> dict:
    from vidqa.vlm import vision_fused

    return count_kernel_calls(monkeypatch, vision_fused)


def test_fused_reference_path_is_the_stock_tower_exactly(qwen_adapter, monkeypatch):
    """On a CPU the kernels' PyTorch references run: the fused tower gives the same bits, and every
    block really went through the fused forward (two norms, one rotary, one gate per block)."""
    visual, pixels, grid = _tower_and_inputs(qwen_adapter)
    ref = _run(visual, pixels, grid)
    assert fuse_vision_blocks(visual) == len(visual.blocks)
    assert fuse_vision_blocks(visual) == len(visual.blocks)  # idempotent
    counts = _count_kernel_calls(monkeypatch)
    got = _run(visual, pixels, grid)
    blocks = len(visual.blocks)
    assert counts == {"add_rms_norm": 2 * blocks, "rotary_qk": blocks, "silu_mul": blocks}
    assert torch.equal(got, ref)


def test_fused_block_falls_back_outside_inference(qwen_adapter, monkeypatch):
    """With autograd on (training) or outside the packed-attention block, the stock forward runs."""
    visual, pixels, grid = _tower_and_inputs(qwen_adapter)
    fuse_vision_blocks(visual)
    counts = _count_kernel_calls(monkeypatch)
    with torch.no_grad():
        plain = visual(pixels, grid_thw=grid).pooler_output  # stock attention implementation
    with packed_vision_attention(visual):
        trained = visual(pixels, grid_thw=grid).pooler_output
    assert counts == {"add_rms_norm": 0, "rotary_qk": 0, "silu_mul": 0}
    assert trained.requires_grad
    torch.testing.assert_close(trained.detach(), plain, atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not TRITON, reason="needs CUDA or TRITON_INTERPRET=1")
def test_fused_triton_tower_matches_the_stock_tower(qwen_adapter, monkeypatch):
    visual, pixels, grid = _tower_and_inputs(qwen_adapter)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    visual = visual.to(dev)
    pixels, grid = pixels.to(dev), grid.to(dev)
    ref = _run(visual, pixels, grid)
    fuse_vision_blocks(visual)
    monkeypatch.setenv("VIDQA_KERNELS", "triton")
    got = _run(visual, pixels, grid)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
    assert not torch.equal(got, torch.zeros_like(got))


def test_non_gated_towers_are_left_alone(qwen_adapter):
    visual, _, _ = _tower_and_inputs(qwen_adapter)
    visual.config.hidden_act = "quick_gelu"  # Qwen2-VL's tower activation: not this forward's math
    assert fuse_vision_blocks(visual) == 0
    assert all(b.__dict__.get("forward") is None for b in visual.blocks)
