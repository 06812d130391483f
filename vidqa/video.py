"""Streaming video reader: probe, sample by time, decode in bounded chunks.

* :func:`open_video` probes a file and turns every way it can be unusable into one
  :class:`~vidqa.errors.VideoError` line (missing, directory, empty, URL, still image, no video
  stream, nothing decodable, zero duration).
* :func:`sample_times` picks target timestamps: ``fps`` per second (default 1) or exactly
  ``num_frames``, uniformly over the whole video when over ``max_frames``.
* :func:`iter_chunks` decodes with PyAV, seeking to the keyframe before a target only when the
  target is far ahead (dense sampling decodes forward, which is faster), and returns for each target
  the frame whose presentation time is nearest, with that frame's exact timestamp. Frames come out
  upright (rotation metadata applied) and at most ``max_pixels`` pixels. A bounded queue between a
  decoding thread and the caller keeps memory constant whatever the length, and a stalled decoder
  raises instead of hanging.
* decord is an optional backend for H.264 only: it returns shifted frames after seeking in x265 HEVC
  and cannot open AV1, so ``auto`` always uses PyAV.

A file cut short mid-stream yields the frames that decode and then stops (``FrameChunk.truncated``
is set on the last chunk); only a file with no decodable frame at all is an error.
"""

from __future__ import annotations

import math
import os
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vidqa.errors import ConfigError, VideoError

URL_PREFIXES = ("http://", "https://", "rtsp://", "rtmp://", "ftp://", "s3://", "gs://")
IMAGE_FORMATS = {"image2", "png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe", "gif", "tiff_pipe",
                 "image2pipe", "jpegls_pipe", "qoi_pipe", "pgm_pipe", "ppm_pipe"}
# Formats/codecs FFmpeg "decodes" that are not videos (a text file opens as an ANSI art "video").
NON_VIDEO_FORMATS = {"tty", "ansi", "bintext", "xbin", "adf", "idf", "lrc", "srt", "ass", "webvtt"}
NON_VIDEO_CODECS = {"ansi", "bintext", "xbin", "idf"}
# Targets further ahead than this are reached by seeking rather than decoding forward.
SEEK_AHEAD_S = 4.0


@dataclass
class VideoInfo:
    """What :func:`open_video` learnt. ``num_frames`` is estimated when the container lacks it."""

    path: str
    duration: float
    fps: float
    num_frames: int
    width: int
    height: int
    rotation: int
    codec: str
    container: str


@dataclass
class FrameChunk:
    """``frames`` uint8 ``[T, H, W, 3]`` upright RGB; ``times`` float64 ``[T]`` exact presentation
    times (s); ``indices`` int64 ``[T]`` sample indices over the whole video."""

    frames: np.ndarray
    times: np.ndarray
    indices: np.ndarray
    truncated: bool = False


def _av():
    import av

    return av


def _check_path(path) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise VideoError(f"expected a video file path, got {type(path).__name__}")
    text = str(path)
    if text.lower().startswith(URL_PREFIXES):
        raise VideoError(f"{text}: URLs are not supported; download the video and pass the file")
    p = Path(text).expanduser()
    if not p.exists():
        raise VideoError(f"{p}: no such file")
    if p.is_dir():
        raise VideoError(f"{p}: is a directory, not a video file")
    if not os.access(p, os.R_OK):
        raise VideoError(f"{p}: permission denied")
    if p.stat().st_size == 0:
        raise VideoError(f"{p}: empty file (0 bytes)")
    return p


def _open_container(p: Path):
    av = _av()
    try:
        return av.open(str(p), metadata_errors="ignore")
    except (av.FFmpegError, ValueError, OSError, UnicodeDecodeError) as err:
        raise VideoError(f"{p}: not a readable video ({_reason(err)})") from err


def _reason(err: Exception) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text[:120]


def _rotation(frame) -> int:
    """Clockwise rotation (degrees, multiple of 90) needed to show ``frame`` upright."""
    rot = getattr(frame, "rotation", 0) or 0
    return int(round(-rot / 90.0)) % 4 * 90


def open_video(path) -> VideoInfo:
    """Probes ``path``; raises :class:`VideoError` with a one-line reason if it is unusable."""
    p = _check_path(path)
    container = _open_container(p)
    av = _av()
    try:
        fmt = container.format.name if container.format else ""
        if not container.streams.video:
            kind = "audio only" if container.streams.audio else "no streams"
            raise VideoError(f"{p}: has no video stream ({kind})")
        stream = container.streams.video[0]
        if set(fmt.split(",")) & IMAGE_FORMATS:
            raise VideoError(f"{p}: is a still image, not a video")
        codec = stream.codec_context.name if stream.codec_context else "unknown"
        if set(fmt.split(",")) & NON_VIDEO_FORMATS or codec in NON_VIDEO_CODECS:
            raise VideoError(f"{p}: not a readable video (looks like text, format {fmt!r})")
        fps = float(stream.average_rate or stream.guessed_rate or 0) or 0.0
        duration = 0.0
        if stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif container.duration:
            duration = container.duration / 1_000_000
        first = None
        try:
            for frame in container.decode(stream):
                first = frame
                break
        except (av.FFmpegError, ValueError) as err:
            raise VideoError(f"{p}: corrupt or truncated video ({_reason(err)})") from err
        if first is None:
            raise VideoError(f"{p}: no decodable video frames (corrupt or truncated)")
        frames = stream.frames or (int(round(duration * fps)) if duration and fps else 0)
        if duration <= 0 and frames and fps:
            duration = frames / fps
        if duration <= 0 and frames <= 1:
            # One frame, or a container with no timing: a still frame of one sampling step.
            duration, frames = (1.0 / fps if fps else 1.0), 1
        if not fps:
            fps = frames / duration if duration else 1.0
        rotation = _rotation(first)
        width, height = first.width, first.height
        if rotation in (90, 270):
            width, height = height, width
        return VideoInfo(str(p), float(duration), float(fps), int(max(frames, 1)), int(width),
                         int(height), rotation, codec, fmt)
    finally:
        container.close()


def sample_times(info: VideoInfo, fps: float = 1.0, num_frames: int | None = None,
                 max_frames: int | None = None) -> np.ndarray:
    """Target timestamps (s), ascending, inside ``[0, duration)``.

    ``num_frames`` wins over ``fps``; sampling never exceeds the video's own frame rate; above
    ``max_frames`` the targets spread uniformly over the whole video.
    """
    duration = max(info.duration, 1e-6)
    rate = min(fps, info.fps) if info.fps else fps
    if num_frames is not None:
        count, uniform = num_frames, True
    else:
        count, uniform = max(1, int(math.floor(duration * rate + 1e-6))), False
    cap = min(max_frames or count, max(info.num_frames, 1))
    if count > cap:
        count, uniform = cap, True
    if uniform:
        return np.arange(count, dtype=np.float64) * (duration / count)
    return np.arange(count, dtype=np.float64) / rate


def target_size(width: int, height: int, max_pixels: int | None) -> tuple[int, int]:
    """(w, h) keeping the aspect ratio with ``w * h <= max_pixels`` (even sizes for the scaler)."""
    if not max_pixels or width * height <= max_pixels:
        return width, height
    scale = math.sqrt(max_pixels / (width * height))
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


class _PyAVDecoder:
    """Yields (time, rgb frame) for each target: the decoded frame nearest to it."""

    def __init__(self, path: Path, info: VideoInfo, max_pixels: int | None):
        self.path, self.info, self.max_pixels = path, info, max_pixels
        self.truncated = False
        self.end_slack = 2.0 / info.fps + 0.1 if info.fps else 1.0

    def _convert(self, frame) -> np.ndarray:
        rot = _rotation(frame)
        w, h = frame.width, frame.height
        out_w, out_h = target_size(*((h, w) if rot in (90, 270) else (w, h)), self.max_pixels)
        if rot in (90, 270):
            out_w, out_h = out_h, out_w
        rgb = frame.to_ndarray(format="rgb24", width=out_w, height=out_h)
        if rot:
            rgb = np.rot90(rgb, k=-rot // 90)  # rot90 turns counter-clockwise for positive k
        return np.ascontiguousarray(rgb)

    def frames_at(self, targets: np.ndarray) -> Iterator[tuple[float, np.ndarray]]:
        av = _av()
        container = _open_container(self.path)
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            tb = float(stream.time_base)
            start = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
            decoded = self._decode(container, stream)
            prev = None  # (time, frame) decoded last
            for target in targets:
                want = start + float(target)
                if prev is not None and want - prev[0] > SEEK_AHEAD_S:
                    container.seek(int(want / tb), stream=stream, backward=True, any_frame=False)
                    decoded = self._decode(container, stream)
                    prev = None
                best = None
                while True:
                    if prev is not None and prev[0] >= want - 1e-6:
                        best = prev
                        break
                    nxt = next(decoded, None)
                    if nxt is None:
                        # The stream ended: the last frame still stands for a target just after it,
                        # not for targets far beyond (a file cut short).
                        best = prev if prev is not None and want - prev[0] <= self.end_slack else None
                        break
                    if prev is not None and nxt[0] > want:
                        best = prev if want - prev[0] <= nxt[0] - want else nxt
                        prev = nxt
                        break
                    prev = nxt
                if best is None:
                    self.truncated = True
                    return
                yield best[0] - start, self._convert(best[1])
        except av.FFmpegError as err:
            raise VideoError(f"{self.path}: decoding failed ({_reason(err)})") from err
        finally:
            container.close()

    def _decode(self, container, stream):
        av = _av()
        try:
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                yield float(frame.pts * stream.time_base), frame
        except (av.InvalidDataError, av.EOFError, av.FFmpegError):
            # Damaged or cut-off data: keep what decoded so far.
            self.truncated = True


class _DecordDecoder:
    """decord backend (H.264 only); frames by index nearest to each target time."""

    def __init__(self, path: Path, info: VideoInfo, max_pixels: int | None):
        try:
            import decord
        except ImportError as err:
            raise ConfigError("the decord decoder is not installed: pip install 'vidqa[decord]'") from err
        self.decord, self.path, self.info, self.max_pixels = decord, path, info, max_pixels
        self.truncated = False

    def frames_at(self, targets: np.ndarray) -> Iterator[tuple[float, np.ndarray]]:
        w, h = target_size(self.info.width, self.info.height, self.max_pixels)
        reader = self.decord.VideoReader(str(self.path), width=w, height=h)
        times = reader.get_frame_timestamp(range(len(reader)))[:, 0]
        for target in targets:
            i = int(np.clip(np.searchsorted(times, target), 0, len(reader) - 1))
            if i > 0 and abs(times[i - 1] - target) <= abs(times[i] - target):
                i -= 1
            yield float(times[i]), reader[i].asnumpy()


def choose_decoder(info: VideoInfo, decoder: str):
    if decoder not in ("auto", "pyav", "decord"):
        raise ConfigError(f"unknown decoder {decoder!r}; choose auto, pyav or decord")
    if decoder == "decord":
        if info.codec not in ("h264",):
            return _PyAVDecoder  # decord mis-seeks HEVC and cannot open AV1/VP9 reliably
        return _DecordDecoder
    return _PyAVDecoder


def iter_chunks(path, *, fps: float = 1.0, num_frames: int | None = None, max_frames: int | None = None,
                chunk_frames: int = 16, max_pixels: int | None = None, decoder: str = "auto",
                timeout_s: float = 60.0, info: VideoInfo | None = None,
                times: np.ndarray | None = None) -> Iterator[FrameChunk]:
    """Decodes the sampled frames of ``path`` in chunks of ``chunk_frames`` (see module docstring).

    ``times`` (seconds) replaces the sampling grid with explicit targets (thumbnails, evidence).
    Raises :class:`VideoError` if nothing decodes or the decoder stalls for ``timeout_s`` seconds.
    """
    if chunk_frames < 1:
        raise ConfigError("chunk_frames must be >= 1")
    info = info or open_video(path)
    targets = np.sort(np.asarray(times, dtype=np.float64)) if times is not None else \
        sample_times(info, fps=fps, num_frames=num_frames, max_frames=max_frames)
    backend = choose_decoder(info, decoder)(Path(info.path), info, max_pixels)
    results: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()

    def produce():
        try:
            frames, times, count = [], [], 0
            for t, rgb in backend.frames_at(targets):
                if stop.is_set():
                    return
                frames.append(rgb)
                times.append(t)
                if len(frames) == chunk_frames:
                    _put(results, stop, ("chunk", frames, times, count))
                    count += len(frames)
                    frames, times = [], []
            if frames:
                _put(results, stop, ("chunk", frames, times, count))
            _put(results, stop, ("end", backend.truncated))
        except BaseException as err:  # handed to the consumer, which re-raises it
            _put(results, stop, ("error", err))

    worker = threading.Thread(target=produce, name="vidqa-decode", daemon=True)
    worker.start()
    emitted = 0
    pending = None
    try:
        while True:
            try:
                item = results.get(timeout=timeout_s)
            except queue.Empty:
                raise VideoError(f"{info.path}: decoding stalled for {timeout_s:.0f} s; the file may be damaged") from None
            if item[0] == "error":
                err = item[1]
                if isinstance(err, (VideoError, ConfigError)):
                    raise err
                raise VideoError(f"{info.path}: decoding failed ({_reason(err)})") from err
            if item[0] == "end":
                if pending is not None:
                    pending.truncated = bool(item[1])
                    yield pending
                    pending = None
                break
            _, frames, times, first = item
            if pending is not None:
                yield pending
            pending = FrameChunk(np.stack(frames), np.asarray(times, dtype=np.float64),
                                 np.arange(first, first + len(frames), dtype=np.int64))
            emitted += len(frames)
        if emitted == 0:
            raise VideoError(f"{info.path}: no decodable video frames (corrupt or truncated)")
    finally:
        stop.set()


def _put(q: queue.Queue, stop: threading.Event, item) -> None:
    """Blocking put that gives up once the consumer has gone away."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def read_frames(path, **kwargs) -> FrameChunk:
    """All sampled frames of a short clip as one chunk (same arguments as :func:`iter_chunks`)."""
    chunks = list(iter_chunks(path, **{"chunk_frames": 1 << 30, **kwargs}))
    return FrameChunk(np.concatenate([c.frames for c in chunks]), np.concatenate([c.times for c in chunks]),
                      np.concatenate([c.indices for c in chunks]), chunks[-1].truncated)
