"""Drawing the synthetic world: ``render_frame(timeline, t, w, h)`` and ``write_video``.

``render_frame`` is a pure function of (timeline, t): a trainer renders clips directly without a
video file, and a test can predict any pixel. Textured backgrounds drift slowly (a camera pan) and
carry small noise seeded by (timeline seed, frame time), so consecutive frames are similar but not
identical. ``write_video`` encodes frame by frame to H.264 with PyAV and never holds the video.
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import numpy as np

from vidqa.synth import vocab
from vidqa.synth.timeline import Appearance, Timeline

CARD_BAND = (0.05, 0.35)  # vertical band of text cards (objects move below it)


@lru_cache(maxsize=8)
def _grid(width: int, height: int):
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    return x, y


def _texture(name: str, t: float, width: int, height: int) -> np.ndarray:
    a, b, kind = vocab.SCENES[name]
    x, y = _grid(width, height)
    drift = 0.8 * t  # pixels per second, relative to a 224-pixel frame
    s = 224.0 / max(width, height)
    xs, ys = (x * s + drift), (y * s)
    if kind == "waves":
        m = 0.5 + 0.5 * np.sin(xs / 9.0 + 0.6 * np.sin(ys / 13.0))
    elif kind == "stripes":
        m = (np.sin(xs / 6.0) > 0.3).astype(np.float32)
    elif kind == "checker":
        m = ((np.floor(xs / 24) + np.floor(ys / 24)) % 2).astype(np.float32)
    elif kind == "dunes":
        m = 0.5 + 0.5 * np.sin(ys / 10.0 + np.sin(xs / 30.0) * 2.0)
    else:  # dots
        m = ((np.sin(xs / 5.0) * np.sin(ys / 5.0)) > 0.6).astype(np.float32)
    ca, cb = np.array(a, np.float32), np.array(b, np.float32)
    return ca + (cb - ca) * m[..., None]


def _shape_mask(o: Appearance, t: float, width: int, height: int) -> np.ndarray:
    x, y = _grid(width, height)
    f = (t - o.start) / max(o.end - o.start, 1e-6)
    cx = (o.x0 + (o.x1 - o.x0) * f) * width
    cy = (o.y0 + (o.y1 - o.y0) * f) * height
    r = vocab.SIZES[o.size] * min(width, height)
    dx, dy = (x - cx) / r, (y - cy) / r
    if o.shape == "circle":
        return dx * dx + dy * dy <= 1.0
    if o.shape == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) <= 0.85
    if o.shape == "triangle":
        return (dy <= 0.8) & (dy >= -1.0 + 1.8 * np.abs(dx))
    if o.shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= 1.0
    return (np.minimum(np.abs(dx), np.abs(dy)) <= 0.3) & (np.maximum(np.abs(dx), np.abs(dy)) <= 1.0)


def object_centre(o: Appearance, t: float, width: int, height: int) -> tuple[int, int]:
    f = (t - o.start) / max(o.end - o.start, 1e-6)
    return (int((o.x0 + (o.x1 - o.x0) * f) * width), int((o.y0 + (o.y1 - o.y0) * f) * height))


@lru_cache(maxsize=64)
def _card(word: str, width: int, height: int) -> np.ndarray:
    """A white card with the word in black, sized to the card band; uint8 [h, w, 3]."""
    from PIL import Image, ImageDraw, ImageFont

    band_h = int((CARD_BAND[1] - CARD_BAND[0]) * height)
    card_w = int(0.8 * width)
    img = Image.new("RGB", (card_w, band_h), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    size = max(8, int(band_h * 0.7))
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        font = ImageFont.load_default()
    box = draw.textbbox((0, 0), word, font=font)
    scale = min(1.0, (card_w * 0.92) / max(1, box[2] - box[0]))
    if scale < 1.0:
        try:
            font = ImageFont.load_default(size=max(6, int(size * scale)))
        except TypeError:
            pass
        box = draw.textbbox((0, 0), word, font=font)
    draw.text(((card_w - (box[2] - box[0])) / 2 - box[0], (band_h - (box[3] - box[1])) / 2 - box[1]),
              word, fill=(0, 0, 0), font=font)
    return np.asarray(img)


def render_frame(timeline: Timeline, t: float, width: int = 224, height: int = 224) -> np.ndarray:
    """The frame at time ``t`` (s): uint8 ``[height, width, 3]``."""
    img = _texture(timeline.scene_at(t).name, t, width, height)
    for o in timeline.objects_at(t):
        img[_shape_mask(o, t, width, height)] = vocab.COLOURS[o.colour]
    card = timeline.card_at(t)
    if card is not None:
        c = _card(card.word, width, height).astype(np.float32)
        top, left = int(CARD_BAND[0] * height), (width - c.shape[1]) // 2
        img[top:top + c.shape[0], left:left + c.shape[1]] = c
    rng = np.random.default_rng([timeline.seed, int(round(t * 1000))])
    img = img + rng.normal(0.0, 4.0, size=(height, width, 1)).astype(np.float32)
    out = np.clip(img, 0, 255).astype(np.uint8)
    anomaly = timeline.anomaly_at(t)
    if anomaly is not None:
        out = apply_anomaly(out, anomaly.kind)
    return out


def apply_anomaly(img: np.ndarray, kind: str) -> np.ndarray:
    if kind == "upside_down":
        return np.ascontiguousarray(img[::-1])
    if kind == "inverted":
        return 255 - img
    if kind == "blackout":
        return (img // 10).astype(np.uint8)
    if kind == "mirror":
        return np.ascontiguousarray(img[:, ::-1])
    raise ValueError(f"unknown anomaly {kind!r}")


def write_video(timeline: Timeline, path: str | Path, fps: float = 1.0, width: int = 448,
                height: int = 252, crf: int = 28) -> Path:
    """Encodes the whole timeline at ``fps`` to an H.264 MP4, one frame at a time."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(1000)
    n = int(np.floor(timeline.duration * fps + 1e-6))
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast", "g": str(max(1, int(round(10 * fps))))}
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(render_frame(timeline, i / fps, width, height), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path
