"""Streaming video reader: probe, sample by time, decode in bounded chunks.

* :func:`open_video` probes a file and turns every way it can be unusable into one
  :class:`~vidqa.errors.VideoError` line (URL, missing, directory, not a regular file, permission,
  empty, not a video, text, still image, no video stream, damaged or truncated, zero duration).
* :func:`sample_times` picks target timestamps: ``fps`` per second (default 1) or exactly
  ``num_frames``, uniformly over the whole video when over ``max_frames``.
* :func:`iter_chunks` returns, for each target, the decoded frame whose presentation time is
  nearest, with that frame's exact timestamp, in chunks of ``chunk_frames``: uint8
  ``[T, H, W, 3]`` RGB, upright (display matrix: rotation and mirroring), square pixels, at most
  ``max_pixels`` pixels. Decoding runs in a thread at most three chunks ahead, so memory does not
  grow with the video's length, and a decoder that makes no progress for ``timeout_s`` raises
  ``VideoError("... decoding stalled ...")`` instead of hanging. A long read is decoded by
  ``decode_workers`` PyAV decoders in parallel threads (default ``min(4, CPU cores)``; 1 turns it
  off), each taking blocks of consecutive targets, with the same frames and times as one decoder:
  sparse sampling (targets at least half a keyframe interval apart) in blocks of 4 targets, at most
  ``8 * decode_workers + 4`` more frames held; dense sampling (1 fps of a typical video) in blocks of
  about 8 keyframe intervals, at most 128 MiB of frames held (see
  :mod:`vidqa.videoio.pyav_backend`).
* :func:`read_frames` is the same for short clips, as one chunk.

Backends (``decoder=``): ``"pyav"`` (and ``"auto"``) seeks to the keyframe before a target only
when it is further ahead than a keyframe interval, and otherwise decodes forward (see
:mod:`vidqa.videoio.pyav_backend`); it is correct on H.264, HEVC, VP9, AV1 and MJPEG. ``"decord"``
is optional and used for H.264 only: it returns shifted frames after seeking in HEVC and cannot
open AV1, so other codecs go to PyAV whatever is asked.

Truncated or damaged files: damaged packets are skipped; a file cut short yields the frames that
decode and then stops, with ``FrameChunk.truncated`` set on the last chunk and a warning logged on
the ``vidqa.video`` logger. Only a file with no decodable frame at all is an error. Nothing but
:class:`~vidqa.errors.VidqaError` subclasses leaves this module (fuzz-tested).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from vidqa.errors import ConfigError, VideoError
from vidqa.videoio.decord_backend import DecordDecoder, import_decord
from vidqa.videoio.probe import VideoInfo, open_video
from vidqa.videoio.pyav_backend import PyAVDecoder
from vidqa.videoio.sampling import check_max_pixels, check_sampling, sample_times, target_size
from vidqa.videoio.watchdog import stream_chunks

__all__ = ["FrameChunk", "VideoInfo", "open_video", "sample_times", "target_size", "iter_chunks",
           "read_frames", "choose_decoder", "DECODERS"]

log = logging.getLogger("vidqa.video")

DECODERS = ("auto", "pyav", "decord")
# Codecs decord decodes correctly after seeking.
DECORD_CODECS = {"h264"}


@dataclass
class FrameChunk:
    """``frames`` uint8 ``[T, H, W, 3]`` upright RGB; ``times`` float64 ``[T]`` the returned frames'
    presentation times (s from the stream's start); ``indices`` int64 ``[T]`` sample indices
    ``0..K-1`` over the whole video. ``truncated`` is set on the last chunk of a file that ended
    before its last target (the file is cut short or damaged)."""

    frames: np.ndarray
    times: np.ndarray
    indices: np.ndarray
    truncated: bool = False


def choose_decoder(info: VideoInfo, decoder: str = "auto"):
    """The backend class for ``decoder`` on this video (decord only for H.264, else PyAV)."""
    if decoder not in DECODERS:
        raise ConfigError(f"unknown decoder {decoder!r}; choose one of {', '.join(DECODERS)}")
    if decoder == "decord":
        import_decord()  # asked for by name: say so if it is missing, whatever the codec
        if info.codec in DECORD_CODECS:
            return DecordDecoder
        log.info("%s: %s is decoded with PyAV (decord is used for H.264 only)", info.path, info.codec)
    return PyAVDecoder


def _positive_int(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= 1


def _check_args(chunk_frames, timeout_s, decode_workers) -> None:
    if not _positive_int(chunk_frames):
        raise ConfigError(f"chunk_frames must be a positive integer, got {chunk_frames!r}")
    if not isinstance(timeout_s, (int, float)) or not math.isfinite(timeout_s) or timeout_s <= 0:
        raise ConfigError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
    if decode_workers is not None and not _positive_int(decode_workers):
        raise ConfigError(f"decode_workers must be a positive integer or None, got {decode_workers!r}")


def _explicit_targets(times, info: VideoInfo) -> np.ndarray:
    targets = np.asarray(times, dtype=np.float64).reshape(-1)
    if targets.size == 0 or not np.all(np.isfinite(targets)):
        raise ConfigError("times must be a non-empty list of finite seconds")
    # A time past the end means the last frame, not a truncated file.
    return np.sort(np.clip(targets, 0.0, max(info.duration - 1e-3, 0.0)))


def iter_chunks(path, *, fps: float = 1.0, num_frames: int | None = None, max_frames: int | None = None,
                chunk_frames: int = 16, max_pixels: int | None = None, decoder: str = "auto",
                timeout_s: float = 60.0, info: VideoInfo | None = None,
                times=None, decode_workers: int | None = None) -> Iterator[FrameChunk]:
    """Decodes the sampled frames of ``path`` in chunks of at most ``chunk_frames`` (see module doc).

    ``info`` skips probing again; ``times`` (seconds) replaces the sampling grid with explicit
    targets (thumbnails, evidence frames), sorted. ``decode_workers``: PyAV decoders for sparse
    sampling (None: ``min(4, CPU cores)``). Raises :class:`ConfigError` for bad arguments,
    :class:`VideoError` if the file is unusable, nothing decodes, or decoding stalls for
    ``timeout_s`` seconds.
    """
    _check_args(chunk_frames, timeout_s, decode_workers)
    check_max_pixels(max_pixels)
    if times is None:
        check_sampling(fps, num_frames, max_frames)
    info = info or open_video(path, timeout_s=timeout_s)
    if times is not None:
        targets = _explicit_targets(times, info)
    else:
        targets = sample_times(info, fps=fps, num_frames=num_frames, max_frames=max_frames)
    backend = choose_decoder(info, decoder)(info, max_pixels, workers=decode_workers)
    emitted = 0
    for frames, frame_times, is_last in stream_chunks(lambda beat: backend.frames_at(targets, beat),
                                                      chunk_frames=int(chunk_frames), timeout_s=timeout_s,
                                                      label=info.path):
        truncated = bool(is_last and backend.truncated)
        if truncated:
            log.warning("%s: the video ends early (cut short or damaged); returning %d of %d frames",
                        info.path, emitted + len(frame_times), len(targets))
        yield FrameChunk(frames, frame_times, np.arange(emitted, emitted + len(frame_times), dtype=np.int64),
                         truncated)
        emitted += len(frame_times)
    report = getattr(backend, "report", None)
    if report is not None and report.bad_packets:
        log.warning("%s: skipped %d damaged packets (%s)", info.path, report.bad_packets, report.last_error)
    if emitted == 0:
        raise VideoError(f"{info.path}: no decodable video frames; the file is damaged or truncated")


def read_frames(path, **kwargs) -> FrameChunk:
    """All sampled frames of a short clip as one chunk (same arguments as :func:`iter_chunks`)."""
    chunks = list(iter_chunks(path, **{"chunk_frames": 1 << 30, **kwargs}))
    if len(chunks) == 1:
        return chunks[0]
    return FrameChunk(np.concatenate([c.frames for c in chunks]), np.concatenate([c.times for c in chunks]),
                      np.concatenate([c.indices for c in chunks]), chunks[-1].truncated)
