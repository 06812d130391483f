"""The two measured paths of the GPU benchmark on one video: vidqa (ingest, then three questions)
and native transformers (processor + ``model.generate`` on uniformly sampled frames)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
from gpu_device import cuda_sync, free_memory, gpu_gib, gpu_reserved_peak_gib, is_oom, reset_peak, rss_gib, rss_peak_gib
from gpu_stages import StageTimer
from gpu_video import VIDEO_FPS

QUESTIONS = ("What happens in the video?", "And what colour is the triangle?", "When does the card appear?")


def vidqa_config(num_frames: int | None, args, workdir: Path):
    from vidqa.config import MemoryConfig, VidqaConfig, VideoConfig

    # 1-D RoPE (LLaVA-OV) needs retrieved blocks re-positioned next to each other on long videos.
    positions = "compact" if args.family == "llava_onevision" else "original"
    return VidqaConfig(
        video=VideoConfig(fps=float(VIDEO_FPS), num_frames=num_frames, max_frames=max(14400, num_frames or 0),
                          chunk_frames=args.chunk_frames, max_pixels=args.read_pixels),
        memory=MemoryConfig(kv_bits=args.kv_bits, token_budget=args.token_budget, positions=positions),
        cache_dir=str(workdir / "cache"), max_new_tokens=args.new_tokens)


def vidqa_run(adapter, video: Path, num_frames: int | None, args, workdir: Path,
              weights_gib: float, stages: bool = False) -> tuple[dict, dict]:
    """Ingest ``video`` (all frames at 1 fps, or ``num_frames`` uniformly) and ask ``QUESTIONS``.

    ``stages``: time the stages, synchronising the device at every stage boundary (which keeps the
    host from running ahead of the GPU, so that ingest is slower than without); otherwise
    ``record["stages"]`` is None and the ingest runs as it does for a user.
    Returns ``(record, work)``: the measurements, and the shapes the stages ran on (for FLOPs)."""
    from vidqa.pipeline import VideoQA

    qa = VideoQA(model=adapter.name, config=vidqa_config(num_frames, args, workdir), adapter=adapter)
    free_memory()
    reset_peak()
    with StageTimer(adapter, args.family, sync=stages) as st:
        t0 = time.perf_counter()
        memory = qa.ingest(video, use_cache=False)
        cuda_sync()
        ingest_s = time.perf_counter() - t0
    peak_ingest = gpu_gib()
    rss_ingest = rss_gib()
    ttfts, steps, attended = [], [], []
    for q in QUESTIONS:
        ans = qa.ask(memory, q, max_new_tokens=args.new_tokens)
        ttfts.append(ans.timings["ttft"])
        attended.append(ans.tokens["visual_attended"])
        gen = ans.tokens["generated"]
        forwards = gen - 1 if gen == args.new_tokens else gen  # the last kept token is never fed back
        if forwards > 0:
            steps.append((ans.timings["total"] - ans.timings["ttft"]) / forwards)
    peak = gpu_gib()
    t = memory.stats["timings"]
    # offload: what the ingest waited for its background offload thread; the thread's own time
    # (quantize + copy, overlapped with the other stages) is offload_background_s
    decode, enc, vision, llm, offload = (t["decode"], st.seconds["encode"], st.seconds["vision"],
                                         st.seconds["llm"], memory.stats.get("offload_wait_s", 0.0))
    rec = dict(
        frames=memory.video["frames"], ingest_s=ingest_s, x_real_time=memory.video["duration"] / ingest_s,
        stages={"decode_wait": decode, "preprocess": enc - vision, "vision": vision, "llm_prefill": llm,
                "offload": offload, "other": ingest_s - decode - enc - llm - offload} if stages else None,
        offload_background_s=st.seconds["offload"] if stages else None, offload_wait_s=offload,
        visual_tokens=memory.num_visual_tokens, attended_per_question=statistics.median(attended),
        host_kv_gib=memory.host_bytes / 2**30, rss_gib=rss_ingest, rss_peak_gib=rss_peak_gib(),
        gpu_peak_ingest_gib=peak_ingest, gpu_peak_gib=peak,
        gpu_peak_above_weights_gib=peak - weights_gib if peak is not None else None,
        gpu_reserved_peak_gib=gpu_reserved_peak_gib(),
        ttft_first_s=ttfts[0], ttft_followup_s=statistics.median(ttfts[1:]),
        decode_tok_s=1.0 / statistics.median(steps) if steps else float("nan"),
        peak_context_tokens=memory.stats.get("peak_context_tokens"))
    work = {"vision_calls": st.vision_calls, "llm_calls": st.llm_calls, "bytes": dict(st.bytes)}
    del memory, qa
    free_memory()
    return rec, work


def native_run(model, processor, family: str, video: Path, num_frames: int, read_pixels: int | None) -> dict:
    """processor + ``model.generate`` (1 new token) on ``num_frames`` frames sampled uniformly from
    ``video`` (scaled to ``read_pixels`` while decoding, or read at full size for the processor to
    resize); preprocessing runs on the model's device. Out of memory is a result, not an error."""
    from vidqa.video import open_video, read_frames

    free_memory()
    t0 = time.perf_counter()
    clip = read_frames(video, num_frames=num_frames, max_pixels=read_pixels)
    frames = clip.frames
    if family == "qwen2_5_vl" and len(frames) % 2:
        frames = frames[:-1]
    read_s = time.perf_counter() - t0
    rec = {"frames": int(len(frames)), "read_s": read_s}
    msgs = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": QUESTIONS[0]}]}]
    text = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    kwargs = {"do_sample_frames": False, "device": str(model.device)}
    if family == "qwen2_5_vl" and hasattr(processor.video_processor, "cap_pixels_per_frame"):
        kwargs["cap_pixels_per_frame"] = False  # as vidqa's encode: the size cap alone
    reset_peak()
    stage = "processor"
    try:
        t1 = time.perf_counter()
        try:
            inputs = processor(text=[text], videos=[frames], return_tensors="pt", videos_kwargs=kwargs)
        except (TypeError, ValueError):  # a transformers without these video-processor options
            inputs = processor(text=[text], videos=[frames], return_tensors="pt",
                               videos_kwargs={"do_sample_frames": False})
        rec["processor_device"] = str(inputs["pixel_values_videos"].device)
        if family == "qwen2_5_vl":
            spacing = open_video(video).duration / num_frames  # seconds between sampled frames
            inputs["second_per_grid_ts"] = torch.tensor([model.config.vision_config.temporal_patch_size * spacing])
        inputs = {k: v.to(model.device) if hasattr(v, "to") else v for k, v in inputs.items()}
        video_id = model.config.video_token_id if family == "qwen2_5_vl" else model.config.video_token_index
        rec["visual_tokens"] = int((inputs["input_ids"] == video_id).sum())
        cuda_sync()
        t2 = time.perf_counter()
        stage = "generate"
        with torch.no_grad():
            model.generate(**inputs, max_new_tokens=1, do_sample=False)
        cuda_sync()
        t3 = time.perf_counter()
        rec.update(status="ok", processor_s=t2 - t1, generate_s=t3 - t2, total_s=read_s + (t3 - t1))
    except Exception as err:  # noqa: BLE001 - OOM is the measurement; other errors are reported
        if is_oom(err):
            rec.update(status="out of memory", failed_in=stage)
        else:
            rec.update(status="error", error=f"{type(err).__name__}: {str(err)[:300]}")
        rec["total_s"] = time.perf_counter() - t0
    finally:
        inputs = None  # noqa: F841 - drop the pixel tensors before measuring and freeing
    rec["gpu_peak_gib"] = gpu_gib()
    free_memory()
    return rec
