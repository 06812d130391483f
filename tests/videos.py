"""Test videos generated with PyAV: each frame carries its own number as a barcode.

The top third of every frame is 12 blocks, black or white, encoding the frame number in binary
(least significant bit on the left), so a test reads back exactly which frame a reader returned,
and whether it came out mirrored or turned, without OCR. Below the strip the frame is grey with a
white square in the bottom-right corner.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

BITS = 12
os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its banner to stderr unless told errors only


def barcode_frame(n: int, width: int = 96, height: int = 64, rng=None) -> np.ndarray:
    """uint8 ``[height, width, 3]`` showing ``n`` as a barcode across its top third."""
    img = np.full((height, width, 3), 96, np.uint8)
    if rng is not None:
        img[height // 3:] = rng.integers(0, 255, (height - height // 3, width, 3), dtype=np.uint8)
    img[height - height // 4:, width - width // 4:] = 255
    edges = [b * width // BITS for b in range(BITS + 1)]
    for b in range(BITS):
        img[: height // 3, edges[b]:edges[b + 1]] = 255 if (n >> b) & 1 else 0
    return img


def read_barcode(img: np.ndarray) -> int:
    """The number :func:`barcode_frame` drew into ``img`` (any size it was scaled to)."""
    height, width = img.shape[:2]
    bw = width / BITS
    strip = img[: max(1, height // 3 - 2)].mean(axis=(0, 2))
    value = 0
    for b in range(BITS):
        seg = strip[int(b * bw + bw * 0.25): max(int(b * bw + bw * 0.75), int(b * bw + bw * 0.25) + 1)]
        if seg.mean() > 128:
            value |= 1 << b
    return value


def _encoder_options(codec: str, gop: int, realistic: bool) -> dict:
    """Fast settings; ``realistic`` turns on what makes seeking hard (B-frames, open GOPs, alt-refs)."""
    if codec == "libx264":
        return {"g": str(gop), "preset": "veryfast", "bf": "3"} if realistic else \
            {"g": str(gop), "preset": "ultrafast"}
    if codec == "libx265":
        params = f"keyint={gop}:min-keyint={gop}:log-level=error"
        if realistic:
            params += ":bframes=4:open-gop=1:scenecut=0"
        return {"x265-params": params, "preset": "fast" if realistic else "ultrafast"}
    if codec == "libvpx-vp9":
        if realistic:
            return {"g": str(gop), "deadline": "good", "cpu-used": "8", "lag-in-frames": "16",
                    "auto-alt-ref": "1"}
        return {"g": str(gop), "deadline": "realtime", "cpu-used": "8"}
    if codec == "libsvtav1":
        return {"g": str(gop), "preset": "12"}
    if codec == "libaom-av1":
        return {"g": str(gop), "cpu-used": "8", "usage": "realtime"}
    return {}


def make_video(path: Path, n_frames: int, fps: float = 10.0, codec: str = "libx264",
               width: int = 96, height: int = 64, times: list[float] | None = None,
               rotate: int = 0, container: str | None = None, gop: int = 12, *,
               hflip: bool = False, display_matrix: list[int] | None = None, draw=None,
               realistic: bool = False, container_options: dict | None = None,
               sample_aspect_ratio: Fraction | None = None) -> Path:
    """Writes ``n_frames`` frames ``draw(i)`` (default: barcoded) of ``width x height``.

    ``times`` (s) gives a variable frame rate; ``rotate``/``hflip`` store a display matrix with
    PyAV's documented meaning (turn counter-clockwise by ``rotate``, then mirror left-right);
    ``display_matrix`` stores a raw 9-integer matrix instead.
    """
    path = Path(path)
    out = av.open(str(path), "w", format=container, options=container_options or {})
    rate = Fraction(fps).limit_denominator(1000)
    stream = out.add_stream(codec, rate=rate)
    stream.width, stream.height = width, height
    stream.pix_fmt = {"mjpeg": "yuvj420p", "gif": "rgb8"}.get(codec, "yuv420p")
    stream.options = _encoder_options(codec, gop, realistic)
    if sample_aspect_ratio is not None:
        stream.codec_context.sample_aspect_ratio = sample_aspect_ratio
    if times is not None:
        stream.time_base = Fraction(1, 1000)
    if display_matrix is not None:
        stream.set_display_matrix(display_matrix)
    elif rotate or hflip:
        stream.set_display_rotation(rotate, hflip=hflip)
    for i in range(n_frames):
        image = draw(i) if draw is not None else barcode_frame(i, width, height)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        if times is not None:
            frame.pts = int(round(times[i] * 1000))
            frame.time_base = Fraction(1, 1000)
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    out.close()
    return path


def write_audio(path: Path, seconds: float = 1.0, cover_art: bool = False) -> Path:
    """An AAC audio file (optionally with an attached cover picture, as music files have)."""
    out = av.open(str(path), "w", format="mp4")
    audio = out.add_stream("aac", rate=16000)
    if cover_art:
        cover = out.add_stream("mjpeg", rate=1)
        cover.width, cover.height, cover.pix_fmt = 32, 32, "yuvj420p"
        cover.disposition = av.stream.Disposition.attached_pic
        for packet in cover.encode(av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")):
            out.mux(packet)
        for packet in cover.encode():
            out.mux(packet)
    for i in range(int(seconds * 16000 / 1024)):
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 16000, i * 1024
        for packet in audio.encode(frame):
            out.mux(packet)
    for packet in audio.encode():
        out.mux(packet)
    out.close()
    return path


def write_empty_video(path: Path) -> Path:
    """An AVI whose video stream has no frames at all."""
    out = av.open(str(path), "w", format="avi")
    stream = out.add_stream("mjpeg", rate=10)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuvj420p"
    out.start_encoding()
    out.close()
    return path


def open_fds_to(path) -> int:
    """How many of this process's file descriptors are open on ``path`` (Linux: /proc/self/fd)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") == str(path)
        except OSError:
            pass
    return count
