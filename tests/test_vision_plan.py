"""vision_plan: the tower's grid-dependent inputs, computed once per frame size, give the tokens the
tower computes for itself."""

import numpy as np
import pytest
import torch

from vidqa.vlm import vision_attention
from vidqa.vlm.vision_plan import VisionPlans


def _frames(n=4, hw=(40, 24), seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, *hw, 3), dtype=np.uint8)


def test_encode_with_plans_equals_the_towers_own_inputs(qwen_adapter, monkeypatch):
    frames, times = _frames(), np.arange(4.0)
    planned = qwen_adapter.encode(frames, times)
    monkeypatch.setattr(vision_attention, "is_packed", lambda config: False)  # no plan: the stock call
    from vidqa.vlm import qwen2_5_vl

    monkeypatch.setattr(qwen2_5_vl, "is_packed", lambda config: False)
    stock = qwen_adapter.encode(frames, times)
    assert torch.equal(planned.embeds, stock.embeds)
    assert torch.equal(planned.grid, stock.grid)


def test_a_grid_is_planned_once_and_reused(qwen_adapter, monkeypatch):
    from transformers import vision_utils

    plans = VisionPlans(qwen_adapter.model.model.visual, capacity=2)
    assert plans.windowed  # Qwen2.5-VL: window order and window segments too
    grid = torch.tensor([[2, 10, 6]])
    first = plans.kwargs(grid, 120, torch.device("cpu"))
    assert set(first) == {"position_ids", "cu_seqlens", "max_seqlen", "window_index", "cu_window_seqlens",
                          "max_window_seqlen"}
    assert first["cu_seqlens"].tolist() == [0, 60, 120] and first["max_seqlen"] == 60
    assert first["window_index"].shape == (30,)  # one entry per merged token

    def fail(*a, **k):
        raise AssertionError("recomputed")

    for name in ("get_vision_cu_seqlens", "get_vision_position_ids", "get_vision_window_index"):
        monkeypatch.setattr(vision_utils, name, fail)
    again = plans.kwargs(grid, 120, torch.device("cpu"))
    assert all(again[k] is first[k] for k in first if torch.is_tensor(first[k]))
    # the segment plans of both boundary tensors are kept for the forwards to come
    assert vision_attention.remembered_segments(first["cu_seqlens"])[0] is first["cu_seqlens"]
    assert vision_attention.remembered_segments(first["cu_window_seqlens"])[0] is first["cu_window_seqlens"]
    monkeypatch.undo()
    # two other grids push the first out (capacity 2), and its segment plans go with it
    plans.kwargs(torch.tensor([[2, 12, 6]]), 144, torch.device("cpu"))
    plans.kwargs(torch.tensor([[4, 10, 6]]), 240, torch.device("cpu"))
    assert vision_attention.remembered_segments(first["cu_seqlens"]) is None
    assert vision_attention.remembered_segments(first["cu_window_seqlens"]) is None


def test_a_planned_forward_computes_nothing_from_the_grid(qwen_adapter, monkeypatch):
    """With the plan given, the tower's own helpers find every input precomputed (they pop it): none
    of them derives anything from ``grid_thw``, which is what made each forward wait for the GPU."""
    from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl as modeling

    frames, times = _frames(seed=1), np.arange(4.0)
    ref = qwen_adapter.encode(frames, times)  # plans this frame size
    given = []

    def watched(name, keys):
        real = getattr(modeling, name)

        def inner(*a, kwargs=None, **k):
            given.append(all(key in (kwargs or {}) for key in keys))
            return real(*a, kwargs=kwargs, **k)
        return inner

    for name, keys in (("get_vision_position_ids", ["position_ids"]),
                       ("get_vision_attention_seqlens", ["cu_seqlens", "max_seqlen"]),
                       ("get_vision_window_index", ["window_index", "cu_window_seqlens"])):
        monkeypatch.setattr(modeling, name, watched(name, keys))
    got = qwen_adapter.encode(frames, times)
    assert given == [True, True, True]
    assert torch.equal(got.embeds, ref.embeds)


@pytest.mark.parametrize("n_frames", [2, 6])
def test_plans_follow_the_number_of_frames(qwen_adapter, n_frames):
    frames, times = _frames(n_frames, seed=2), np.arange(float(n_frames))
    tokens = qwen_adapter.encode(frames, times)
    assert len(tokens) == n_frames // 2 * (40 // 8) * (24 // 8)
