"""Synthetic 1-fps H.264 videos for the GPU benchmark, rendered and encoded in parallel.

A video is cut into segments of whole GOPs; pool workers render + encode whole segments, each into
its own file, and the parent joins them in order without re-encoding. Frame ``i`` is a pure
function of the timeline and ``i``, so the joined file is the video a single encoder would have
made. Finished videos are cached by path.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import time
from functools import lru_cache
from pathlib import Path

GOP = 10  # keyframe interval of the generated videos (frames); segments are whole GOPs
VIDEO_FPS = 1  # generated videos hold one frame per second, the rate vidqa samples at


@lru_cache(maxsize=4)
def _timeline(seed: int, seconds: int):
    # A worker renders several segments of the same video: the timeline is made once per worker.
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


def cached_video_ok(path: Path, seconds: int) -> bool:
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
        job = {"seconds": seconds, "path": path, "t0": time.perf_counter(), "cached": cached_video_ok(path, seconds)}
        if job["cached"]:
            return job
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        frames = seconds * VIDEO_FPS
        # About two segments per worker, whole GOPs each, so that the workers share a video evenly.
        seg = max(GOP, math.ceil(frames / (2 * self.workers) / GOP) * GOP)
        job["segments"] = [(str(self.parts_dir / f"{path.stem}_{k:05d}.mp4"), seconds, a, min(a + seg, frames),
                            self.width, self.height, self.scale, self.seed)
                           for k, a in enumerate(range(0, frames, seg))]
        job["async"] = self.pool.map_async(render_segment, job["segments"]) if self.pool else None
        return job

    def finish(self, job: dict) -> dict:
        """Waits for a submitted video, joins its segments; returns its generation record."""
        path, seconds = job["path"], job["seconds"]
        join_s = worker_s = 0.0
        if not job["cached"]:
            segments = job["segments"]
            results = job["async"].get() if job["async"] is not None else [render_segment(s) for s in segments]
            parts = [s[0] for s in segments]
            t_join = time.perf_counter()
            frames = join_segments(parts, path)
            join_s = time.perf_counter() - t_join
            for p in parts:
                os.remove(p)
            if frames != seconds * VIDEO_FPS:
                raise RuntimeError(f"{path}: joined {frames} frames, expected {seconds * VIDEO_FPS}")
            worker_s = sum(r[2] for r in results)
        return {"minutes": seconds / 60, "seconds": seconds, "path": str(path), "cached": job["cached"],
                "frames": seconds * VIDEO_FPS, "width": self.width, "height": self.height,
                "mib": path.stat().st_size / 2**20, "wall_s": time.perf_counter() - job["t0"],
                "worker_s": worker_s, "join_s": join_s, "workers": self.workers}

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None
