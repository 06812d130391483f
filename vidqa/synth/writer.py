"""``write_video``: a timeline encoded to an H.264 MP4 through PyAV, one frame at a time.

Frame ``i`` shows ``render_frame(timeline, i / fps)`` with presentation time ``i / fps``, so decoding
frame ``i`` and rendering time ``i / fps`` agree up to compression. Memory stays flat with length:
one frame is rendered, handed to the encoder and dropped before the next (x264's lookahead is the
only buffer, and it is bounded by its own settings, not by the video's length).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from vidqa.errors import ConfigError
from vidqa.synth.render import render_frame
from vidqa.synth.world import Timeline


def frame_count(timeline: Timeline, fps: float) -> int:
    return int(np.floor(timeline.duration * fps + 1e-6))


def write_video(timeline: Timeline, path: str | Path, fps: float = 1.0, width: int = 448, height: int = 252,
                crf: int = 28, preset: str = "veryfast", progress=None) -> Path:
    """Encodes the whole timeline to ``path``; ``progress(done, total)`` is called after each frame."""
    import av

    if not fps > 0 or fps > 120:
        raise ConfigError(f"fps must be in (0, 120], got {fps!r}")
    if width < 16 or height < 16 or width % 2 or height % 2:
        raise ConfigError(f"video size must be even and at least 16x16 (H.264 4:2:0), got {width}x{height}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(1000)
    total = frame_count(timeline, fps)
    # Written under a temporary name so that an interrupted run never leaves a plausible-looking file.
    partial = path.with_name(path.name + ".partial")
    try:
        with av.open(str(partial), "w", format="mp4") as out:
            stream = out.add_stream("libx264", rate=rate)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            # A keyframe every ~10 s keeps seeking cheap for readers of long videos.
            stream.options = {"crf": str(crf), "preset": preset, "g": str(max(1, int(round(10 * fps))))}
            for i in range(total):
                frame = av.VideoFrame.from_ndarray(render_frame(timeline, i / fps, width, height), format="rgb24")
                frame.pts = i
                out.mux(stream.encode(frame))
                if progress is not None:
                    progress(i + 1, total)
            out.mux(stream.encode())
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return path
