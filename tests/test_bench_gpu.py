"""bench/gpu.py and its modules: FLOP counters, parallel video generation, model specs, and a smoke run.

The counters are checked against hand counts and against torch's FlopCounterMode on tiny real
architectures (eager attention, so that attention runs as matmuls the counter sees); the generated
video against decoding its segments one by one; the smoke run end to end on CPU.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture(scope="module")
def bench():
    """Imports bench/ modules by name, as they import each other when bench/gpu.py runs (its folder on
    sys.path); the generation pool pickles its worker function by that name too. Undone afterwards."""
    sys.path.insert(0, str(BENCH))
    yield importlib.import_module
    sys.path.remove(str(BENCH))
    for name in [n for n, m in sys.modules.items() if str(getattr(m, "__file__", None)).startswith(str(BENCH))]:
        del sys.modules[name]


def _bench_module(name: str):
    """A fixture named ``name``: bench/<name>.py, imported by name."""
    return pytest.fixture(scope="module", name=name)(lambda bench: bench(name))


gpu, gpu_flops, gpu_video, gpu_models = map(_bench_module, ["gpu", "gpu_flops", "gpu_video", "gpu_models"])


@pytest.fixture(scope="module")
def tiny_qwen():
    from vidqa.vlm.tiny import tiny_qwen2_5_vl

    model, _ = tiny_qwen2_5_vl()
    return model


def _counted(fn) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn()
    return counter.get_total_flops()


# ---------------------------------------------------------------------- FLOP counters
def test_qwen_vision_flops_hand_count(gpu_flops, tiny_qwen):
    vc = tiny_qwen.config.vision_config  # d 32, mlp 64, depth 2 (block 1 full), patch 4, window 16 px
    d, i, patches = 32, 64, 2 * 8 * 8  # one video grid t=2, h=w=8 patches
    embed = 2 * patches * (3 * 2 * 4 * 4) * d
    blocks = 2 * 2 * patches * (4 * d * d + 3 * d * i)
    merger = 2 * (patches // 4) * (4 * d * 4 * d + 4 * d * 64)
    full = 4 * d * 2 * 64 ** 2  # block 1: each of the 2 temporal grids attends over its 64 patches
    windows = 4 * d * 2 * 4 * 16 ** 2  # block 0: 4x4 merged tokens -> 4 windows of 2x2 merged = 16 patches
    got = gpu_flops.qwen_vision_flops(vc, [(2, 8, 8)])
    assert got["attention"] == full + windows
    assert got["total"] == embed + blocks + merger + full + windows == 8_912_896


@pytest.mark.parametrize("grid", [(2, 12, 20), (4, 16, 16), (2, 10, 14)])  # the last has partial windows
def test_qwen_vision_flops_equal_flop_counter(gpu_flops, tiny_qwen, grid):
    vis = tiny_qwen.model.visual
    previous = vis.config._attn_implementation
    vis.config._attn_implementation = "eager"
    try:
        pixels = torch.randn(grid[0] * grid[1] * grid[2], 3 * 2 * 4 * 4)
        counted = _counted(lambda: vis(pixels, grid_thw=torch.tensor([grid])))
    finally:
        vis.config._attn_implementation = previous
    assert gpu_flops.qwen_vision_flops(vis.config, [grid])["total"] == counted
    # two calls' worth of grids add up
    assert gpu_flops.qwen_vision_flops(vis.config, [grid, grid])["total"] == 2 * counted


def test_llm_flops_equal_flop_counter_and_causal_hand_count(gpu_flops, tiny_qwen):
    from transformers import DynamicCache

    lm = tiny_qwen.model.language_model
    tc = tiny_qwen.config.get_text_config()
    previous = lm.config._attn_implementation
    lm.config._attn_implementation = "eager"
    try:
        cache = DynamicCache()
        with torch.no_grad():
            lm(inputs_embeds=torch.randn(1, 10, 64), position_ids=torch.arange(10).expand(3, 1, 10),
               past_key_values=cache, use_cache=True)
        counted = _counted(lambda: lm(inputs_embeds=torch.randn(1, 7, 64),
                                      position_ids=(torch.arange(7) + 10).expand(3, 1, 7),
                                      past_key_values=cache, use_cache=True))
    finally:
        lm.config._attn_implementation = previous
    # eager attention computes the whole 7 x 17 rectangle (masked afterwards)
    assert gpu_flops.llm_flops(tc, [(7, 10)], causal=False)["total"] == counted
    linears = sum(m.weight.numel() for m in lm.layers.modules() if isinstance(m, torch.nn.Linear))
    assert gpu_flops.llm_linear_params(tc) == linears == 73_728
    causal = gpu_flops.llm_flops(tc, [(7, 10)])
    # query j sees 10 + j + 1 keys: 70 + 28 pairs; 4 heads x 16 dims x 2 layers x 4 FLOP per pair
    assert causal["attention"] == 4 * 4 * 16 * 2 * (70 + 28)
    assert causal["linear"] == 2 * 73_728 * 7 and causal["tokens"] == 7


def test_siglip_vision_flops_equal_flop_counter(gpu_flops):
    from vidqa.vlm.tiny import tiny_llava_onevision

    model, _ = tiny_llava_onevision()
    tower = model.model.vision_tower
    tower.config._attn_implementation = "eager"
    counted = _counted(lambda: tower(torch.randn(3, 3, 16, 16)))
    assert gpu_flops.siglip_vision_flops(model.config.vision_config, 3)["total"] == counted


# ---------------------------------------------------------------------- video generation
def test_segments_join_into_one_decodable_video(gpu_video, tmp_path):
    import av

    from vidqa.video import open_video, read_frames

    jobs = [(str(tmp_path / f"p{k}.mp4"), 30, a, min(a + 10, 30), 64, 48, 4, 1) for k, a in enumerate(range(0, 30, 10))]
    parts = [gpu_video.render_segment(j)[0] for j in jobs]
    separately = []
    for p in parts:
        with av.open(p) as c:
            separately += [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    out = tmp_path / "joined.mp4"
    assert gpu_video.join_segments(parts, out) == 30
    info = open_video(out)
    assert info.num_frames == 30 and abs(info.duration - 30) < 1e-6 and (info.width, info.height) == (64, 48)
    with av.open(str(out)) as c:
        frames = list(c.decode(video=0))
    assert [round(float(f.time)) for f in frames] == list(range(30))
    assert [i for i, f in enumerate(frames) if f.key_frame] == [0, 10, 20]  # one GOP per 10 frames, as one encoder
    assert all(np.array_equal(f.to_ndarray(format="rgb24"), s) for f, s in zip(frames, separately))
    clip = read_frames(out, fps=1.0)  # vidqa's own reader samples every second of it
    assert len(clip.frames) == 30 and np.allclose(clip.times, np.arange(30))


def test_video_factory_caches_by_path(gpu_video, tmp_path):
    factory = gpu_video.VideoFactory(tmp_path, 64, 48, scale=4, workers=2)
    try:
        first = factory.finish(factory.submit(40))
        again = factory.finish(factory.submit(40))
    finally:
        factory.close()
    assert not first["cached"] and again["cached"] and first["frames"] == 40
    assert not list((tmp_path / "parts").iterdir())  # segments are removed once joined


# ---------------------------------------------------------------------- model specs
def _tiny_copy(spec: dict) -> dict:
    """The spec with its widths and depths shrunk; every other key kept (what build() reads)."""
    s = copy.deepcopy(spec)
    t, v = s["text_config"], s["vision_config"]
    t.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             vocab_size=320)
    if "mrope_section" in t.get("rope_scaling", {}):
        t["rope_scaling"]["mrope_section"] = [2, 3, 3]
    if "depth" in v:  # Qwen2.5-VL vision
        v.update(depth=4, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                 fullatt_block_indexes=[1, 3])
    else:  # SigLIP
        v.update(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    return s


@pytest.mark.parametrize("name", ["qwen2_5_vl_3b", "qwen2_5_vl_7b"])
def test_qwen_specs_build(gpu_models, name):
    from vidqa.vlm.qwen2_5_vl import Qwen2_5_VLAdapter

    spec = json.loads((BENCH / "configs" / f"{name}.json").read_text())
    model, processor = gpu_models.build_qwen(_tiny_copy(spec), 448 * 448, "cpu", torch.float32)
    assert model.config.vision_config.window_size == spec["vision_config"]["window_size"] == 112
    tied = model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    assert tied == spec["text_config"]["tie_word_embeddings"]
    adapter = Qwen2_5_VLAdapter(model, processor, name)
    frames = np.zeros((2, 720, 1280, 3), np.uint8)
    tokens = adapter.encode(frames, np.array([0.0, 1.0]))
    assert len(tokens) == 12 * 21  # 720p capped at 448^2 px -> 336x588 -> 12x21 merged tokens per 2 frames


def test_llava_onevision_spec_builds_with_196_tokens_per_frame(gpu_models):
    from vidqa.vlm.llava_onevision import LlavaOnevisionAdapter

    spec = json.loads((BENCH / "configs" / "llava_onevision_7b.json").read_text())
    assert spec["text_config"]["hidden_size"] == 3584 and spec["vision_config"]["image_size"] == 384
    model, processor = gpu_models.build_llava(_tiny_copy(spec), "cpu", torch.float32)
    adapter = LlavaOnevisionAdapter(model, processor, "llava")
    assert adapter.tokens_per_frame == 196  # 27x27 SigLIP patches pooled to 14x14
    tokens = adapter.encode(np.zeros((2, 72, 128, 3), np.uint8), np.array([0.0, 1.0]))
    assert len(tokens) == 2 * 196 and adapter.chunk_close_embeds().shape == (1, 64)


# ---------------------------------------------------------------------- the whole script
SECTIONS = ["## Video generation", "## vidqa ingest and questions", "## Native transformers vs vidqa",
            "## Native transformers: out-of-memory point", "## Profile of the reference ingest"]


def test_smoke_run_writes_every_section(gpu, bench, tmp_path, monkeypatch):
    monkeypatch.setenv("OUT", str(tmp_path / "out"))
    gpu.main(["--smoke", "--workdir", str(tmp_path / "work"), "--results", str(tmp_path / "gpu.md"),
              "--minutes", "0.2", "0.5", "1", "--reference-minutes", "0.5", "--oom-frames", "20", "24"])
    text = (tmp_path / "gpu.md").read_text()
    assert (tmp_path / "out" / "gpu.md").read_text() == text
    for head in SECTIONS:
        assert head in text
    assert "(none yet)" not in text and "skipped" not in text and "## Skipped or failed" not in text
    records = [json.loads(line) for line in (tmp_path / "out" / "gpu.jsonl").read_text().splitlines()]
    by = {}
    for r in records:
        by.setdefault(r["section"], []).append(r)
    assert [r["minutes"] for r in by["vidqa"]] == [0.5, 1, 0.2]  # reference, then longest first
    assert [r["frames"] for r in by["native_equal"]] == [8, 16] and [r["frames"] for r in by["native_oom"]] == [20, 24]
    for r in by["vidqa"]:
        # the stages add up to the staged ingest's wall time; the user-like ingest ran apart from it
        assert sum(r["stages"].values()) == pytest.approx(r["staged_ingest_s"], rel=1e-6)
        assert r["ingest_s"] > 0
        assert r["frames"] == r["minutes"] * 60 and r["visual_tokens"] == r["frames"] * 30  # 10x6 merged / 2 frames
    markdown = bench("gpu_markdown")
    for r in by["native_equal"]:
        assert r["native"]["status"] == "ok" and r["native"]["visual_tokens"] == r["vidqa"]["visual_tokens"]
        # two alternating runs (the smoke's --equal-repeats); the record is the one of the lower ratio
        assert len(r["speedups"]) == 2
        assert markdown.speedup(r["native"], r["vidqa"]) == pytest.approx(min(r["speedups"]), abs=1e-3)
        assert f"(median of 2: {min(r['speedups']):.2f}-{max(r['speedups']):.2f})" in text
    prof = by["profile"][0]
    assert [r["stage"] for r in prof["rows"][-2:]] == ["ingest", "ingest as run"]
    assert prof["rows"][-2]["measured_s"] == by["vidqa"][0]["staged_ingest_s"]
    assert prof["rows"][-1]["measured_s"] == by["vidqa"][0]["ingest_s"] and prof["limits"]["matmul"]["tflops"] > 0
    # the equal-frame comparisons run as a user runs vidqa: no stage synchronisation
    assert all(r["vidqa"]["stages"] is None for r in by["native_equal"])


def test_equal_frame_repeats_stop_when_the_next_one_does_not_fit(gpu, tmp_path, monkeypatch):
    """A repeat runs only if the first run's measured time still fits the budget: with none left
    after the first, each frame count keeps its one run."""
    real = gpu.Budget.fits

    def fits(self, estimate_s, safety=gpu.SAFETY_NATIVE):  # no room left for a repeat, room for the rest
        return sys._getframe(1).f_code.co_name != "native_vs_vidqa" and real(self, estimate_s, safety)

    monkeypatch.setattr(gpu.Budget, "fits", fits)
    monkeypatch.setenv("OUT", str(tmp_path / "out"))
    gpu.main(["--smoke", "--workdir", str(tmp_path / "work"), "--results", str(tmp_path / "gpu.md"),
              "--minutes", "0.5", "--reference-minutes", "0.5", "--oom-frames", "20", "--equal-repeats", "3"])
    records = [json.loads(line) for line in (tmp_path / "out" / "gpu.jsonl").read_text().splitlines()]
    equal = [r for r in records if r["section"] == "native_equal"]
    assert [r["frames"] for r in equal] == [8, 16] and all(len(r["speedups"]) == 1 for r in equal)


def test_time_budget_skips_all_but_the_reference(gpu, tmp_path, monkeypatch):
    monkeypatch.setattr(gpu, "_T0", gpu._T0 - 10_000)  # the budget is already spent
    report = gpu.main(["--smoke", "--workdir", str(tmp_path / "work"), "--results", str(tmp_path / "gpu.md")])
    done = [r for r in report.records if r["section"] == "vidqa" and not r.get("skipped")]
    assert [r["minutes"] for r in done] == [1]  # the most important measurement always runs
    skipped = {(r["section"], r.get("frames", r.get("minutes"))) for r in report.records if r.get("skipped")}
    assert skipped >= {("native_equal", 8), ("native_equal", 16), ("vidqa", 2), ("vidqa", 0.5), ("native_oom", 24)}
    assert any(r["section"] == "profile" and r.get("skipped") for r in report.records)
    text = (tmp_path / "gpu.md").read_text()
    assert "## Skipped or failed" in text and "skipped: needs" in text


def test_stock_vision_gives_the_native_path_the_unmodified_tower(gpu_models):
    """The native baseline runs transformers' own tower even after vidqa rewrote it in place."""
    import numpy as np

    from vidqa.vlm import load_adapter
    from vidqa.vlm.vision_fast import pad_mlp_width, patch_embed_as_matmul
    from vidqa.vlm.vision_fused import fuse_vision_blocks

    adapter = load_adapter("tiny-random/qwen2_5_vl", device="cpu")
    visual = adapter.model.model.visual
    stock = gpu_models.StockVision(adapter.model, "qwen2_5_vl")
    frames = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    inputs = adapter.processor.video_processor(videos=[frames], return_tensors="pt", do_sample_frames=False)

    def tower():
        with torch.no_grad():
            return visual(inputs["pixel_values_videos"], grid_thw=inputs["video_grid_thw"]).pooler_output

    ref = tower()
    pad_mlp_width(visual, multiple=48)  # what vidqa does on a GPU (64 -> 96 channels here)
    patch_embed_as_matmul(visual)
    assert fuse_vision_blocks(visual) == len(visual.blocks)
    with stock:
        assert visual.blocks[0].mlp.gate_proj.out_features == 64 and visual.config.intermediate_size == 64
        assert "forward" not in visual.patch_embed.__dict__
        assert all("forward" not in b.__dict__ for b in visual.blocks)
        torch.testing.assert_close(tower(), ref, atol=1e-6, rtol=1e-6)
    assert visual.blocks[0].mlp.gate_proj.out_features == 96 and visual.config.intermediate_size == 96
    assert "forward" in visual.patch_embed.__dict__
    assert all("forward" in b.__dict__ for b in visual.blocks)
    torch.testing.assert_close(tower(), ref, atol=1e-5, rtol=1e-5)
