"""Long video on one GPU with a 7B-class model: vidqa against native transformers (issue #11).

    source bench/device_env.sh && python3 bench/gpu.py            # on the GPU, one run of ~540 s
    python bench/gpu.py --smoke                                    # tiny model, CPU, every code path

Real-size architecture from its published config (``--config``; ``--family`` picks Qwen2.5-VL or
LLaVA-OneVision) with random bf16 weights: weights change neither speed nor memory. Synthetic 720p
H.264 videos at 1 fps are generated on the device (``--minutes``, default 10, 60 and 240), frames
are capped at ``--frame-pixels`` (448x448) before the vision tower, and one run measures, printing
each result as a JSON line the moment it exists:

1. video generation (rendered and encoded in parallel segments; not part of ingest);
2. vidqa ingest per video length: wall time split into decode wait / preprocessing / vision tower /
   LLM prefill / offload to host (+ quantize) / other, x real time, peak GPU memory in total
   (weights included) and above the weights, host RSS, visual tokens stored and attended per
   question, time to first token of a first question and the median of follow-ups, decode tokens/s;
3. native transformers (processor + ``model.generate``, 1 new token) against vidqa on the same
   frames at equal frame counts, and the native path's out-of-memory point;
4. a profile of the reference ingest against the device's physical limits: FLOPs of the vision
   tower and the LLM prefill counted from the configs and the shapes actually run, the bf16 matmul
   throughput and host<->device copy bandwidth measured in the same run, time-at-limit per stage.

``--time-budget`` (seconds from the start of the process) decides what is measured: tasks run in
order of importance (reference-length vidqa, native equal-frame comparison, the other lengths
longest first, the native OOM search, the profile's device measurements) and a task whose estimated
time does not fit in what is left is reported as skipped. The markdown table goes to
``bench/results/gpu_<device>.md`` and, when ``OUT`` is set, to ``$OUT/gpu.md`` with the JSON lines
in ``$OUT/gpu.jsonl``; both are rewritten after every result, so a killed run leaves what it had.

The script imports the installed ``vidqa`` and never puts the checkout on ``sys.path`` (the
checkout's ``vidqa/`` folder is not the whole package; ``bench/device_env.sh`` sets PYTHONSAFEPATH).
"""

from __future__ import annotations

import time

_T0 = time.monotonic()  # the time budget counts from here, before torch is imported

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import multiprocessing as mp  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import traceback  # noqa: E402
from functools import lru_cache  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

GOP = 10  # keyframe interval of the generated videos (frames); segments are whole GOPs
VIDEO_FPS = 1  # generated videos hold one frame per second, the rate vidqa samples at
QUESTIONS = ("What happens in the video?", "And what colour is the triangle?", "When does the card appear?")
END_RESERVE_S = 8.0  # kept free at the end of the budget for the last writes
# Estimates are multiplied by these before they are compared with the time left: vidqa's time is
# linear in frames (measured per frame on the reference video); native's is extrapolated.
SAFETY_VIDQA, SAFETY_NATIVE = 1.15, 1.3
PROFILE_S = 10.0  # the profile's device measurements (matmuls, copies), kept free by the OOM search
SMOKE = dict(config=None, minutes=[0.5, 1, 2], reference_minutes=1, native_frames=[8, 16], oom_frames=[24, 32],
             native_cap_s=60.0, frame_pixels=64 * 64, matmul_n=256, new_tokens=8,
             gen_workers=2)  # 2 workers: the pool path, at CPU size


# ====================================================================== small helpers
def _proc_status(key: str) -> float:
    """A ``/proc/self/status`` memory line (``VmRSS``, ``VmHWM``) in GiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) / 2**20
    return float("nan")


def rss_gib() -> float:
    return _proc_status("VmRSS")


def cuda_sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def gpu_gib(peak: bool = True) -> float | None:
    """Allocated GPU memory in GiB: the peak since the last reset, or what is allocated now (None on CPU)."""
    if not torch.cuda.is_available():
        return None
    return (torch.cuda.max_memory_allocated() if peak else torch.cuda.memory_allocated()) / 2**30


def reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def is_oom(err: BaseException) -> bool:
    """CUDA out of memory, whether raised as ``OutOfMemoryError`` or as a RuntimeError from a library."""
    return isinstance(err, torch.cuda.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and "out of memory" in str(err).lower())


class Budget:
    """Seconds left of ``seconds`` counted from process start (``_T0``), less ``END_RESERVE_S``."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def elapsed(self) -> float:
        return time.monotonic() - _T0

    def left(self) -> float:
        return self.seconds - self.elapsed() - END_RESERVE_S

    def fits(self, estimate_s: float, safety: float = SAFETY_VIDQA) -> bool:
        return estimate_s * safety <= self.left()


# ====================================================================== results
class Report:
    """Every measured (or skipped) result as a dict with a ``section``; printed as a JSON line when
    added and written, with the markdown table, to every target after each addition."""

    def __init__(self, md_paths: list[Path], jsonl_paths: list[Path]):
        self.records: list[dict] = []
        self.md_paths, self.jsonl_paths = md_paths, jsonl_paths

    def add(self, section: str, **fields) -> dict:
        rec = {"section": section, "t_s": round(time.monotonic() - _T0, 1), **fields}
        self.records.append(rec)
        print(json.dumps(rec, default=_json_default), flush=True)
        self.write()
        return rec

    def skip(self, section: str, reason: str, **fields) -> dict:
        return self.add(section, skipped=True, reason=reason, **fields)

    def of(self, section: str) -> list[dict]:
        return [r for r in self.records if r["section"] == section]

    def write(self) -> None:
        text = markdown(self)
        lines = "".join(json.dumps(r, default=_json_default) + "\n" for r in self.records)
        for path in self.md_paths:
            _write_atomic(path, text + "\n")
        for path in self.jsonl_paths:
            _write_atomic(path, lines)


def _json_default(x):
    if isinstance(x, (np.integer, np.floating)):
        return x.item()
    return str(x)


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ====================================================================== video generation
@lru_cache(maxsize=4)
def _timeline(seed: int, seconds: int):
    from vidqa.synth.timeline import make_timeline

    return make_timeline(seed, seconds)


def render_segment(job: tuple) -> tuple[str, int, float]:
    """Renders frames ``[start, stop)`` of a ``seconds``-long synthetic video and encodes them into
    their own H.264 file (libx264 ultrafast, one thread: the pool is the parallelism).

    ``job``: ``(path, seconds, start, stop, width, height, scale, seed)``. The world is drawn at
    ``1/scale`` of the size and upscaled by swscale (nearest), which keeps 720p cheap. Frame ``i``
    is a pure function of the timeline and ``i``, so segments join into the video a single encoder
    would have produced (same GOPs: ``start`` is a multiple of ``GOP``). Returns (path, frames, s).
    """
    import av

    from vidqa.synth.render import render_frame

    path, seconds, start, stop, width, height, scale, seed = job
    t0 = time.perf_counter()
    tl = _timeline(seed, seconds)
    with av.open(path, "w") as out:
        stream = out.add_stream("libx264", rate=VIDEO_FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.thread_count = 1
        stream.options = {"preset": "ultrafast", "g": str(GOP)}
        for i in range(start, stop):
            small = render_frame(tl, i / VIDEO_FPS, width // scale, height // scale)
            frame = av.VideoFrame.from_ndarray(small, format="rgb24").reformat(
                width=width, height=height, format="yuv420p", interpolation="POINT")
            frame.pts = i - start
            for p in stream.encode(frame):
                out.mux(p)
        for p in stream.encode():
            out.mux(p)
    return path, stop - start, time.perf_counter() - t0


def join_segments(parts: list[str], path: Path) -> int:
    """Concatenates H.264 segment files (same encoder settings) into ``path`` without re-encoding:
    packets are copied with their timestamps shifted by the frames before them. Returns frames."""
    import av

    tmp = path.with_name(path.stem + ".joining.mp4")
    frames = 0
    with av.open(parts[0]) as first, av.open(str(tmp), "w") as out:
        ostream = out.add_stream_from_template(first.streams.video[0])
        for part in parts:
            with av.open(part) as inp:
                s = inp.streams.video[0]
                shift = int(round(frames / VIDEO_FPS / s.time_base))
                n = 0
                for pkt in inp.demux(s):
                    if pkt.dts is None:  # the demuxer's end-of-stream marker
                        continue
                    pkt.pts += shift
                    pkt.dts += shift
                    pkt.stream = ostream
                    out.mux(pkt)
                    n += 1
                frames += n
    os.replace(tmp, path)
    return frames


def _cached_video_ok(path: Path, seconds: int) -> bool:
    """The file at ``path`` is a finished video of ``seconds`` frames (a killed run leaves none:
    videos are written under another name and renamed when complete)."""
    if not path.exists():
        return False
    try:
        from vidqa.video import open_video

        info = open_video(path)
    except Exception:  # noqa: BLE001 - any unreadable file is regenerated
        return False
    return info.num_frames == seconds * VIDEO_FPS and abs(info.duration - seconds) < 1.5


class VideoFactory:
    """Synthetic 1-fps videos from a process pool: each video is cut into segments of whole GOPs,
    every worker renders + encodes whole segments, the parent joins them in order. Videos are cached
    by path (``synth_<w>x<h>_<seconds>s.mp4`` in ``workdir``).

    The pool is forked when the factory is made: make it before CUDA is initialised (the workers
    never touch CUDA, and a fork of a process holding a CUDA context is unsafe).
    """

    def __init__(self, workdir: Path, width: int, height: int, scale: int, workers: int, seed: int = 1):
        self.workdir, self.width, self.height, self.scale, self.seed = workdir, width, height, scale, seed
        self.workers = max(1, workers)
        self.pool = mp.get_context("fork").Pool(self.workers) if self.workers > 1 else None
        self.parts_dir = workdir / "parts"

    def path(self, seconds: int) -> Path:
        return self.workdir / f"synth_{self.width}x{self.height}_{seconds}s.mp4"

    def submit(self, seconds: int) -> dict:
        """Starts generating a ``seconds``-long video (nothing to do when cached); see :meth:`finish`."""
        path = self.path(seconds)
        job = {"seconds": seconds, "path": path, "t0": time.perf_counter(), "cached": _cached_video_ok(path, seconds)}
        if job["cached"]:
            return job
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        frames = seconds * VIDEO_FPS
        seg = max(GOP, math.ceil(frames / (2 * self.workers) / GOP) * GOP)
        jobs = [(str(self.parts_dir / f"{path.stem}_{k:05d}.mp4"), seconds, a, min(a + seg, frames),
                 self.width, self.height, self.scale, self.seed) for k, a in enumerate(range(0, frames, seg))]
        job["parts"] = [j[0] for j in jobs]
        job["async"] = self.pool.map_async(render_segment, jobs) if self.pool else None
        job["jobs"] = jobs
        return job

    def finish(self, job: dict) -> dict:
        """Waits for a submitted video, joins its segments; returns its generation record."""
        path, seconds = job["path"], job["seconds"]
        if not job["cached"]:
            results = job["async"].get() if job["async"] is not None else [render_segment(j) for j in job["jobs"]]
            t_join = time.perf_counter()
            frames = join_segments(job["parts"], path)
            join_s = time.perf_counter() - t_join
            for p in job["parts"]:
                os.remove(p)
            if frames != seconds * VIDEO_FPS:
                raise RuntimeError(f"{path}: joined {frames} frames, expected {seconds * VIDEO_FPS}")
            worker_s = sum(r[2] for r in results)
        else:
            join_s = worker_s = 0.0
        return {"minutes": seconds / 60, "seconds": seconds, "path": str(path), "cached": job["cached"],
                "frames": seconds * VIDEO_FPS, "width": self.width, "height": self.height,
                "mib": path.stat().st_size / 2**20, "wall_s": time.perf_counter() - job["t0"],
                "worker_s": worker_s, "join_s": join_s, "workers": self.workers}

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None


# ====================================================================== models
def _qwen_ids(tok) -> dict:
    from vidqa.vlm.tiny import QWEN_SPECIALS

    return {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}


def build_qwen(spec: dict, frame_pixels: int, device: str, dtype: torch.dtype):
    """Qwen2.5-VL ``(model, processor)`` from a ``{"text_config", "vision_config"}`` spec with random
    weights, the byte tokenizer of the tiny models and frames capped at ``frame_pixels``."""
    from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor,
                              Qwen2VLImageProcessor, Qwen2VLVideoProcessor)

    from vidqa.vlm.tiny import QWEN_CHAT_TEMPLATE, _qwen_tokenizer

    tok = _qwen_tokenizer()
    ids = _qwen_ids(tok)
    config = Qwen2_5_VLConfig(
        text_config={**spec["text_config"], "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"]},
        vision_config=spec["vision_config"], image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=spec["text_config"].get("tie_word_embeddings", False))
    model = _instantiate(Qwen2_5_VLForConditionalGeneration, config, device, dtype)
    vc = spec["vision_config"]
    factor = vc["patch_size"] * vc["spatial_merge_size"]
    size = {"shortest_edge": factor * factor, "longest_edge": frame_pixels}
    common = dict(size=size, patch_size=vc["patch_size"], merge_size=vc["spatial_merge_size"],
                  temporal_patch_size=vc["temporal_patch_size"])
    processor = Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(**common),
                                    video_processor=Qwen2VLVideoProcessor(**common), tokenizer=tok,
                                    chat_template=QWEN_CHAT_TEMPLATE)
    return model, processor


def build_llava(spec: dict, device: str, dtype: torch.dtype):
    """LLaVA-OneVision ``(model, processor)`` from a spec with ``text_config`` (Qwen2),
    ``vision_config`` (SigLIP) and the top-level LlavaOnevisionConfig fields; random weights."""
    from transformers import (LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration,
                              LlavaOnevisionImageProcessor, LlavaOnevisionProcessor, LlavaOnevisionVideoProcessor)

    from vidqa.vlm.tiny import LLAVA_CHAT_TEMPLATE, LLAVA_SPECIALS, byte_tokenizer

    tok = byte_tokenizer(LLAVA_SPECIALS, LLAVA_CHAT_TEMPLATE,
                         extra_special_tokens={"image_token": "<image>", "video_token": "<video>"})
    ids = {t: tok.convert_tokens_to_ids(t) for t in LLAVA_SPECIALS}
    top = {k: v for k, v in spec.items() if k not in ("text_config", "vision_config") and not k.startswith("_")}
    config = LlavaOnevisionConfig(
        text_config={**spec["text_config"], "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"]},
        vision_config=spec["vision_config"], image_token_index=ids["<image>"], video_token_index=ids["<video>"],
        **top)
    model = _instantiate(LlavaOnevisionForConditionalGeneration, config, device, dtype)
    vc = spec["vision_config"]
    side = vc["image_size"]
    common = dict(size={"height": side, "width": side}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    pinpoints = top.get("image_grid_pinpoints") or [[side, side]]
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(image_grid_pinpoints=pinpoints, **common),
        video_processor=LlavaOnevisionVideoProcessor(**common), tokenizer=tok, chat_template=LLAVA_CHAT_TEMPLATE,
        num_image_tokens=(side // vc["patch_size"]) ** 2,
        vision_feature_select_strategy=top.get("vision_feature_select_strategy", "full"))
    return model, processor


def _instantiate(cls, config, device: str, dtype: torch.dtype):
    """The model with random weights created directly on ``device`` in ``dtype`` (no host copy)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = cls(config).eval()
    finally:
        torch.set_default_dtype(previous)
    ids = [config.get_text_config().eos_token_id]
    model.generation_config.eos_token_id = ids
    return model


def build(config_path: str | None, family: str, frame_pixels: int, device: str, dtype: torch.dtype):
    """``(model, processor)``: the family's tiny random model when ``config_path`` is None, else the
    architecture of the JSON spec at ``config_path`` with random weights."""
    if config_path is None:
        from vidqa.vlm.tiny import tiny_random

        model, processor = tiny_random(family)
        return model.to(device), processor
    spec = json.loads(Path(config_path).read_text())
    if family == "qwen2_5_vl":
        return build_qwen(spec, frame_pixels, device, dtype)
    if family == "llava_onevision":
        return build_llava(spec, device, dtype)
    raise ValueError(f"unknown family {family!r}; choose qwen2_5_vl or llava_onevision")


def vision_module(model, family: str) -> torch.nn.Module:
    """The vision tower whose forward is timed as the "vision tower" stage (Qwen: with its merger)."""
    return model.model.visual if family == "qwen2_5_vl" else model.model.vision_tower


# ====================================================================== FLOP counting
def qwen_vision_flops(vc, grids: list[tuple[int, int, int]]) -> dict:
    """Matmul FLOPs (2 per multiply-add) of a Qwen2.5-VL vision tower + merger on videos with patch
    grids ``(t, h, w)`` (``video_grid_thw`` rows), from the vision config alone.

    Counts the patch embedding (a conv = one matmul per patch), per block the fused QKV and output
    projections and the gated MLP, the attention (QK^T and AV: ``4 d L^2`` per segment) inside
    windows of ``window_size`` pixels in the window blocks and over each temporal grid in
    ``fullatt_block_indexes``, and the merger MLP. Returns ``{"linear", "attention", "total"}``.
    """
    d, inter, depth = vc.hidden_size, vc.intermediate_size, vc.depth
    m, p, tp = vc.spatial_merge_size, vc.patch_size, vc.temporal_patch_size
    channels = getattr(vc, "in_channels", 3)
    out = getattr(vc, "out_hidden_size", d)
    n_full = len(set(vc.fullatt_block_indexes) & set(range(depth)))
    ws = vc.window_size // m // p  # window side in merged tokens
    patches = win_sq = full_sq = 0
    for t, h, w in grids:
        patches += t * h * w
        full_sq += t * (h * w) ** 2
        hm, wm = h // m, w // m
        rows = [ws] * (hm // ws) + ([hm % ws] if hm % ws else [])
        cols = [ws] * (wm // ws) + ([wm % ws] if wm % ws else [])
        win_sq += t * sum((r * c * m * m) ** 2 for r in rows for c in cols)
    embed = 2 * patches * channels * tp * p * p * d
    blocks = depth * 2 * patches * (4 * d * d + 3 * d * inter)
    merged, wide = patches // (m * m), d * m * m
    merger = 2 * merged * (wide * wide + wide * out)
    attention = 4 * d * (n_full * full_sq + (depth - n_full) * win_sq)
    linear = embed + blocks + merger
    return {"linear": linear, "attention": attention, "total": linear + attention}


def siglip_vision_flops(vc, frames: int) -> dict:
    """Matmul FLOPs of a SigLIP vision tower on ``frames`` images of ``image_size``: patch embedding,
    per layer Q/K/V/O and the two-layer MLP, full attention over each image; with
    ``vision_use_head`` also the attention-pooling head (one probe query per image, its MLP)."""
    d, inter, layers = vc.hidden_size, vc.intermediate_size, vc.num_hidden_layers
    p, channels = vc.patch_size, getattr(vc, "num_channels", 3)
    tokens = (vc.image_size // p) ** 2
    embed = 2 * frames * tokens * channels * p * p * d
    linear = embed + layers * 2 * frames * tokens * (4 * d * d + 2 * d * inter)
    attention = layers * 4 * d * frames * tokens ** 2
    if getattr(vc, "vision_use_head", True):
        # probe query, keys + values of every patch, output projection, MLP on the pooled token
        linear += 2 * frames * (d * d + tokens * 2 * d * d + d * d + 2 * d * inter)
        attention += 4 * d * frames * tokens
    return {"linear": linear, "attention": attention, "total": linear + attention}


def llm_linear_params(tc) -> int:
    """Weights of the decoder layers' linear maps (Q, K, V, O, gated MLP) of a text config: the
    ``params`` of ``2 * params * tokens`` (embeddings and the LM head are not run in prefill)."""
    h, heads, kv = tc.hidden_size, tc.num_attention_heads, tc.num_key_value_heads
    dh = getattr(tc, "head_dim", None) or h // heads
    per_layer = h * heads * dh + 2 * h * kv * dh + heads * dh * h + 3 * h * tc.intermediate_size
    return tc.num_hidden_layers * per_layer


def llm_flops(tc, calls: list[tuple[int, int]], causal: bool = True) -> dict:
    """Matmul FLOPs of decoder forwards ``calls`` = ``[(new tokens n, cached tokens c), ...]``:
    ``2 * params * n`` plus attention ``4 * heads * head_dim`` per (query, key) pair per layer; a
    causal query ``j`` sees ``c + j + 1`` keys (``causal=False``: all ``c + n``, what a kernel
    computing the full rectangle does)."""
    h, heads = tc.hidden_size, tc.num_attention_heads
    dh = getattr(tc, "head_dim", None) or h // heads
    params = llm_linear_params(tc)
    linear = sum(2 * params * n for n, _ in calls)
    pairs = sum(n * c + (n * (n + 1) // 2 if causal else n * n) for n, c in calls)
    attention = 4 * heads * dh * tc.num_hidden_layers * pairs
    return {"linear": linear, "attention": attention, "total": linear + attention,
            "tokens": sum(n for n, _ in calls)}


# ====================================================================== ingest instrumentation
class StageTimer:
    """Times the stages of one ingest and records the shapes they ran on (context manager).

    Inside the block: the adapter's ``encode`` (frames -> visual tokens: preprocessing + vision
    tower), the vision tower's forward (hooks), the language model's forward (hooks; every ingest
    prefill, including the prompt prefix) and ``StoredKV.pack`` (offload to host, quantizing first
    at 8/4 bits) are timed, each between device synchronisations so that asynchronous GPU work is
    charged to the stage that queued it. Restored on exit.

    ``seconds``: ``encode``, ``vision``, ``llm``, ``offload``; ``bytes``: ``frames`` (uint8 frames
    handed to ``encode``), ``offload`` (bytes stored on the host); ``vision_calls``: Qwen
    ``video_grid_thw`` rows per call, or SigLIP image counts; ``llm_calls``: ``(new, cached)`` tokens.
    """

    def __init__(self, adapter, family: str):
        self.adapter, self.family = adapter, family
        self.vision = vision_module(adapter.model, family)

    def __enter__(self) -> "StageTimer":
        from vidqa.memory.storage import StoredKV

        self.seconds = {"encode": 0.0, "vision": 0.0, "llm": 0.0, "offload": 0.0}
        self.bytes = {"frames": 0, "offload": 0}
        self.vision_calls: list = []
        self.llm_calls: list[tuple[int, int]] = []
        starts: dict[str, float] = {}

        def vision_pre(module, args, kwargs):
            cuda_sync()
            if self.family == "qwen2_5_vl":
                grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
                self.vision_calls.append([tuple(int(v) for v in row) for row in grid.tolist()])
            else:
                self.vision_calls.append(int((kwargs.get("pixel_values", args[0] if args else None)).shape[0]))
            starts["vision"] = time.perf_counter()

        def vision_post(module, args, kwargs, output):
            cuda_sync()
            self.seconds["vision"] += time.perf_counter() - starts["vision"]

        def llm_pre(module, args, kwargs):
            cuda_sync()
            embeds, cache = kwargs.get("inputs_embeds"), kwargs.get("past_key_values")
            self.llm_calls.append((int(embeds.shape[1]), int(cache.get_seq_length()) if cache is not None else 0))
            starts["llm"] = time.perf_counter()

        def llm_post(module, args, kwargs, output):
            cuda_sync()
            self.seconds["llm"] += time.perf_counter() - starts["llm"]

        lm = self.adapter.language_model
        self._handles = [self.vision.register_forward_pre_hook(vision_pre, with_kwargs=True),
                         self.vision.register_forward_hook(vision_post, with_kwargs=True),
                         lm.register_forward_pre_hook(llm_pre, with_kwargs=True),
                         lm.register_forward_hook(llm_post, with_kwargs=True)]
        encode = self.adapter.encode

        def timed_encode(frames, times, first_index=0):
            cuda_sync()
            t0 = time.perf_counter()
            out = encode(frames, times, first_index=first_index)
            cuda_sync()
            self.seconds["encode"] += time.perf_counter() - t0
            self.bytes["frames"] += int(np.asarray(frames).nbytes)
            return out

        self.adapter.encode = timed_encode  # an instance attribute shadows the method until __exit__
        self._stored, self._pack = StoredKV, StoredKV.__dict__["pack"]
        pack = self._pack.__func__

        def timed_pack(x, bits=16, group_size=32):
            cuda_sync()
            t0 = time.perf_counter()
            out = pack(x, bits, group_size)
            self.seconds["offload"] += time.perf_counter() - t0
            self.bytes["offload"] += out.nbytes
            return out

        StoredKV.pack = staticmethod(timed_pack)
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.adapter.__dict__.pop("encode", None)
        self._stored.pack = self._pack


# ====================================================================== measurements
def vidqa_config(num_frames: int | None, args, workdir: Path):
    from vidqa.config import MemoryConfig, VidqaConfig, VideoConfig

    # 1-D RoPE (LLaVA-OV) needs retrieved blocks re-positioned next to each other on long videos.
    positions = "compact" if args.family == "llava_onevision" else "original"
    return VidqaConfig(
        video=VideoConfig(fps=float(VIDEO_FPS), num_frames=num_frames, max_frames=max(14400, num_frames or 0),
                          chunk_frames=args.chunk_frames, max_pixels=args.frame_pixels),
        memory=MemoryConfig(kv_bits=args.kv_bits, token_budget=args.token_budget, positions=positions),
        cache_dir=str(workdir / "cache"), max_new_tokens=args.new_tokens)


def vidqa_run(adapter, video: Path, num_frames: int | None, args, workdir: Path,
              weights_gib: float) -> tuple[dict, dict]:
    """Ingest ``video`` (all frames at 1 fps, or ``num_frames`` uniformly) and ask ``QUESTIONS``.

    Returns ``(record, work)``: the measurements, and the shapes the stages ran on (for FLOPs)."""
    from vidqa.pipeline import VideoQA

    qa = VideoQA(model=adapter.name, config=vidqa_config(num_frames, args, workdir), adapter=adapter)
    free_memory()
    reset_peak()
    with StageTimer(adapter, args.family) as st:
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
    decode, enc, vision, llm, offload = (t["decode"], st.seconds["encode"], st.seconds["vision"],
                                         st.seconds["llm"], st.seconds["offload"])
    rec = dict(
        frames=memory.video["frames"], ingest_s=ingest_s, x_real_time=memory.video["duration"] / ingest_s,
        stages={"decode_wait": decode, "preprocess": enc - vision, "vision": vision, "llm_prefill": llm,
                "offload": offload, "other": ingest_s - decode - enc - llm - offload},
        visual_tokens=memory.num_visual_tokens, attended_per_question=statistics.median(attended),
        host_kv_gib=memory.host_bytes / 2**30, rss_gib=rss_ingest, rss_peak_gib=_proc_status("VmHWM"),
        gpu_peak_ingest_gib=peak_ingest, gpu_peak_gib=peak,
        gpu_peak_above_weights_gib=peak - weights_gib if peak is not None else None,
        gpu_reserved_peak_gib=torch.cuda.max_memory_reserved() / 2**30 if torch.cuda.is_available() else None,
        ttft_first_s=ttfts[0], ttft_followup_s=statistics.median(ttfts[1:]),
        decode_tok_s=1.0 / statistics.median(steps) if steps else float("nan"),
        peak_context_tokens=memory.stats.get("peak_context_tokens"))
    work = {"vision_calls": st.vision_calls, "llm_calls": st.llm_calls, "bytes": dict(st.bytes)}
    del memory, qa
    free_memory()
    return rec, work


def native_run(model, processor, family: str, video: Path, num_frames: int, frame_pixels: int) -> dict:
    """processor + ``model.generate`` (1 new token) on ``num_frames`` frames sampled uniformly from
    ``video``; preprocessing runs on the model's device. Out of memory is a result, not an error."""
    from vidqa.video import open_video, read_frames

    free_memory()
    t0 = time.perf_counter()
    clip = read_frames(video, num_frames=num_frames, max_pixels=frame_pixels)
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
        if not is_oom(err):
            rec.update(status="error", error=f"{type(err).__name__}: {str(err)[:300]}")
        else:
            rec.update(status="out of memory", failed_in=stage)
        rec["total_s"] = time.perf_counter() - t0
    finally:
        inputs = None  # noqa: F841 - drop the pixel tensors before measuring and freeing
    rec["gpu_peak_gib"] = gpu_gib()
    free_memory()
    return rec


def native_estimate(points: list[tuple[int, float]], n: int) -> float | None:
    """Seconds for ``n`` native frames from measured ``(frames, seconds)``: a least-squares
    ``a n + b n^2`` (vision and projections grow linearly, attention quadratically); with one point
    the quadratic scaling of that point (an upper bound); None without points."""
    if not points:
        return None
    if len(points) == 1:
        n0, t0 = points[0]
        return t0 * max(1.0, (n / n0) ** 2)
    x = np.array([[p[0], p[0] ** 2] for p in points], dtype=np.float64)
    y = np.array([p[1] for p in points], dtype=np.float64)
    (a, b), *_ = np.linalg.lstsq(x, y, rcond=None)
    a, b = max(a, 0.0), max(b, 0.0)
    if a == 0.0 and b == 0.0:
        return max(y) * n / max(p[0] for p in points)
    return a * n + b * n * n


def matmul_tflops(n: int, iters: int, device: str) -> dict:
    """Median throughput of ``n^3`` matmuls (bf16 on CUDA, timed with CUDA events; fp32 on CPU)."""
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    times = []
    for i in range(iters + 3):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            a @ b
            end.record()
            end.synchronize()
            dt = start.elapsed_time(end) / 1e3
        else:
            t0 = time.perf_counter()
            a @ b
            dt = time.perf_counter() - t0
        if i >= 3:  # the first calls pick kernels and warm clocks
            times.append(dt)
    dt = statistics.median(times)
    return {"n": n, "dtype": str(dtype).removeprefix("torch."), "median_s": dt, "tflops": 2 * n ** 3 / dt / 1e12}


def copy_bandwidth(nbytes: int, iters: int) -> dict:
    """Median GB/s of device->host and host->device copies of ``nbytes`` between pinned host memory
    and the GPU (CUDA events); empty on CPU."""
    if not torch.cuda.is_available():
        return {}
    dev = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    host = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
    out = {}
    for name, (dst, src) in {"d2h_gb_s": (host, dev), "h2d_gb_s": (dev, host)}.items():
        times = []
        for _ in range(iters + 1):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            dst.copy_(src, non_blocking=True)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        out[name] = nbytes / statistics.median(times[1:]) / 1e9
    return out


def ingest_work(work: dict, model, family: str) -> dict:
    """FLOPs of the vision tower and the LLM prefill of one measured ingest, from the shapes its
    :class:`StageTimer` recorded (``vidqa_run``'s second result)."""
    vc = model.config.vision_config
    vision = {"linear": 0, "attention": 0, "total": 0}
    for call in work["vision_calls"]:
        f = qwen_vision_flops(vc, call) if family == "qwen2_5_vl" else siglip_vision_flops(vc, call)
        for k in vision:
            vision[k] += f[k]
    llm = llm_flops(model.config.get_text_config(), [tuple(c) for c in work["llm_calls"]])
    return {"vision": vision, "llm": llm, "frames_bytes": work["bytes"]["frames"],
            "offload_bytes": work["bytes"]["offload"]}


def profile_table(ref: dict, work: dict, limits: dict) -> list[dict]:
    """Per stage of the reference ingest: the work, the time at the device's limit and the measured time."""
    tf = limits["matmul"]["tflops"] * 1e12
    d2h, h2d = limits.get("d2h_gb_s"), limits.get("h2d_gb_s")
    st = ref["stages"]
    vis, llm = work["vision"], work["llm"]
    rows = [
        {"stage": "decode wait (decoder thread, CPU)", "work": f"{ref['frames']} frames", "limit_s": None,
         "measured_s": st["decode_wait"]},
        {"stage": "preprocess (frames to the device, resize, normalise)",
         "work": f"{_si(work['frames_bytes'], 'B')} host->device",
         "limit_s": work["frames_bytes"] / (h2d * 1e9) if h2d else None, "measured_s": st["preprocess"]},
        {"stage": "vision tower",
         "work": f"{_si(vis['total'], 'FLOP')} ({vis['attention'] / max(1, vis['total']):.0%} attention)",
         "limit_s": vis["total"] / tf, "measured_s": st["vision"]},
        {"stage": "LLM prefill", "work": f"{_si(llm['total'], 'FLOP')} over {llm['tokens']:,} tokens "
                                         f"({llm['attention'] / max(1, llm['total']):.0%} attention)",
         "limit_s": llm["total"] / tf, "measured_s": st["llm_prefill"]},
        {"stage": "offload to host (+ quantize)", "work": f"{_si(work['offload_bytes'], 'B')} device->host",
         "limit_s": work["offload_bytes"] / (d2h * 1e9) if d2h else None, "measured_s": st["offload"]},
        {"stage": "other (Python, context assembly, summaries)", "work": "", "limit_s": None,
         "measured_s": st["other"]},
    ]
    rows.append({"stage": "ingest", "work": "", "limit_s": sum(r["limit_s"] or 0.0 for r in rows),
                 "measured_s": ref["ingest_s"]})
    return rows


# ====================================================================== markdown
def _f(x, spec: str = ".1f", none: str = "—") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return none
    return format(x, spec)


def _si(x: float, unit: str) -> str:
    """``x`` with an SI prefix: ``_si(2.5e12, "FLOP")`` is ``"2.5 TFLOP"``."""
    for prefix, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.1f} {prefix}{unit}"
    return f"{x:.0f} {unit}"


def _label(minutes: float) -> str:
    return f"{minutes:g} min"


def markdown(report: Report) -> str:
    """The results as markdown: setup, generation, vidqa per length, native comparison, OOM search,
    profile, skipped measurements (sections without results say so)."""
    setup = (report.of("setup") or [{}])[-1]
    L = [f"# vidqa on {setup.get('device', '?')}: {setup.get('model', '?')}, "
         f"random {setup.get('dtype', '')} weights", ""]
    if setup:
        L += [f"torch {setup['torch']}, transformers {setup['transformers']}, Python {setup['python']}; "
              f"1 fps, frames decoded from the {setup['video_size']} file scaled to at most "
              f"{setup['frame_pixels']:,} px (both paths; the processor then rounds to whole merged patches), "
              f"chunks of {setup['chunk_frames']} frames, "
              f"window {setup['window_chunks']} chunks, KV stored at {setup['kv_bits']} bits, "
              f"{setup['token_budget']:,} visual tokens per question, {setup['new_tokens']} new tokens per answer. "
              f"Model built in {setup['build_s']:.0f} s; weights {_si(setup['weights_gib'] * 2**30, 'B')} "
              f"({_si(setup['params'], '')} parameters). Time budget {setup['time_budget_s']:.0f} s; "
              f"{setup['cpu_count']} CPU cores.", ""]
    gens = report.of("video")
    L += ["## Video generation (not part of ingest)", ""]
    if gens:
        L += ["| video | frames | size | file (MiB) | generated in (s) | sum over workers (s) | join (s) |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
        for g in gens:
            if g.get("skipped"):
                L.append(f"| {_label(g['minutes'])} | — | — | — | skipped: {g['reason']} | — | — |")
                continue
            L.append(f"| {_label(g['minutes'])} | {g['frames']:,} | {g['width']}x{g['height']} | {g['mib']:.0f} | "
                     f"{'cached' if g['cached'] else _f(g['wall_s'])} | {_f(g['worker_s'])} | {_f(g['join_s'])} |")
        L += ["", f"Rendered at a quarter of the size, upscaled, libx264 ultrafast, GOP {GOP}, in segments by "
                  f"{gens[0].get('workers', '?')} process(es) (one x264 thread each), joined without re-encoding. "
                  "Videos made together share the pool (the first ones while the model is built): each one's time "
                  "runs from its submission to its file being complete.", ""]
    else:
        L += ["(none yet)", ""]

    rows = report.of("vidqa")
    L += ["## vidqa ingest and questions", ""]
    if rows:
        L += ["| video | frames | ingest (s) | x real time "
              "| decode wait / preprocess / vision / prefill / offload / other (s) "
              "| TTFT first / follow-up median (s) | decode tok/s |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for r in rows:
            if r.get("skipped"):
                L.append(f"| {_label(r['minutes'])} | — | skipped: {r['reason']} | | | | |")
                continue
            s = r["stages"]
            L.append(f"| {_label(r['minutes'])} | {r['frames']:,} | {r['ingest_s']:.1f} | {r['x_real_time']:.0f}x | "
                     f"{s['decode_wait']:.1f} / {s['preprocess']:.1f} / {s['vision']:.1f} / {s['llm_prefill']:.1f} / "
                     f"{s['offload']:.1f} / {s['other']:.1f} | {r['ttft_first_s']:.2f} / {r['ttft_followup_s']:.2f} | "
                     f"{_f(r['decode_tok_s'], '.0f')} |")
        L += ["", "| video | visual tokens stored | attended per question "
                  "| peak GPU total: ingest / with questions (GiB) | above weights (GiB) | host KV (GiB) "
                  "| host RSS after ingest / peak (GiB) |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
        for r in rows:
            if r.get("skipped"):
                continue
            L.append(f"| {_label(r['minutes'])} | {r['visual_tokens']:,} | {r['attended_per_question']:,.0f} | "
                     f"{_f(r['gpu_peak_ingest_gib'], '.2f')} / {_f(r['gpu_peak_gib'], '.2f')} | "
                     f"{_f(r['gpu_peak_above_weights_gib'], '.2f')} | "
                     f"{r['host_kv_gib']:.2f} | {r['rss_gib']:.1f} / {r['rss_peak_gib']:.1f} |")
        done = [r for r in rows if not r.get("skipped")]
        if len(done) >= 2:
            ref = next((r for r in done if r.get("reference")), done[0])
            longest = max(done, key=lambda r: r["minutes"])
            if longest is not ref and ref["gpu_peak_gib"]:
                ratio = longest["gpu_peak_gib"] / ref["gpu_peak_gib"]
                L += ["", f"Peak GPU memory (total), {_label(longest['minutes'])} / {_label(ref['minutes'])}: "
                          f"{ratio:.3f} ({'within' if abs(ratio - 1) <= 0.10 else 'OUTSIDE'} the ±10% target)."]
        L += ["", "Stage boundaries are synchronised with the device (the times add up to the ingest wall time). "
                  "Decode wait is the time the pipeline waited for the decoder thread."]
    else:
        L += ["(none yet)"]
    L.append("")

    eq = report.of("native_equal")
    L += ["## Native transformers vs vidqa on the same frames", ""]
    if eq:
        L += ["| frames | native status | native: read / processor / generate (s) | native time to first answer (s) "
              "| native peak GPU total (GiB) | vidqa time to first answer (s) | vidqa peak GPU total (GiB) "
              "| visual tokens native / vidqa | speed-up |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for n in eq:
            if n.get("skipped"):
                L.append(f"| {n['frames']} | skipped: {n['reason']} | | | | | | | |")
                continue
            nat, ours = n["native"], n["vidqa"]
            ok = nat["status"] == "ok"
            ttfa = ours["ingest_s"] + ours["ttft_first_s"]
            L.append(f"| {nat['frames']} | {nat['status']} | {_f(nat['read_s'])} / {_f(nat.get('processor_s'))} / "
                     f"{_f(nat.get('generate_s'))} | {_f(nat['total_s'])} | {_f(nat['gpu_peak_gib'])} | {ttfa:.1f} | "
                     f"{_f(ours['gpu_peak_gib'])} | {nat.get('visual_tokens', 0):,} / {ours['visual_tokens']:,} | "
                     f"{(nat['total_s'] / ttfa) if ok else float('nan'):.2f}x |")
        L += ["", "Time to first answer: decoding the frames from the file + everything until the first answer token "
                  "(vidqa: ingest + first question). Both read the same sampled frames at the same size."]
    else:
        L += ["(none yet)"]
    L.append("")

    oom = report.of("native_oom")
    L += ["## Native transformers: out-of-memory point", ""]
    if oom:
        L += ["| frames | status | time to first answer (s) | peak GPU total (GiB) | visual tokens |",
              "| --- | --- | --- | --- | --- |"]
        for n in oom:
            if n.get("skipped"):
                L.append(f"| {n['frames']} | skipped: {n['reason']} | | | |")
                continue
            status = n["status"] + (f" (in {n['failed_in']})" if n.get("failed_in") else "")
            L.append(f"| {n['frames']} | {status} | {_f(n['total_s'])} | {_f(n['gpu_peak_gib'])} | "
                     f"{n.get('visual_tokens', '—')} |")
        fit = [n["frames"] for n in report.of("native_equal") if not n.get("skipped") and n["native"]["status"] == "ok"]
        fit += [n["frames"] for n in oom if not n.get("skipped") and n["status"] == "ok"]
        failed = [n["frames"] for n in oom if not n.get("skipped") and n["status"] != "ok"]
        L += ["", f"Largest that fit: {max(fit) if fit else 'none'}; first that failed: "
                  f"{min(failed) if failed else 'none of those tried'}."]
    else:
        L += ["(none yet)"]
    L.append("")

    prof = report.of("profile")
    L += ["## Profile of the reference ingest against the device's limits", ""]
    if prof and not prof[-1].get("skipped"):
        p = prof[-1]
        lim = p["limits"]
        bw = (f", pinned copies {lim['d2h_gb_s']:.1f} GB/s device->host and {lim['h2d_gb_s']:.1f} GB/s host->device"
              if lim.get("d2h_gb_s") else "")
        L += [f"{_label(p['minutes'])} video, {p['frames']:,} frames. Measured in this run: {lim['matmul']['dtype']} "
              f"matmul {lim['matmul']['n']}^3 at {_si(lim['matmul']['tflops'] * 1e12, 'FLOP/s')} (median){bw}. "
              f"Vision tower {_si(p['vision_gflop_per_frame'] * 1e9, 'FLOP')} per frame; LLM prefill (linear) "
              f"{_si(p['llm_gflop_per_token'] * 1e9, 'FLOP')} per token.", "",
              "| stage | work | time at the limit (s) | measured (s) | share of ingest | measured / limit |",
              "| --- | --- | --- | --- | --- | --- |"]
        total = p["rows"][-1]["measured_s"]
        for r in p["rows"]:
            ratio = r["measured_s"] / r["limit_s"] if r["limit_s"] else None
            L.append(f"| {r['stage']} | {r['work']} | {_f(r['limit_s'], '.2f')} | {r['measured_s']:.2f} | "
                     f"{r['measured_s'] / total:.0%} | {_f(ratio, '.1f')}{'x' if ratio else ''} |")
        L += ["", "FLOPs count matmuls only (2 per multiply-add), from the configs and the shapes that ran; "
                  "attention counts causal pairs in the LLM and whole windows/grids in the vision tower."]
    elif prof:
        L += [f"skipped: {prof[-1]['reason']}"]
    else:
        L += ["(none yet)"]
    L.append("")

    skipped = [r for r in report.records if r.get("skipped")]
    errors = [r for r in report.records if r.get("section") == "error"]
    if skipped or errors:
        L += ["## Skipped or failed", ""]
        L += [f"- {r['section']} {r.get('label', '')}: {r['reason']}" for r in skipped]
        L += [f"- {r['task']}: {r['error']}" for r in errors]
        L.append("")
    done = report.of("done")
    if done:
        L.append(f"Finished at {done[-1]['t_s']:.0f} s of the {setup.get('time_budget_s', 0):.0f} s budget.")
    return "\n".join(L)


# ====================================================================== main
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="bench/configs/qwen2_5_vl_7b.json", help="JSON spec of the architecture")
    ap.add_argument("--family", default="qwen2_5_vl", choices=["qwen2_5_vl", "llava_onevision"])
    ap.add_argument("--minutes", type=float, nargs="+", default=[10, 60, 240], help="video lengths")
    ap.add_argument("--reference-minutes", type=float, default=60,
                    help="the length measured first, compared with native and profiled")
    ap.add_argument("--native-frames", type=int, nargs="+", default=[256, 768], help="equal-frame comparison")
    ap.add_argument("--oom-frames", type=int, nargs="+", default=[1536, 2304, 3600, 5400, 7200],
                    help="native frame counts tried in order until one fails")
    ap.add_argument("--native-cap-s", type=float, default=240.0, help="skip a native attempt estimated longer")
    ap.add_argument("--frame-pixels", type=int, default=448 * 448)
    ap.add_argument("--chunk-frames", type=int, default=16)
    ap.add_argument("--kv-bits", type=int, default=8)
    ap.add_argument("--token-budget", type=int, default=8192)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--time-budget", type=float, default=540.0, help="seconds from process start")
    ap.add_argument("--gen-workers", type=int, default=max(1, min(14, (os.cpu_count() or 2) - 2)))
    ap.add_argument("--matmul-n", type=int, default=8192)
    ap.add_argument("--workdir", default="/tmp/vidqa-bench")
    ap.add_argument("--results", default=None, help="markdown path (default bench/results/gpu_<device>.md)")
    ap.add_argument("--smoke", action="store_true", help="tiny model, tiny video, CPU-sized everything")
    if ap.parse_known_args(argv)[0].smoke:
        ap.set_defaults(**SMOKE)  # flags given explicitly still win
    args = ap.parse_args(argv)
    args.size = (128, 72) if args.smoke else (1280, 720)
    if args.reference_minutes not in args.minutes:
        args.minutes = [args.reference_minutes, *args.minutes]
    return args


def main(argv=None) -> Report:
    args = parse_args(argv)
    budget = Budget(args.time_budget)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    factory = VideoFactory(work, *args.size, scale=4, workers=args.gen_workers)  # forks: before CUDA
    threads = torch.get_num_threads()
    if args.smoke:
        torch.set_num_threads(1)  # the tiny model's ops are microseconds: threads only add waiting
    try:
        return _run(args, budget, work, factory)
    finally:
        factory.close()
        torch.set_num_threads(threads)


def _run(args, budget: Budget, work: Path, factory: VideoFactory) -> Report:
    import platform

    import transformers

    from vidqa.config import MemoryConfig
    from vidqa.vlm.loading import adapter_class

    device = "cuda" if torch.cuda.is_available() else "cpu"
    device_name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    md = [Path(args.results)] if args.results else []
    if not md:
        if args.smoke:
            md = [work / "gpu_smoke.md"]
        else:
            stem = Path(args.config).stem
            suffix = "" if stem == "qwen2_5_vl_7b" else f"_{stem}"
            md = [Path(__file__).resolve().parent / "results" / f"gpu_{device_name.replace(' ', '_')}{suffix}.md"]
    jsonl = []
    if os.environ.get("OUT"):
        out = Path(os.environ["OUT"])
        md.append(out / "gpu.md")
        jsonl.append(out / "gpu.jsonl")
    report = Report(md, jsonl)

    seconds_of = {m: int(round(m * 60)) for m in args.minutes}
    ref_m = args.reference_minutes
    # The reference video and the shorter ones are made while the model is built; longer ones when
    # they are about to be measured (so that a skipped measurement costs no generation).
    early = [m for m in args.minutes if m <= ref_m]
    jobs = {m: factory.submit(seconds_of[m]) for m in sorted(early, key=lambda m: m != ref_m)}

    t0 = time.perf_counter()
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model, processor = build(args.config, args.family, args.frame_pixels, device, dtype)
    cuda_sync()
    build_s = time.perf_counter() - t0
    weights_gib = gpu_gib(peak=False) if device == "cuda" else sum(
        p.numel() * p.element_size() for p in model.parameters()) / 2**30
    tc = model.config.get_text_config()
    name = "bench/" + (Path(args.config).stem if args.config else f"tiny-{args.family}")
    adapter = adapter_class(args.family)(model, processor, name)
    report.add("setup", device=device_name, model=name, dtype=str(dtype).removeprefix("torch."),
               torch=torch.__version__, transformers=transformers.__version__, python=platform.python_version(),
               video_size=f"{args.size[0]}x{args.size[1]}", frame_pixels=args.frame_pixels,
               chunk_frames=args.chunk_frames, window_chunks=MemoryConfig.window_chunks, kv_bits=args.kv_bits,
               token_budget=args.token_budget, new_tokens=args.new_tokens, build_s=build_s, weights_gib=weights_gib,
               params=sum(p.numel() for p in model.parameters()), time_budget_s=args.time_budget,
               cpu_count=os.cpu_count(), gen_workers=factory.workers, llm_layers=tc.num_hidden_layers)

    videos: dict[float, Path] = {}
    gen_rate: list[float] = []  # wall seconds per generated frame

    def finish_video(m: float) -> Path:
        g = factory.finish(jobs[m])
        report.add("video", **g)
        if not g["cached"]:
            gen_rate.append(g["wall_s"] / g["frames"])
        videos[m] = Path(g["path"])
        return videos[m]

    def guarded(task: str, fn, *a, **kw):
        """Runs one measurement; an unexpected failure is reported and the run goes on."""
        try:
            return fn(*a, **kw)
        except Exception as err:  # noqa: BLE001
            report.add("error", task=task, error=f"{type(err).__name__}: {str(err)[:400]}",
                       traceback=traceback.format_exc()[-2000:])
            free_memory()
            return None

    ref_video = finish_video(ref_m)  # without it nothing can be measured: a failure ends the run
    for m in jobs:
        if m != ref_m:
            guarded(f"generate {_label(m)}", finish_video, m)

    # ---- warm-up: kernels, Triton compilation, allocator (not reported)
    guarded("warm-up", vidqa_run, adapter, ref_video, 2 * args.chunk_frames, args, work, weights_gib)

    # ---- 1. reference length
    ref_work: dict = {}

    def measure_vidqa(m: float, reference: bool = False) -> dict | None:
        rec, shapes = vidqa_run(adapter, videos[m], None, args, work, weights_gib)
        if reference:
            ref_work.update(shapes)
        return report.add("vidqa", minutes=m, reference=reference, **rec)

    ref = guarded(f"vidqa {_label(ref_m)}", measure_vidqa, ref_m, True)
    per_frame = ref["ingest_s"] / ref["frames"] if ref else None

    def vidqa_estimate(frames: int) -> float:
        ask = (ref["ttft_first_s"] + 2 * ref["ttft_followup_s"] + 3 * args.new_tokens / max(1.0, ref["decode_tok_s"])
               if ref else 5.0)
        return (per_frame or 0.05) * frames + ask + 2.0

    # ---- 2. native vs vidqa at equal frame counts
    native_points: list[tuple[int, float]] = []
    warmed = False
    for n in args.native_frames:
        est_native = native_estimate(native_points, n)
        if est_native is None:
            est_native = 4 * vidqa_estimate(n)  # no native point yet: generous (vidqa was 1.5x faster before packing)
        est = est_native + vidqa_estimate(n)
        if not budget.fits(est, SAFETY_NATIVE):
            report.skip("native_equal", f"needs ~{est:.0f} s, {budget.left():.0f} s left", frames=n, label=str(n))
            continue

        def compare(n=n):
            nonlocal warmed
            if not warmed:  # first native call: processor and generate paths warmed, not reported
                native_run(model, processor, args.family, ref_video, 8, args.frame_pixels)
                warmed = True
            nat = native_run(model, processor, args.family, ref_video, n, args.frame_pixels)
            ours, _ = vidqa_run(adapter, ref_video, n, args, work, weights_gib)
            if nat["status"] == "ok":
                native_points.append((nat["frames"], nat["total_s"]))
            return report.add("native_equal", frames=n, native=nat, vidqa=ours)

        guarded(f"native vs vidqa {n} frames", compare)

    # ---- 3. the other lengths, longest first
    for m in sorted((m for m in args.minutes if m != ref_m), reverse=True):
        if m in jobs and m not in videos:
            continue  # its generation failed (reported)
        frames = seconds_of[m] * VIDEO_FPS
        gen_est = 0.0 if m in jobs or _cached_video_ok(factory.path(seconds_of[m]), seconds_of[m]) else (
            (statistics.median(gen_rate) if gen_rate else 0.01) * frames + 5.0)
        est = gen_est + vidqa_estimate(frames)
        if not budget.fits(est):
            report.skip("vidqa", f"needs ~{est:.0f} s, {budget.left():.0f} s left", minutes=m, label=_label(m))
            continue
        if m not in jobs:
            jobs[m] = factory.submit(seconds_of[m])
            if guarded(f"generate {_label(m)}", finish_video, m) is None:
                continue
        guarded(f"vidqa {_label(m)}", measure_vidqa, m)
    factory.close()  # no more videos to make

    # ---- 4. native out-of-memory search
    for n in args.oom_frames:
        source = next((videos[m] for m in sorted(videos) if seconds_of[m] * VIDEO_FPS >= n), None)
        if source is None:
            report.skip("native_oom", "no generated video has that many frames", frames=n, label=str(n))
            continue
        est = native_estimate(native_points, n)
        if est is None:
            est = 4 * vidqa_estimate(n)
        if est > args.native_cap_s:
            report.skip("native_oom", f"estimated {est:.0f} s > cap {args.native_cap_s:.0f} s", frames=n, label=str(n))
            break
        if not budget.fits(est + PROFILE_S / SAFETY_NATIVE, SAFETY_NATIVE):
            report.skip("native_oom", f"needs ~{est:.0f} s, {budget.left():.0f} s left", frames=n, label=str(n))
            break
        nat = guarded(f"native {n} frames", native_run, model, processor, args.family, source, n, args.frame_pixels)
        if nat is None:
            break
        report.add("native_oom", **nat)
        if nat["status"] != "ok":
            break
        native_points.append((nat["frames"], nat["total_s"]))

    # ---- 5. profile: device limits measured now, FLOPs of the reference ingest
    if ref is None:
        report.skip("profile", "the reference ingest was not measured")
    elif not budget.fits(PROFILE_S, 1.0):
        report.skip("profile", f"{budget.left():.0f} s left")
    else:
        def profile():
            limits = {"matmul": matmul_tflops(args.matmul_n, 10, device), **copy_bandwidth(1 << 30, 5)}
            w = ingest_work(ref_work, model, args.family)
            rows = profile_table(ref, w, limits)
            llm_tokens = max(1, w["llm"]["tokens"])
            return report.add("profile", minutes=ref_m, frames=ref["frames"], limits=limits, rows=rows,
                              vision_flops=w["vision"], llm_flops=w["llm"],
                              vision_gflop_per_frame=w["vision"]["total"] / ref["frames"] / 1e9,
                              llm_gflop_per_token=w["llm"]["linear"] / llm_tokens / 1e9)

        guarded("profile", profile)
    report.add("done", elapsed_s=budget.elapsed())
    print(markdown(report), flush=True)
    return report


if __name__ == "__main__":
    main()
