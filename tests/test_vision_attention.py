"""Packed vision attention: the same output as transformers' per-window loop, restored afterwards."""

import numpy as np
import pytest
import torch

from vidqa.vlm.vision_attention import NAME, packed_vision_attention, varlen_sdpa


def _reference(q, k, v, cu, scale):
    """One SDPA call per segment, as transformers' SDPA path does it."""
    outs = []
    for a, b in zip(cu[:-1], cu[1:]):
        outs.append(torch.nn.functional.scaled_dot_product_attention(
            q[:, :, a:b], k[:, :, a:b], v[:, :, a:b], scale=scale).transpose(1, 2))
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("cu", [[0, 64, 128, 192], [0, 16, 24, 40, 48, 63], [0, 7], [0, 5, 5, 9]])
def test_varlen_sdpa_equals_one_call_per_segment(cu):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 3, cu[-1], 16, generator=g) for _ in range(3))
    out, _ = varlen_sdpa(None, q, k, v, scaling=0.25, cu_seq_lens_q=torch.tensor(cu, dtype=torch.int32))
    assert out.shape == (1, cu[-1], 3, 16)
    torch.testing.assert_close(out, _reference(q, k, v, cu, 0.25), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("hw", [(32, 32), (40, 24)])  # uniform windows; windows cut at the edges
def test_vision_tower_output_is_unchanged_and_implementation_restored(qwen_adapter, hw, monkeypatch):
    model = qwen_adapter.model
    sdpa, calls = torch.nn.functional.scaled_dot_product_attention, []

    def counting_sdpa(*args, **kwargs):
        calls.append(1)
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counting_sdpa)
    frames = np.random.default_rng(1).integers(0, 256, (4, *hw, 3), dtype=np.uint8)
    inputs = qwen_adapter.processor.video_processor(videos=[frames], return_tensors="pt", do_sample_frames=False)
    pixels, grid = inputs["pixel_values_videos"], inputs["video_grid_thw"]
    with torch.no_grad():
        native = model.model.get_video_features(pixel_values_videos=pixels, video_grid_thw=grid).pooler_output[0]
        native_calls, calls[:] = len(calls), []
        before = model.model.visual.config._attn_implementation
        with packed_vision_attention(model.model.visual):
            assert model.model.visual.config._attn_implementation == NAME
            packed = model.model.get_video_features(pixel_values_videos=pixels, video_grid_thw=grid).pooler_output[0]
    # 2 grids: native runs one call per window (4 or 6 per grid) and per grid; packed at most one
    # call per distinct segment length and block.
    assert native_calls >= 10 and 2 <= len(calls) <= 2 * 4, (native_calls, len(calls))
    assert model.model.visual.config._attn_implementation == before
    torch.testing.assert_close(packed, native, atol=1e-5, rtol=1e-5)


def test_a_flash_tower_is_left_alone(qwen_adapter):
    config = qwen_adapter.model.model.visual.config
    before = config._attn_implementation
    try:
        config._attn_implementation = "flash_attention_2"
        with packed_vision_attention(qwen_adapter.model.model.visual):
            assert config._attn_implementation == "flash_attention_2"
    finally:
        config._attn_implementation = before
