"""GPU tier (``pytest -m gpu`` on the lent machine): kernels at full size, the pipeline on CUDA."""

import pytest
import torch

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("bits", [16, 8, 4])
@pytest.mark.parametrize("lq", [1, 128])
def test_block_attention_full_size_equals_reference(bits, lq):
    from vidqa.kernels.block_attention import block_attention
    from vidqa.kernels.quant import quantize_kv

    nb, hkv, hq, t, d = 256, 4, 28, 256, 128  # 65,536 KV tokens at 7B shapes
    k = torch.randn(nb, hkv, t, d, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    if bits != 16:
        k, v = quantize_kv(k, bits, 32), quantize_kv(v, bits, 32)
    q = torch.randn(hq, lq, d, device="cuda", dtype=torch.bfloat16)
    tk, tv = torch.randn(hkv, lq, d, device="cuda"), torch.randn(hkv, lq, d, device="cuda")
    table = torch.randperm(nb, device="cuda")[:200]
    lens = torch.randint(1, t + 1, (nb,), device="cuda")
    out = torch.full((hq, lq, d), float("nan"), device="cuda")
    block_attention(q, k, v, table, lens, tk, tv, backend="triton", out=out)
    ref, _ = block_attention(q, k, v, table, lens, tk, tv, backend="naive")
    assert not out.isnan().any()
    torch.testing.assert_close(out, ref, atol=3e-2, rtol=3e-2)


def test_quant_and_match_full_size():
    from vidqa.kernels.quant import dequantize_kv, quantize_kv
    from vidqa.kernels.token_match import best_match

    x = torch.randn(64, 4, 256, 128, device="cuda", dtype=torch.bfloat16)
    for bits in (8, 4):
        a = quantize_kv(x, bits, 32, backend="triton")
        b = quantize_kv(x, bits, 32, backend="naive")
        # GPU division may round a value sitting exactly between two levels the other way.
        assert (a.data == b.data).float().mean() > 0.999 and torch.equal(a.scale, b.scale)
        step = b.scale.float().repeat_interleave(32, -1) * (1.001 if bits == 8 else 1.001)
        assert ((dequantize_kv(a, backend="triton") - dequantize_kv(b, backend="naive")).abs() <= step).all()
    a, b = torch.randn(4096, 1280, device="cuda"), torch.randn(4096, 1280, device="cuda")
    v1, i1 = best_match(a, b, backend="triton")
    v2, i2 = best_match(a, b, backend="naive")
    torch.testing.assert_close(v1, v2, atol=1e-3, rtol=1e-3)
    assert (i1 == i2).float().mean() > 0.99  # near-ties may resolve differently in tf32


def test_pipeline_on_cuda_with_quantized_memory(tmp_path):
    from vidqa.config import MemoryConfig, VidqaConfig, VideoConfig
    from vidqa.pipeline import VideoQA

    from videos import make_video

    clip = make_video(tmp_path / "c.mp4", 64, fps=4, width=64, height=48)
    config = VidqaConfig(video=VideoConfig(chunk_frames=4), memory=MemoryConfig(kv_bits=8, token_budget=100),
                         cache_dir=str(tmp_path / "cache"), max_new_tokens=4)
    qa = VideoQA(model="tiny-random/qwen2_5_vl", config=config, device="cuda")
    answer = qa.ask(clip, "What?", options=["a", "b"])
    assert answer.tokens["visual_attended"] <= 200 and answer.text is not None


def test_llava_encode_on_cuda_equals_cpu():
    """LLaVA-OneVision frames preprocessed on the GPU give the CPU path's tokens (float32 tiny model)."""
    import numpy as np

    from vidqa.vlm.tiny import tiny_llava_onevision
    from vidqa.vlm.llava_onevision import LlavaOnevisionAdapter

    model, processor = tiny_llava_onevision()
    frames = np.random.default_rng(4).integers(0, 256, (3, 90, 160, 3), dtype=np.uint8)
    cpu = LlavaOnevisionAdapter(model, processor, "tiny").encode(frames, np.arange(3.0))
    gpu = LlavaOnevisionAdapter(model.to("cuda"), processor, "tiny").encode(frames, np.arange(3.0))
    torch.testing.assert_close(gpu.embeds.cpu(), cpu.embeds, atol=2e-2, rtol=2e-2)


def test_question_aware_budget_on_cuda_is_met_exactly(tmp_path):
    """The ask-time budget with the Triton entry scores and int8 KV: exactly its entries come back."""
    from vidqa.config import MemoryConfig, VidqaConfig, VideoConfig
    from vidqa.pipeline import VideoQA

    from videos import make_video

    clip = make_video(tmp_path / "c.mp4", 64, fps=4, width=64, height=48)
    config = VidqaConfig(video=VideoConfig(chunk_frames=4), memory=MemoryConfig(kv_bits=8),
                         reducers="temporal:keep_ratio=0.5,budget:token_budget=50",
                         cache_dir=str(tmp_path / "cache"), max_new_tokens=4)
    qa = VideoQA(model="tiny-random/qwen2_5_vl", config=config, device="cuda")
    answer = qa.ask(clip, "What?")
    assert answer.tokens["visual_attended"] == 50 < answer.tokens["visual_stored"] and answer.spans


@pytest.mark.parametrize("hw", [(448, 448), (252, 448)])  # uniform windows; windows cut at the edges
def test_packed_vision_attention_equals_the_per_window_loop_in_bf16(hw):
    """The Qwen2.5-VL-7B vision tower's first blocks (real widths, random bf16 weights) give the same
    merged tokens with packed window attention as with transformers' per-window SDPA loop."""
    import json
    from pathlib import Path

    import numpy as np
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLVideoProcessor

    from vidqa.vlm.vision_attention import packed_vision_attention

    spec = json.loads((Path(__file__).parent.parent / "bench" / "configs" / "qwen2_5_vl_7b.json").read_text())
    vision = {**spec["vision_config"], "depth": 8, "fullatt_block_indexes": [3, 7]}
    text = {**spec["text_config"], "num_hidden_layers": 1}
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Qwen2_5_VLForConditionalGeneration(
            Qwen2_5_VLConfig(text_config=text, vision_config=vision)).to(torch.bfloat16).eval()
    frames = np.random.default_rng(0).integers(0, 256, (4, *hw, 3), dtype=np.uint8)
    vp = Qwen2VLVideoProcessor(size={"shortest_edge": 56 * 56, "longest_edge": 448 * 448})
    inputs = vp(videos=[frames], return_tensors="pt", do_sample_frames=False)
    pixels = inputs["pixel_values_videos"].cuda().to(torch.bfloat16)
    grid = inputs["video_grid_thw"].cuda()
    with torch.no_grad():
        native = model.model.get_video_features(pixel_values_videos=pixels, video_grid_thw=grid).pooler_output[0]
        with packed_vision_attention(model.model.visual):
            packed = model.model.get_video_features(pixel_values_videos=pixels, video_grid_thw=grid).pooler_output[0]
    assert packed.shape == native.shape and not packed.isnan().any()
    # bf16: the same math in another order of summation.
    torch.testing.assert_close(packed.float(), native.float(), atol=5e-2, rtol=5e-2)


@pytest.mark.parametrize("q_len,k_len", [(1, 6000), (2016, 6100), (300, 300)])
def test_bottom_right_sdpa_on_cuda_equals_masked_reference(q_len, k_len):
    """7B shapes in bf16 (28 query heads over 4 KV heads): decode, a chunk after its context, and a
    cacheless prefill, on the kernels CUDA dispatches to (flash / efficient, not cuDNN)."""
    from vidqa.memory.attention import bottom_right_sdpa

    q = torch.randn(1, 28, q_len, 128, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, 4, k_len, 128, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    out, _ = bottom_right_sdpa(None, q, k, v, scaling=128 ** -0.5)
    kk, vv = (t.repeat_interleave(7, 1).float() for t in (k, v))
    visible = torch.ones(q_len, k_len, dtype=torch.bool, device="cuda").tril(k_len - q_len)
    ref = torch.nn.functional.scaled_dot_product_attention(q.float(), kk, vv, attn_mask=visible)
    torch.testing.assert_close(out.float(), ref.transpose(1, 2), atol=2e-2, rtol=2e-2)


def test_vision_speed_ups_keep_the_7b_tower_output_in_bf16():
    """The padded MLP (3,420 -> 3,456) and the matmul patch embedding at the 7B tower's widths."""
    import copy

    from transformers import Qwen2_5_VLConfig
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

    from vidqa.vlm.vision_fast import speed_up_vision

    vc = Qwen2_5_VLConfig(vision_config=dict(depth=2, hidden_size=1280, intermediate_size=3420, num_heads=16,
                                             out_hidden_size=3584, fullatt_block_indexes=[1])).vision_config
    torch.manual_seed(0)
    with torch.device("cuda"):
        tower = Qwen2_5_VisionTransformerPretrainedModel._from_config(vc, dtype=torch.bfloat16).eval()
    grid = torch.tensor([[2, 24, 42]], device="cuda")
    pixels = torch.randn(2 * 24 * 42, 3 * 2 * 14 * 14, device="cuda", dtype=torch.bfloat16)
    fast = copy.deepcopy(tower)
    speed_up_vision(fast)
    assert fast.blocks[0].mlp.gate_proj.out_features == 3456
    with torch.no_grad():
        ref, got = tower(pixels, grid_thw=grid).pooler_output, fast(pixels, grid_thw=grid).pooler_output
    torch.testing.assert_close(got.float(), ref.float(), atol=5e-2, rtol=5e-2)


def test_host_staging_gives_equal_pageable_copies():
    from vidqa.memory.storage import HostStaging

    stage = HostStaging()
    for shape, dtype in [((28, 4, 2016, 128), torch.int8), ((28, 4, 2016, 4), torch.float16), ((3, 5), torch.bfloat16)]:
        x = (torch.randn(shape, device="cuda") * 50).to(dtype)
        host = stage(x)
        assert host.device.type == "cpu" and not host.is_pinned()
        assert torch.equal(host, x.cpu())
    assert stage.buffer.is_pinned() and stage.buffer.numel() == 28 * 4 * 2016 * 128  # grown once, reused


def test_fused_decoder_at_7b_widths_in_bf16_matches_stock():
    """llm_fused at the 7B decoder's widths (28 query and 4 key heads, 18,944-wide MLP, M-RoPE
    sections 16/24/24) on the Triton kernels: a 300-token chunk after 200 cached entries and one
    decoded token, against transformers' decoder on the same weights and cache."""
    import copy

    from transformers import DynamicCache, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from vidqa.vlm.qwen2_5_vl import Qwen2_5_VLAdapter
    from vidqa.vlm.tiny import tiny_qwen2_5_vl

    _, processor = tiny_qwen2_5_vl()
    text = dict(vocab_size=len(processor.tokenizer), hidden_size=3584, intermediate_size=18944, num_hidden_layers=2,
                num_attention_heads=28, num_key_value_heads=4, rope_theta=1e6,
                rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]})
    config = Qwen2_5_VLConfig(text_config=text, vision_config=dict(depth=1, hidden_size=64, num_heads=2,
                                                                   out_hidden_size=3584))
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=torch.bfloat16).eval()
    fused = Qwen2_5_VLAdapter(model, processor, "test/7b-widths")
    stock = copy.copy(fused)
    stock._llm_fused = True  # never installs the fused forward

    def run(adapter):
        torch.manual_seed(1)
        cache = DynamicCache()
        adapter.forward(torch.randn(200, 3584, device="cuda"), adapter.text_positions(200, 0), cache)
        pos = adapter.text_positions(300, 200)
        pos[1:, :] -= torch.arange(300) % 7  # the axes differ, as for visual tokens
        chunk = adapter.forward(torch.randn(300, 3584, device="cuda"), pos, cache, logits_for="hidden")
        step = adapter.forward(torch.randn(1, 3584, device="cuda"), adapter.text_positions(1, 500), cache,
                               logits_for="hidden")
        return chunk.float(), step.float()

    got = run(fused)
    assert model.model.language_model.__dict__.get("forward") is not None
    model.model.language_model.__dict__.pop("forward")
    ref = run(stock)
    for a, b in zip(got, ref):
        rel = float((a - b).norm() / b.norm())
        assert rel < 2e-2, rel  # bf16 roundings differ (float32 rotary in the fused path)


def test_qwen_encode_on_cuda_replays_a_vision_graph_equal_to_eager():
    """The third encode of one frame size is a CUDA-graph replay (vision_graph.py) with the eager
    tower's tokens; the CPU path gives the same tokens (float32 tiny model), and VIDQA_VISION_GRAPHS=0
    keeps it eager."""
    import os

    import numpy as np

    from vidqa.vlm.qwen2_5_vl import Qwen2_5_VLAdapter
    from vidqa.vlm.tiny import tiny_qwen2_5_vl

    model, processor = tiny_qwen2_5_vl()
    frames = np.random.default_rng(5).integers(0, 256, (4, 40, 56, 3), dtype=np.uint8)
    cpu = Qwen2_5_VLAdapter(model, processor, "tiny").encode(frames, np.arange(4.0))
    adapter = Qwen2_5_VLAdapter(model.to("cuda"), processor, "tiny")
    runs = [adapter.encode(frames, np.arange(4.0)) for _ in range(4)]
    assert adapter._vision_graphs.replays == 3  # the first eager, the second captured and replayed, ...
    for r in runs[1:]:
        assert torch.equal(r.embeds, runs[0].embeds)
    torch.testing.assert_close(runs[-1].embeds.cpu(), cpu.embeds, atol=2e-3, rtol=2e-3)
    # weights moved away and back (new addresses, as the benchmark's stock tower does): the old graph
    # would read freed memory; it is dropped and the tower runs eagerly, then is captured again
    mlp = model.model.visual.blocks[0].mlp
    mlp.cpu()
    torch.cuda.empty_cache()
    mlp.cuda()
    moved = [adapter.encode(frames, np.arange(4.0)) for _ in range(3)]
    assert adapter._vision_graphs.replays == 5
    for r in moved:
        torch.testing.assert_close(r.embeds, runs[0].embeds, atol=1e-5, rtol=1e-5)
    os.environ["VIDQA_VISION_GRAPHS"] = "0"
    try:
        adapter.encode(frames, np.arange(4.0))
        assert adapter._vision_graphs.replays == 5
    finally:
        del os.environ["VIDQA_VISION_GRAPHS"]


def test_vision_graph_of_the_7b_tower_in_bf16_equals_eager():
    """A 16-frame chunk of 588x336 frames through a 2-block tower at the 7B widths (a window block and
    a full-attention one; fused blocks, packed attention, cuDNN attention inside the capture)."""
    from transformers import Qwen2_5_VLConfig
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

    from vidqa.vlm.vision_attention import packed_vision_attention
    from vidqa.vlm.vision_fast import speed_up_vision
    from vidqa.vlm.vision_graph import VisionGraphs
    from vidqa.vlm.vision_plan import VisionPlans

    vc = Qwen2_5_VLConfig(vision_config=dict(depth=2, hidden_size=1280, intermediate_size=3420, num_heads=16,
                                             out_hidden_size=3584, fullatt_block_indexes=[1])).vision_config
    torch.manual_seed(0)
    with torch.device("cuda"):
        tower = Qwen2_5_VisionTransformerPretrainedModel._from_config(vc, dtype=torch.bfloat16).eval()
    speed_up_vision(tower)
    grid = torch.tensor([[8, 24, 42]])
    pixels = torch.randn(8 * 24 * 42, 3 * 2 * 14 * 14, device="cuda", dtype=torch.bfloat16)
    plans, graphs = VisionPlans(tower), VisionGraphs(tower)
    with torch.no_grad(), packed_vision_attention(tower):
        plan = plans.kwargs(grid, pixels.shape[0], torch.device("cuda"))
        eager = graphs.eager(pixels, grid, dict(plan))
        outs = [graphs(pixels, grid, plan) for _ in range(3)]
        other = graphs(pixels * 0.5, grid, plan)  # the replay reads the new input
        ref_other = graphs.eager(pixels * 0.5, grid, dict(plan))
    assert graphs.replays == 3
    for o in outs:
        torch.testing.assert_close(o.float(), eager.float(), atol=1e-2, rtol=1e-2)
    torch.testing.assert_close(other.float(), ref_other.float(), atol=1e-2, rtol=1e-2)
