"""Drawing one frame of the synthetic world: ``render_frame(timeline, t, width, height)``.

A pure function of (timeline, t): a trainer renders clips straight from a timeline without a video
file, and a test can predict any pixel. Layers, back to front: the scene's textured background
(panned by the timeline's camera drift), the object crossing the lower part of the frame, the text
card in the upper band (``CARD_BAND``), grey per-pixel noise drawn from ``(seed, round(t * 1000))``,
then the anomaly, which transforms the whole frame. Vectorised numpy throughout: about 1300 frames
per CPU second at 112x112, 130 at 448x252 and 75 at 448x448 (one core).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from vidqa.errors import ConfigError
from vidqa.synth import vocab
from vidqa.synth.textures import background
from vidqa.synth.world import Appearance, Timeline

CARD_BAND = (0.05, 0.35)  # vertical band of text cards, fractions of the height (objects stay below)
CARD_WIDTH = 0.8  # fraction of the width
OUTLINE = 0.12  # outline width as a fraction of an object's radius


def object_radius(o: Appearance, width: int, height: int) -> float:
    return vocab.SIZES[o.size] * min(width, height)


def object_centre(o: Appearance, t: float, width: int, height: int) -> tuple[int, int]:
    """Pixel (x, y) of the object's centre at time ``t``."""
    fx, fy = o.centre(t)
    return int(fx * width), int(fy * height)


def shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Inside-mask of a shape at offsets from its centre in units of its radius (broadcasting)."""
    ax, ay = np.abs(dx), np.abs(dy)
    if shape == "circle":
        return dx * dx + dy * dy <= 1.0
    if shape == "square":
        return np.maximum(ax, ay) <= 0.85
    if shape == "triangle":  # apex up
        return (dy <= 0.8) & (dy >= -1.0 + 1.8 * ax)
    if shape == "diamond":
        return ax + ay <= 1.0
    if shape == "cross":
        return (np.minimum(ax, ay) <= 0.3) & (np.maximum(ax, ay) <= 1.0)
    raise ValueError(f"unknown shape {shape!r}")


def _draw_object(img: np.ndarray, o: Appearance, t: float) -> None:
    height, width = img.shape[:2]
    fx, fy = o.centre(t)
    cx, cy, r = fx * width, fy * height, object_radius(o, width, height)
    # An outline in a contrasting colour keeps every shape visible on every background
    # (a black square at night, a white triangle in the snow).
    pad = max(1.0, OUTLINE * r)
    x0, x1 = max(0, int(cx - r - pad) - 1), min(width, int(cx + r + pad) + 2)
    y0, y1 = max(0, int(cy - r - pad) - 1), min(height, int(cy + r + pad) + 2)
    if x0 >= x1 or y0 >= y1:
        return
    dx = (np.arange(x0, x1, dtype=np.float32) - cx)[None, :]
    dy = (np.arange(y0, y1, dtype=np.float32) - cy)[:, None]
    window = img[y0:y1, x0:x1]
    outer = r + pad
    window[shape_mask(o.shape, dx / outer, dy / outer)] = (255, 255, 255) if o.colour == "black" else (0, 0, 0)
    window[shape_mask(o.shape, dx / r, dy / r)] = vocab.COLOURS[o.colour]


@lru_cache(maxsize=128)
def card_image(word: str, width: int, height: int) -> np.ndarray:
    """A white card with the word in big bold black letters, filling the card band; uint8 ``[h, w, 3]``."""
    from PIL import Image, ImageDraw, ImageFont

    card_h = max(4, int((CARD_BAND[1] - CARD_BAND[0]) * height))
    card_w = max(4, int(CARD_WIDTH * width))
    img = Image.new("RGB", (card_w, card_h), (255, 255, 255))
    draw = ImageDraw.Draw(img)

    def font_of(px: int):
        try:
            return ImageFont.load_default(size=max(6, px))
        except TypeError:  # Pillow without FreeType: a fixed small bitmap font
            return ImageFont.load_default()

    size = int(card_h * 0.75)
    font, stroke = font_of(size), max(1, size // 14)
    box = draw.textbbox((0, 0), word, font=font, stroke_width=stroke)
    fit = min(1.0, card_w * 0.94 / max(1, box[2] - box[0]), card_h * 0.9 / max(1, box[3] - box[1]))
    if fit < 1.0:
        size = int(size * fit)
        font, stroke = font_of(size), max(1, size // 14)
        box = draw.textbbox((0, 0), word, font=font, stroke_width=stroke)
    # The stroke, in the text's own colour, is what makes the letters bold.
    draw.text(((card_w - (box[2] - box[0])) / 2 - box[0], (card_h - (box[3] - box[1])) / 2 - box[1]), word,
              fill=(0, 0, 0), font=font, stroke_width=stroke, stroke_fill=(0, 0, 0))
    return np.asarray(img)


def card_box(width: int, height: int) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the card in an unflipped frame."""
    card_h = max(4, int((CARD_BAND[1] - CARD_BAND[0]) * height))
    card_w = max(4, int(CARD_WIDTH * width))
    top, left = int(CARD_BAND[0] * height), (width - card_w) // 2
    return top, left, top + card_h, left + card_w


def frame_rng(timeline: Timeline, t: float) -> np.random.Generator:
    """The noise generator of the frame at ``t``: the same (seed, millisecond) gives the same noise."""
    return np.random.default_rng([timeline.seed, int(round(max(t, 0.0) * 1000))])


def render_frame(timeline: Timeline, t: float, width: int = 224, height: int = 224) -> np.ndarray:
    """The frame at time ``t`` (seconds): uint8 ``[height, width, 3]``."""
    if width < 8 or height < 8:
        raise ConfigError(f"frames must be at least 8x8 pixels, got {width}x{height}")
    img = background(timeline.scene_at(t), t, timeline.drift, width, height)
    for o in timeline.objects_at(t):
        _draw_object(img, o, t)
    card = timeline.card_at(t)
    if card is not None:
        top, left, bottom, right = card_box(width, height)
        img[top:bottom, left:right] = card_image(card.word, width, height)
    rng = frame_rng(timeline, t)
    if timeline.noise > 0:
        img += rng.integers(-timeline.noise, timeline.noise + 1, size=(height, width, 1), dtype=np.int8)
    out = np.clip(img, 0, 255).astype(np.uint8)
    anomaly = timeline.anomaly_at(t)
    if anomaly is not None:
        out = apply_anomaly(out, anomaly.kind, rng)
    return out


def apply_anomaly(img: np.ndarray, kind: str, rng: np.random.Generator | None = None) -> np.ndarray:
    """The frame as the anomaly ``kind`` shows it (a new array)."""
    if kind == "upside_down":
        return np.ascontiguousarray(img[::-1])
    if kind == "inverted":
        return 255 - img
    if kind == "blackout":
        return img // 10
    if kind == "static":  # TV snow: grey noise over the whole frame, nothing of the scene left
        rng = rng if rng is not None else np.random.default_rng(0)
        return np.repeat(rng.integers(0, 256, size=(*img.shape[:2], 1), dtype=np.uint8), 3, axis=2)
    raise ValueError(f"unknown anomaly {kind!r}")
