"""Sampled frames per second from a long 720p H.264 file: vidqa's readers beside plain decoding.

    python bench/decode.py                      # 1 hour 720p30 (generated once: ~8 min on 2 cores)
    python bench/decode.py --duration 300       # a 5-minute file, for a quick look
    python bench/decode.py --out bench/results/decode.md
    python bench/decode.py --video FILE --sparse 768 --max-pixels 200704 --repeats 3   # any file

The file is generated once and cached (``--cache-dir``, default ``$TMPDIR/vidqa-bench``): H.264
``--preset`` (ultrafast, so generation is bounded), a keyframe every ``--gop`` frames (250, x264's
default), a scrolling textured picture with a moving block, so every frame differs. Each method
runs in its own process (its peak RSS is its own) and reads the whole file:

* ``vidqa pyav`` / ``vidqa decord``: :func:`vidqa.video.iter_chunks` at 1 fps (and, sparse, 64
  frames spread over the whole video), RGB frames (full size, or at most ``--max-pixels``), streamed
  in chunks of 16; ``one decoder`` is vidqa pyav with ``decode_workers=1``, against its default
  parallel decoders.
* ``decode to last sample``: what transformers' PyAV reader does: decode every frame from the start
  up to the last sampled index, keep the sampled ones, convert them to RGB at the end.
* ``sequential decode``: decode every frame (frame threads), convert none: the decoder's ceiling.

Times are wall seconds, reported also as a ratio to the sequential decode of the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np


METHODS = ["sequential", "pyav_1fps", "pyav1_1fps", "decord_1fps", "last_sample_1fps",
           "pyav_sparse", "pyav1_sparse", "decord_sparse", "last_sample_sparse"]
LABELS = {
    "sequential": ("sequential decode, every frame (no RGB)", "all"),
    "pyav_1fps": ("vidqa pyav", "1 fps"),
    "pyav1_1fps": ("vidqa pyav, one decoder (`decode_workers=1`)", "1 fps"),
    "decord_1fps": ("vidqa decord", "1 fps"),
    "last_sample_1fps": ("decode to last sample (transformers-style)", "1 fps"),
    "pyav_sparse": ("vidqa pyav", "sparse"),
    "pyav1_sparse": ("vidqa pyav, one decoder (`decode_workers=1`)", "sparse"),
    "decord_sparse": ("vidqa decord", "sparse"),
    "last_sample_sparse": ("decode to last sample (transformers-style)", "sparse"),
}


def generate(path: Path, duration: float, width: int, height: int, fps: int, gop: int, preset: str) -> float:
    """Writes the test file (atomically); returns the seconds it took."""
    import av

    t0 = time.perf_counter()
    tmp = path.with_suffix(".tmp.mp4")
    out = av.open(str(tmp), "w")
    stream = out.add_stream("libx264", rate=fps)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.options = {"preset": preset, "g": str(gop), "crf": "23"}
    rng = np.random.default_rng(0)
    texture = (rng.integers(0, 64, (height, 2 * width), dtype=np.uint8)
               + np.linspace(16, 160, 2 * width, dtype=np.uint8)[None]).astype(np.uint8)
    yuv = np.full((height * 3 // 2, width), 128, np.uint8)
    block = max(8, height // 8)
    for i in range(int(duration * fps)):
        x = (2 * i) % width
        yuv[:height] = texture[:, x:x + width]
        bx, by = (7 * i) % (width - block), (3 * i) % (height - block)
        yuv[by:by + block, bx:bx + block] = 235
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts = i
        frame.time_base = Fraction(1, fps)
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    out.close()
    tmp.replace(path)
    return time.perf_counter() - t0


def _sampled_indices(info, sparse: int | None) -> np.ndarray:
    from vidqa.video import sample_times

    times = sample_times(info, fps=1.0, max_frames=sparse) if sparse else sample_times(info, fps=1.0)
    return np.unique(np.round(times * info.fps).astype(np.int64).clip(0, info.num_frames - 1))


def run_method(method: str, path: str, sparse: int, max_pixels: int | None = None) -> dict:
    """Runs one method; returns frames returned, decoded-frame count where known, and wall seconds."""
    import av

    from vidqa.video import iter_chunks, open_video

    info = open_video(path)
    t0 = time.perf_counter()
    frames = decoded = 0
    if method == "sequential":
        with av.open(path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for _ in container.decode(stream):
                decoded += 1
        frames = decoded
    elif method.startswith(("pyav", "decord")):
        decoder = method.split("_")[0]
        workers = 1 if decoder == "pyav1" else None
        cap = sparse if method.endswith("sparse") else None
        try:
            for chunk in iter_chunks(path, fps=1.0, max_frames=cap, chunk_frames=16, decoder=decoder.rstrip("1"),
                                     info=info, max_pixels=max_pixels, decode_workers=workers):
                frames += len(chunk.frames)
        except Exception as err:  # decord missing: the row says so
            return {"error": f"{type(err).__name__}: {err}"}
    else:
        # transformers' read_video_pyav: decode from the start, keep sampled frames, convert at the end.
        indices = _sampled_indices(info, sparse if method.endswith("sparse") else None)
        wanted, last = set(indices.tolist()), int(indices[-1])
        kept = []
        with av.open(path) as container:
            for i, frame in enumerate(container.decode(video=0)):
                decoded += 1
                if i > last:
                    break
                if i in wanted:
                    kept.append(frame)
            frames = len(np.stack([f.to_ndarray(format="rgb24") for f in kept]))
    wall = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"frames": frames, "decoded": decoded, "wall": wall, "peak_mb": peak_mb}


def _median_run(runs: list[dict]) -> dict:
    """The run of median wall time (an error if every run failed)."""
    ok = sorted((r for r in runs if "error" not in r), key=lambda r: r["wall"])
    return ok[(len(ok) - 1) // 2] if ok else runs[0]


def table(results: dict, video_s: float) -> str:
    base = results.get("sequential", {}).get("wall")
    lines = ["| method | sampling | frames returned | wall s | frames/s | video s per wall s | "
             "time / sequential decode | peak RSS MB |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for method in METHODS:
        if method not in results:
            continue
        name, sampling = LABELS[method]
        r = results[method]
        if "error" in r:
            lines.append(f"| {name} | {sampling} | not run: {r['error'][:80]} | | | | | |")
            continue
        ratio = f"{r['wall'] / base:.2f}" if base else ""
        lines.append(f"| {name} | {sampling} | {r['frames']} | {r['wall']:.1f} | {r['frames'] / r['wall']:.1f} | "
                     f"{video_s / r['wall']:.0f} | {ratio} | {r['peak_mb']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=3600.0, help="seconds of video (default 1 hour)")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--gop", type=int, default=250, help="keyframe interval in frames")
    parser.add_argument("--preset", default="ultrafast", help="x264 preset of the generated file")
    parser.add_argument("--sparse", type=int, default=64, help="frames of the sparse rows")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    parser.add_argument("--video", help="read this file instead of generating one")
    parser.add_argument("--max-pixels", type=int, default=None, help="vidqa's frames scaled to at most this")
    parser.add_argument("--repeats", type=int, default=1, help="runs per method (alternating); the median")
    parser.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "vidqa-bench"))
    parser.add_argument("--out", help="also write the table (markdown) to this file")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child process: run one method on --file
    parser.add_argument("--file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.one:
        print(json.dumps(run_method(args.one, args.file, args.sparse, args.max_pixels)))
        return 0

    if args.video:
        path = Path(args.video)
        if not path.is_file():
            parser.error(f"--video {path}: no such file")
    else:
        cache = Path(args.cache_dir)
        cache.mkdir(parents=True, exist_ok=True)
        name = f"h264_{args.width}x{args.height}_{args.fps}fps_{args.duration:g}s_g{args.gop}_{args.preset}.mp4"
        path = cache / name
        if not path.exists():
            print(f"generating {path} ...", file=sys.stderr, flush=True)
            took = generate(path, args.duration, args.width, args.height, args.fps, args.gop, args.preset)
            print(f"generated in {took:.0f} s", file=sys.stderr, flush=True)

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for method in methods:
        if method not in METHODS:
            parser.error(f"unknown method {method!r}")
    runs: dict[str, list[dict]] = {m: [] for m in methods}
    for _ in range(max(1, args.repeats)):
        for method in methods:
            cmd = [sys.executable, __file__, "--one", method, "--file", str(path), "--sparse", str(args.sparse)]
            if args.max_pixels:
                cmd += ["--max-pixels", str(args.max_pixels)]
            child = subprocess.run(cmd, capture_output=True, text=True)
            lines = child.stdout.strip().splitlines()
            if child.returncode != 0 or not lines:
                runs[method].append({"error": (child.stderr.strip().splitlines() or ["failed"])[-1]})
            else:
                runs[method].append(json.loads(lines[-1]))
            print(f"{method}: {runs[method][-1]}", file=sys.stderr, flush=True)
    results = {m: _median_run(r) for m, r in runs.items()}

    size_mb = path.stat().st_size / 1e6
    if args.video:
        from vidqa.video import open_video

        info = open_video(path)
        duration = info.duration
        what = f"{path.name}: {duration:g} s of {info.width}x{info.height} {info.codec} at {info.fps:g} fps"
    else:
        duration = args.duration
        what = (f"{args.duration:g} s of {args.width}x{args.height} H.264 at {args.fps} fps, keyframe every "
                f"{args.gop} frames, preset {args.preset}")
    header = (f"{what}, {size_mb:.0f} MB; {os.cpu_count()} CPU cores; sparse = {args.sparse} frames spread "
              f"over the whole video; vidqa's frames at most {args.max_pixels or 'full size'} pixels; "
              f"median of {max(1, args.repeats)} run(s) per method\n")
    text = header + "\n" + table(results, duration) + "\n"
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
