"""Long video on one GPU with a 7B-class model: vidqa against the native transformers path.

    python bench/gpu.py --config bench/configs/qwen2_5_vl_7b.json --minutes 10 60      # on the GPU
    python bench/gpu.py --smoke                                                          # tiny, CPU

Real-size architecture from its published config with random bf16 weights (weights do not change
speed or memory). Synthetic 720p H.264 videos are generated on the device and sampled at 1 fps;
frames are capped at ``--frame-pixels`` (default 448x448) per frame before the vision tower.

Measured in one run: video generation, vidqa ingest (decode / vision / prefill split, peak GPU and
host memory, visual tokens stored), time to first token for a first and a follow-up question,
decode tokens/s; the native path (processor + ``model.generate``) on the same frames at equal frame
counts, and whether it runs out of memory. Writes ``bench/results/gpu_<device>.md``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch



def rss_gib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def build(config_path: str | None, frame_pixels: int, device: str):
    """(model, processor) with random weights; the byte tokenizer's special ids are used."""
    from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor,
                              Qwen2VLImageProcessor, Qwen2VLVideoProcessor)

    from vidqa.vlm.tiny import QWEN_CHAT_TEMPLATE, QWEN_SPECIALS, _qwen_tokenizer, tiny_qwen2_5_vl

    if config_path is None:
        return tiny_qwen2_5_vl()
    spec = json.loads(Path(config_path).read_text())
    tok = _qwen_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    config = Qwen2_5_VLConfig(
        text_config={**spec["text_config"], "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"]},
        vision_config=spec["vision_config"], image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    torch.set_default_dtype(torch.bfloat16)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration(config).eval()
    torch.set_default_dtype(torch.float32)
    size = {"shortest_edge": 56 * 56, "longest_edge": frame_pixels}
    common = dict(size=size, patch_size=14, merge_size=2, temporal_patch_size=2)
    processor = Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(**common),
                                    video_processor=Qwen2VLVideoProcessor(**common), tokenizer=tok,
                                    chat_template=QWEN_CHAT_TEMPLATE)
    return model, processor


def make_video(path: Path, seconds: int, width: int, height: int) -> float:
    """A synthetic 1-fps video: the synthetic world rendered small and upscaled (cheap at 720p)."""
    import av

    from vidqa.synth.render import render_frame
    from vidqa.synth.timeline import make_timeline

    t0 = time.perf_counter()
    tl = make_timeline(1, seconds)
    scale = 4
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=1)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "g": "10"}
        for i in range(seconds):
            small = render_frame(tl, float(i), width // scale, height // scale)
            frame = av.VideoFrame.from_ndarray(np.repeat(np.repeat(small, scale, 0), scale, 1), format="rgb24")
            frame.pts = i
            for p in stream.encode(frame):
                out.mux(p)
        for p in stream.encode():
            out.mux(p)
    return time.perf_counter() - t0


def cuda_sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def vidqa_run(adapter, video: Path, num_frames: int | None, cache: Path, kv_bits: int) -> dict:
    from vidqa.config import MemoryConfig, VidqaConfig, VideoConfig
    from vidqa.pipeline import VideoQA

    config = VidqaConfig(video=VideoConfig(fps=1.0, num_frames=num_frames, chunk_frames=16),
                         memory=MemoryConfig(kv_bits=kv_bits, token_budget=8192), cache_dir=str(cache),
                         max_new_tokens=32)
    qa = VideoQA(model=adapter.name, config=config, adapter=adapter)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    base_gpu = torch.cuda.memory_allocated() if torch.cuda.is_available() else 0
    t0 = time.perf_counter()
    memory = qa.ingest(video, use_cache=False)
    cuda_sync()
    ingest_s = time.perf_counter() - t0
    peak_ingest = (torch.cuda.max_memory_allocated() - base_gpu) / 2**30 if torch.cuda.is_available() else 0.0
    ttfts, tps = [], []
    for q in ("What happens in the video?", "And what colour is the triangle?", "When does the card appear?"):
        ans = qa.ask(memory, q, max_new_tokens=32)
        ttfts.append(ans.timings["ttft"])
        gen = max(1, ans.tokens["generated"])
        tps.append(gen / max(1e-9, ans.timings["total"] - ans.timings["ttft"]))
    peak = (torch.cuda.max_memory_allocated() - base_gpu) / 2**30 if torch.cuda.is_available() else 0.0
    t = memory.stats["timings"]
    return dict(frames=memory.video["frames"], ingest_s=ingest_s, decode_s=t["decode"], encode_s=t["encode"],
                prefill_s=t["prefill"], visual_tokens=memory.num_visual_tokens, host_gib=memory.host_bytes / 2**30,
                rss_gib=rss_gib(), peak_ingest_gib=peak_ingest, peak_gib=peak, ttft_first=ttfts[0],
                ttft_followup=statistics.median(ttfts[1:]), decode_tps=statistics.median(tps),
                attended=ans.tokens["visual_attended"])


def native_run(model, processor, video: Path, num_frames: int) -> dict:
    """processor + model.generate on ``num_frames`` frames sampled from ``video``; OOM is a result."""
    from vidqa.video import read_frames

    t0 = time.perf_counter()
    clip = read_frames(video, num_frames=num_frames)
    frames = clip.frames
    if len(frames) % 2:
        frames = frames[:-1]
    msgs = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happens?"}]}]
    text = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated() if torch.cuda.is_available() else 0
    try:
        inputs = processor(text=[text], videos=[frames], return_tensors="pt",
                           videos_kwargs=dict(do_sample_frames=False))
        inputs["second_per_grid_ts"] = torch.tensor([2.0])
        inputs = {k: v.to(model.device) if hasattr(v, "to") else v for k, v in inputs.items()}
        with torch.no_grad():
            model.generate(**inputs, max_new_tokens=1, do_sample=False)
        cuda_sync()
        status = "ok"
    except torch.cuda.OutOfMemoryError:
        status = "out of memory"
    ttfa = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated() - base) / 2**30 if torch.cuda.is_available() else 0.0
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return dict(frames=len(frames), time_to_first_answer_s=ttfa, peak_gib=peak, status=status)


def main() -> None:
    from vidqa.vlm.qwen2_5_vl import Qwen2_5_VLAdapter

    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="bench/configs/qwen2_5_vl_7b.json")
    ap.add_argument("--minutes", type=float, nargs="+", default=[10, 60])
    ap.add_argument("--native-frames", type=int, nargs="+", default=[256, 768])
    ap.add_argument("--frame-pixels", type=int, default=448 * 448)
    ap.add_argument("--kv-bits", type=int, default=8)
    ap.add_argument("--workdir", default="/tmp/vidqa-bench")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.smoke:
        args.config, args.minutes, args.native_frames, size = None, [0.5], [8], (128, 72)
    else:
        size = (1280, 720)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model, processor = build(args.config, args.frame_pixels, device)
    model = model.to(device)
    build_s = time.perf_counter() - t0
    adapter = Qwen2_5_VLAdapter(model, processor, "bench/" + (Path(args.config).stem if args.config else "tiny"))
    rows, native = [], []
    videos = {}
    for minutes in args.minutes:
        secs = int(minutes * 60)
        path = work / f"synth_{secs}s.mp4"
        gen = make_video(path, secs, *size)
        videos[minutes] = path
        vidqa_run(adapter, path, 8, work / "cache", args.kv_bits)  # warm-up (kernels, allocator)
        r = vidqa_run(adapter, path, None, work / "cache", args.kv_bits)
        r.update(minutes=minutes, generate_s=gen)
        rows.append(r)
        print(json.dumps(r), flush=True)
    longest = videos[max(args.minutes)]
    for n in args.native_frames:
        nat = native_run(model, processor, longest, n)
        ours = vidqa_run(adapter, longest, n, work / "cache", args.kv_bits)
        nat["vidqa_time_to_first_answer_s"] = ours["ingest_s"] + ours["ttft_first"]
        nat["vidqa_peak_gib"] = ours["peak_gib"]
        native.append(nat)
        print(json.dumps(nat), flush=True)
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    import transformers

    lines = [f"# vidqa on {name}: {adapter.name}, random bf16 weights", "",
             f"torch {torch.__version__}, transformers {transformers.__version__}; 1 fps, frames capped at "
             f"{args.frame_pixels} px, chunks of 16 frames, window 2 chunks, KV stored at {args.kv_bits} bits, "
             f"8,192 visual tokens per question; model built in {build_s:.0f} s.", "",
             "| video | frames | ingest (s) | decode / vision / prefill (s) | x real time | visual tokens | "
             "host KV (GiB) | peak GPU ingest (GiB) | TTFT first / follow-up (s) | decode tok/s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['minutes']:g} min | {r['frames']} | {r['ingest_s']:.1f} | {r['decode_s']:.1f} / "
                     f"{r['encode_s']:.1f} / {r['prefill_s']:.1f} | {r['minutes'] * 60 / r['ingest_s']:.0f}x | "
                     f"{r['visual_tokens']:,} | {r['host_gib']:.1f} | {r['peak_ingest_gib']:.1f} | "
                     f"{r['ttft_first']:.2f} / {r['ttft_followup']:.2f} | {r['decode_tps']:.0f} |")
    lines += ["", "Native transformers (processor + generate, 1 new token) vs vidqa (ingest + first answer), "
                  "same frames:", "",
              "| frames | native time to first answer (s) | native peak GPU (GiB) | native status | "
              "vidqa time to first answer (s) | vidqa peak GPU (GiB) | speed-up |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for n in native:
        speed = n["time_to_first_answer_s"] / n["vidqa_time_to_first_answer_s"] if n["status"] == "ok" else float("nan")
        lines.append(f"| {n['frames']} | {n['time_to_first_answer_s']:.1f} | {n['peak_gib']:.1f} | {n['status']} | "
                     f"{n['vidqa_time_to_first_answer_s']:.1f} | {n['vidqa_peak_gib']:.1f} | {speed:.2f}x |")
    text = "\n".join(lines)
    print(text)
    if not args.smoke:
        out = Path(__file__).resolve().parent / "results" / f"gpu_{name.replace(' ', '_')}.md"
        out.parent.mkdir(exist_ok=True)
        out.write_text(text + "\n")
        os.makedirs(os.environ.get("OUT", "/tmp"), exist_ok=True)


if __name__ == "__main__":
    main()
