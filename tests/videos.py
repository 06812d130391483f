"""Test videos generated with PyAV: each frame carries its own number as a barcode.

The top strip of every frame is 12 blocks, black or white, encoding the frame number in binary,
so a test can read back exactly which frame a reader returned without OCR.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

BITS = 12


def barcode_frame(n: int, width: int = 96, height: int = 64, rng=None) -> np.ndarray:
    img = np.full((height, width, 3), 96, np.uint8)
    if rng is not None:
        img[height // 3:] = rng.integers(0, 255, (height - height // 3, width, 3), dtype=np.uint8)
    bw = width // BITS
    for b in range(BITS):
        if (n >> b) & 1:
            img[: height // 3, b * bw:(b + 1) * bw] = 255
        else:
            img[: height // 3, b * bw:(b + 1) * bw] = 0
    return img


def read_barcode(img: np.ndarray) -> int:
    height, width = img.shape[:2]
    bw = width / BITS
    strip = img[: max(1, height // 3 - 2)].mean(axis=(0, 2))
    value = 0
    for b in range(BITS):
        seg = strip[int(b * bw + bw * 0.25): int(b * bw + bw * 0.75)]
        if seg.mean() > 128:
            value |= 1 << b
    return value


def make_video(path: Path, n_frames: int, fps: float = 10.0, codec: str = "libx264",
               width: int = 96, height: int = 64, times: list[float] | None = None,
               rotate: int = 0, container: str | None = None, gop: int = 12) -> Path:
    """Writes ``n_frames`` barcoded frames; ``times`` (s) gives a variable frame rate."""
    path = Path(path)
    out = av.open(str(path), "w", format=container)
    rate = Fraction(fps).limit_denominator(1000)
    stream = out.add_stream(codec, rate=rate)
    stream.width, stream.height = width, height
    stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
    if codec in ("libx264", "libx265"):
        stream.options = {"g": str(gop), "preset": "ultrafast"} if codec == "libx264" else {
            "x265-params": f"keyint={gop}:log-level=error", "preset": "ultrafast"}
    elif codec == "libvpx-vp9":
        stream.options = {"g": str(gop), "deadline": "realtime", "cpu-used": "8"}
    elif codec == "libsvtav1":
        stream.options = {"g": str(gop), "preset": "12"}
    if times is not None:
        stream.time_base = Fraction(1, 1000)
    if rotate:
        stream.set_display_rotation(rotate)  # display-matrix side data, as phones write it
    for i in range(n_frames):
        frame = av.VideoFrame.from_ndarray(barcode_frame(i, width, height), format="rgb24")
        if times is not None:
            frame.pts = int(round(times[i] * 1000))
            frame.time_base = Fraction(1, 1000)
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    out.close()
    return path
