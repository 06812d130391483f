"""Which instants to sample, and at what size.

``sample_times`` returns target timestamps in seconds from the start of the video stream:

* by rate: ``0, 1/fps, 2/fps, ...`` below the duration, with ``fps`` never above the video's own
  frame rate (sampling faster would only repeat frames);
* by count: exactly ``num_frames`` instants ``i * duration / num_frames`` (the fps grid's shape,
  so a count of ``duration * fps`` gives the same instants as that rate);
* capped: above ``max_frames`` (or above the number of frames the video has) the targets become
  uniform over the whole video, never a prefix of it.

The decoder then returns, for each target, the frame whose presentation time is nearest.
"""

from __future__ import annotations

import math

import numpy as np

from vidqa.errors import ConfigError

# 10 hours at 30 fps is ~1M; more than this many targets is a mistake, not a video.
MAX_SAMPLES = 10_000_000


def check_sampling(fps: float, num_frames: int | None, max_frames: int | None) -> None:
    """Raises :class:`ConfigError` for a rate, count or cap that cannot be sampled."""
    if num_frames is None and not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ConfigError(f"fps must be a positive number, got {fps!r}")
    for name, value in (("num_frames", num_frames), ("max_frames", max_frames)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))
                                  or value < 1):
            raise ConfigError(f"{name} must be a positive integer or None, got {value!r}")


def sample_times(info, fps: float = 1.0, num_frames: int | None = None,
                 max_frames: int | None = None) -> np.ndarray:
    """Target timestamps (s) float64 ``[K]``, ascending, in ``[0, info.duration)``; ``K >= 1``.

    ``info`` needs ``duration``, ``fps`` and ``num_frames`` (a :class:`~vidqa.video.VideoInfo`).
    ``num_frames`` wins over ``fps``; ``max_frames`` caps either.
    """
    check_sampling(fps, num_frames, max_frames)
    duration = max(float(info.duration), 1e-6)
    video_frames = max(int(info.num_frames), 1)
    if num_frames is not None:
        count, rate = int(num_frames), None
    else:
        rate = min(float(fps), float(info.fps)) if info.fps and info.fps > 0 else float(fps)
        count = max(1, int(math.floor(duration * rate + 1e-6)))
    cap = min(int(max_frames) if max_frames is not None else count, video_frames)
    if count > cap:
        count, rate = cap, None
    if count > MAX_SAMPLES:
        raise ConfigError(f"sampling would take {count} frames; set max_frames or a lower fps")
    if rate is None:
        return np.arange(count, dtype=np.float64) * (duration / count)
    return np.arange(count, dtype=np.float64) / rate


def target_size(width: int, height: int, max_pixels: int | None) -> tuple[int, int]:
    """``(w, h)`` with the aspect ratio of ``width x height`` and ``w * h <= max_pixels``.

    Never enlarges; ``None`` keeps the size.
    """
    if max_pixels is None or width * height <= max_pixels:
        return int(width), int(height)
    scale = math.sqrt(max_pixels / (width * height))
    w, h = max(1, int(width * scale)), max(1, int(height * scale))
    # A clamp to one pixel on a very thin frame can overshoot; take it from the other side.
    if w * h > max_pixels:
        w, h = (max(1, max_pixels // h), h) if w > h else (w, max(1, max_pixels // w))
    return w, h


def check_max_pixels(max_pixels: int | None) -> None:
    if max_pixels is not None and (isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer))
                                   or max_pixels < 1):
        raise ConfigError(f"max_pixels must be a positive integer or None, got {max_pixels!r}")
