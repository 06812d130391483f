"""Where one chunk's ingest time goes, kernel by kernel (issue #11's "profile the ingest").

    source bench/device_env.sh && python3 bench/ingest_profile.py     # on the GPU, ~2 min
    python bench/ingest_profile.py --smoke                            # tiny model, CPU

``bench/gpu.py`` splits an ingest into stages between device syncs; this script looks inside the
two big ones, the vision tower and the LLM prefill, with ``torch.profiler`` on the real-size
architecture (random bf16 weights; no video file, no decoder: random uint8 frames of the size the
benchmark feeds). For each stage it prints the wall time per chunk, the GPU's busy time in it
(the sum of kernel times: less than the wall time means the GPU waits on the host), and the top
kernels and operators by GPU time. ``--chunk-frames`` takes several values to show how the cost
per frame falls with larger calls. Output goes to stdout and, when ``OUT`` is set, to
``$OUT/ingest_profile.txt``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

_BENCH = str(Path(__file__).resolve().parent)
if _BENCH not in sys.path:
    sys.path.insert(0, _BENCH)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from gpu_device import cuda_sync  # noqa: E402
from gpu_models import build  # noqa: E402

from vidqa.config import MemoryConfig  # noqa: E402
from vidqa.vlm.loading import adapter_class, default_device, default_dtype  # noqa: E402


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(Path(_BENCH) / "configs" / "qwen2_5_vl_7b.json"))
    ap.add_argument("--family", default="qwen2_5_vl")
    ap.add_argument("--height", type=int, default=336, help="frame size after the benchmark's pixel cap")
    ap.add_argument("--width", type=int, default=588)
    ap.add_argument("--chunk-frames", type=int, nargs="+", default=[16, 32])
    ap.add_argument("--repeats", type=int, default=3, help="profiled calls per stage (after 2 warm-ups)")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--smoke", action="store_true", help="tiny model on CPU, small frames")
    args = ap.parse_args(argv)
    if args.smoke:
        args.config, args.height, args.width, args.chunk_frames, args.repeats, args.top = None, 56, 84, [4], 1, 8
    return args


class Output:
    """Lines to stdout and to ``$OUT/ingest_profile.txt`` (rewritten after each write)."""

    def __init__(self):
        self.lines: list[str] = []
        out = os.environ.get("OUT")
        self.path = Path(out) / "ingest_profile.txt" if out else None

    def __call__(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.append(text)
        if self.path:
            self.path.write_text("\n".join(self.lines) + "\n")


def profiled(fn, repeats: int, device: str):
    """``(wall seconds per call (median), profiler)`` of ``repeats`` calls of ``fn`` after 2 warm-ups."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(2):
        fn()
    cuda_sync()
    walls = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        cuda_sync()
        walls.append(time.perf_counter() - t0)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(repeats):
            fn()
        cuda_sync()
    return statistics.median(walls), prof


def gpu_busy_s(prof, repeats: int) -> float:
    """Seconds per call the GPU spent in kernels and copies: the device-side events only (an operator's
    own device time repeats its kernels' and would count them twice)."""
    from torch.autograd import DeviceType

    total_us = sum(getattr(e, "self_device_time_total", 0.0) for e in prof.key_averages()
                   if getattr(e, "device_type", DeviceType.CPU) != DeviceType.CPU)
    return total_us / 1e6 / repeats


def report_stage(out: Output, name: str, wall: float, prof, repeats: int, frames: int, top: int, device: str):
    busy = gpu_busy_s(prof, repeats) if device == "cuda" else float("nan")
    out(f"### {name}: {frames} frames per call")
    out(f"wall {wall * 1e3:.1f} ms per call ({wall * 1e3 / frames:.2f} ms per frame); GPU busy "
        f"{busy * 1e3:.1f} ms ({busy / wall:.0%} of the wall time)")
    sort = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    out("```")
    out(prof.key_averages().table(sort_by=sort, row_limit=top, max_name_column_width=60))
    out("```")
    if device == "cuda":  # where the host's time goes while the GPU waits
        out("host side, by self CPU time:")
        out("```")
        out(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=60))
        out("```")
    out()


def patch_embed_ab(out: Output, model, args, device: str, dtype) -> None:
    """Qwen's patch embedding is a Conv3d whose kernel equals its stride: the same product as one
    matmul of the flattened patches. Times both on one chunk's patches (and checks they agree)."""
    pe = model.model.visual.patch_embed
    n = (args.height // 14) * (args.width // 14) * max(args.chunk_frames) // 2
    x = torch.randn(n, pe.in_channels * pe.temporal_patch_size * pe.patch_size ** 2, device=device, dtype=dtype)
    w = pe.proj.weight.reshape(pe.embed_dim, -1)
    conv = lambda: pe(x)  # noqa: E731
    mm = lambda: x @ w.t()  # noqa: E731
    err = float((conv().float() - mm().float()).abs().max())
    t_conv = profiled(conv, args.repeats, device)[0]
    t_mm = profiled(mm, args.repeats, device)[0]
    out(f"### patch embedding, {n} patches: Conv3d {t_conv * 1e3:.2f} ms, matmul {t_mm * 1e3:.2f} ms "
        f"(max difference {err:.2e})")
    out()


def fused_blocks_ab(out: Output, adapter, frames: np.ndarray, times: np.ndarray, repeats: int) -> None:
    """The vision tower with transformers' block forward against vidqa's fused one
    (``vlm/vision_fused.py``) on one chunk: encode wall time, stock and fused alternating (median of
    ``repeats`` each after a warm-up), and how far the fused tower's output is from the stock one."""
    adapter.encode(frames, times)  # the adapter's rewrites, the fused forwards among them
    blocks = adapter.model.model.visual.blocks
    fused = [b.__dict__.get("forward") for b in blocks]
    if not any(fused):
        out("### vision blocks: no fused forward on this tower")
        out()
        return

    def stock():
        for b in blocks:
            b.__dict__.pop("forward", None)

    def restore():
        for b, f in zip(blocks, fused):
            if f is not None:
                b.forward = f

    def timed():
        cuda_sync()
        t0 = time.perf_counter()
        tokens = adapter.encode(frames, times)
        cuda_sync()
        return time.perf_counter() - t0, tokens.embeds.float()

    walls = {"stock": [], "fused": []}
    outputs = {}
    graphs = os.environ.get("VIDQA_VISION_GRAPHS")
    os.environ["VIDQA_VISION_GRAPHS"] = "0"  # eager towers: a captured graph would replay whichever blocks it saw
    try:
        for i in range(repeats + 1):  # the first round warms both up and is not counted
            for name, setup in (("stock", stock), ("fused", restore)):
                setup()
                wall, outputs[name] = timed()
                if i:
                    walls[name].append(wall)
    finally:
        restore()
        if graphs is None:
            os.environ.pop("VIDQA_VISION_GRAPHS")
        else:
            os.environ["VIDQA_VISION_GRAPHS"] = graphs
    a, b = outputs["fused"], outputs["stock"]
    rel = float((a - b).norm() / b.norm().clamp_min(1e-12))
    med = {k: statistics.median(v) for k, v in walls.items()}
    ratios = sorted(s / f for s, f in zip(walls["stock"], walls["fused"]))
    out(f"### vision blocks, stock against fused ({len(frames)} frames per call, median of {repeats}, alternating, eager)")
    out(f"encode wall: stock {med['stock'] * 1e3:.1f} ms, fused {med['fused'] * 1e3:.1f} ms per call; "
        f"stock / fused {statistics.median(ratios):.2f}x (runs {ratios[0]:.2f}-{ratios[-1]:.2f}); fused output "
        f"against stock: max |difference| {float((a - b).abs().max()):.3e}, relative (Frobenius) {rel:.2e}")
    out()


def fused_decoder_ab(out: Output, adapter, ingest, tokens, layout, repeats: int) -> None:
    """The language model with transformers' decoder forward against vidqa's fused one
    (``vlm/llm_fused.py``): a chunk's ``add_chunk`` (prefill + offload, a full window) and one decoded
    token over an 8,192-entry cache, stock and fused alternating (median of ``repeats`` after a
    warm-up round), and how far the fused chunk's last hidden states are from the stock ones."""
    from vidqa.memory.cache import cache_from

    lm = adapter.language_model
    fused = lm.__dict__.get("forward")
    if fused is None:
        out("### decoder: no fused forward on this model")
        out()
        return
    d = adapter.text_config.hidden_size
    g = torch.Generator().manual_seed(0)
    embeds = torch.randn(len(tokens), d, generator=g).to(adapter.device, adapter.dtype)
    pos = adapter.text_positions(len(tokens), 100)
    keys = torch.randn(adapter.num_layers, lm.layers[0].self_attn.k_proj.out_features // lm.layers[0].self_attn.head_dim,
                       8192, lm.layers[0].self_attn.head_dim, device=adapter.device, dtype=adapter.dtype)
    step = embeds[:1]

    def chunk():
        return ingest.add_chunk(tokens, layout, float(layout.t0) + 1)

    def decode():
        adapter.forward(step, adapter.text_positions(1, 9000), cache_from(keys, keys))

    walls = {(w, s): [] for w in ("chunk", "decode") for s in ("stock", "fused")}
    hidden = {}
    for i in range(repeats + 1):
        for setting in ("stock", "fused"):
            if setting == "stock":
                lm.__dict__.pop("forward", None)
            else:
                lm.forward = fused
            hidden[setting] = adapter.forward(embeds, pos, None, logits_for="hidden").float()
            for what, fn in (("chunk", chunk), ("decode", decode)):
                cuda_sync()
                t0 = time.perf_counter()
                fn()
                cuda_sync()
                if i:
                    walls[(what, setting)].append(time.perf_counter() - t0)
    lm.forward = fused
    a, b = hidden["fused"], hidden["stock"]
    rel = float((a - b).norm() / b.norm().clamp_min(1e-12))
    out(f"### decoder, stock against fused (median of {repeats}, alternating)")
    for what, label in (("chunk", f"prefill + offload of {len(tokens)} visual tokens"),
                        ("decode", "one decoded token over 8,192 cached entries")):
        st, fu = (statistics.median(walls[(what, s)]) for s in ("stock", "fused"))
        ratios = sorted(x / y for x, y in zip(walls[(what, "stock")], walls[(what, "fused")]))
        out(f"{label}: stock {st * 1e3:.1f} ms, fused {fu * 1e3:.1f} ms; stock / fused "
            f"{statistics.median(ratios):.2f}x (runs {ratios[0]:.2f}-{ratios[-1]:.2f})")
    out(f"fused last hidden states against stock: relative (Frobenius) difference {rel:.2e}")
    out()


def main(argv=None) -> None:
    args = parse_args(argv)
    device = default_device()
    dtype = default_dtype(device)
    out = Output()
    model, processor = build(args.config, args.family, args.width * args.height, device, dtype)
    name = "bench/" + (Path(args.config).stem if args.config else f"tiny-{args.family}")
    adapter = adapter_class(args.family)(model, processor, name)
    out(f"# ingest profile: {name} on {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}")
    out(f"torch {torch.__version__}; frames {args.width}x{args.height}; {args.repeats} profiled calls per stage")
    out()
    rng = np.random.default_rng(0)
    from vidqa.memory.ingest import StreamingIngest

    if args.family == "qwen2_5_vl":
        patch_embed_ab(out, model, args, device, dtype)
    for n in args.chunk_frames:
        frames = rng.integers(0, 256, (n, args.height, args.width, 3), dtype=np.uint8)
        times = np.arange(n, dtype=np.float64)
        if args.family == "qwen2_5_vl":
            fused_blocks_ab(out, adapter, frames, times, max(args.repeats, 5))
        graphs = getattr(adapter, "_vision_graphs", None)
        replays = graphs.replays if graphs is not None else 0
        wall, prof = profiled(lambda: adapter.encode(frames, times), args.repeats, device)
        replayed = (graphs.replays - replays) if graphs is not None else 0
        report_stage(out, f"encode (preprocess + vision tower + merger; {replayed} of {2 * args.repeats + 2} "
                          "calls replayed the tower's CUDA graph)", wall, prof, args.repeats, n, args.top, device)

        tokens = adapter.encode(frames, times)
        layout = adapter.chunk_layout(tokens)
        ingest = StreamingIngest(adapter, MemoryConfig(kv_bits=8))
        for _ in range(MemoryConfig.window_chunks):  # a full window, as in the middle of a video
            ingest.add_chunk(tokens, layout, float(n))
        wall, prof = profiled(lambda: ingest.add_chunk(tokens, layout, float(n)), args.repeats, device)
        report_stage(out, f"prefill + offload ({len(tokens)} visual tokens, window of {MemoryConfig.window_chunks})",
                     wall, prof, args.repeats, n, args.top, device)
        fused_decoder_ab(out, adapter, ingest, tokens, layout, max(args.repeats, 5))
        ingest.close()
        del ingest, tokens
        if device == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
