"""Scene backgrounds: one periodic pattern per texture kind, drawn from 1-D pieces.

Every pattern is a function ``m(x, y)`` in ``[0, 1]`` built from outer products of a row vector and
a column vector (``sin(a(x) + b(y)) = sin a cos b + cos a sin b``), so a 448x448 background costs a
few vector operations instead of transcendental functions over every pixel. Coordinates are in
reference units of a 224-pixel frame, so a pattern looks the same at 112 and at 448 pixels (only
sharper); the camera pan and the scene's phase shift them, its ``scale`` stretches them.
"""

from __future__ import annotations

import numpy as np

from vidqa.synth import vocab
from vidqa.synth.world import Scene

REFERENCE = 224.0


def _sin_sum(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``sin(a[None, :] + b[:, None])`` as two outer products: ``[len(b), len(a)]``."""
    return np.outer(np.cos(b), np.sin(a)) + np.outer(np.sin(b), np.cos(a))


def pattern(kind: str, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """The pattern ``m`` float32 ``[len(ys), len(xs)]`` in [0, 1] at reference coordinates ``xs``/``ys``."""
    if kind == "waves":  # soft diagonal-ish ripples
        return 0.5 + 0.5 * _sin_sum(xs / 9.0, 0.6 * np.sin(ys / 13.0))
    if kind == "stripes":  # hard, slightly wavy vertical bars (tree trunks)
        return (_sin_sum(xs / 6.0, 0.8 * np.sin(ys / 20.0)) > 0.3).astype(np.float32)
    if kind == "checker":  # hard squares (blocks of buildings)
        return (np.floor(ys / 24.0)[:, None] % 2 != np.floor(xs / 24.0)[None, :] % 2).astype(np.float32)
    if kind == "dunes":  # soft horizontal bands that meander
        return 0.5 + 0.5 * _sin_sum(ys / 10.0, 2.0 * np.sin(xs / 30.0)).T
    if kind == "dots":  # hard round spots
        return (np.outer(np.sin(ys / 5.0), np.sin(xs / 5.0)) > 0.6).astype(np.float32)
    raise ValueError(f"unknown texture {kind!r}")


def background(scene: Scene, t: float, drift: tuple[float, float], width: int, height: int) -> np.ndarray:
    """The scene's background at time ``t``: float32 ``[height, width, 3]`` in [0, 255]."""
    a, b, default_kind = vocab.SCENES[scene.name]
    kind = scene.texture or default_kind
    unit = REFERENCE / max(width, height)
    scale = scene.scale if scene.scale > 0 else 1.0
    xs = ((np.arange(width, dtype=np.float32) * unit + scene.phase_x + drift[0] * t) / scale).astype(np.float32)
    ys = ((np.arange(height, dtype=np.float32) * unit + scene.phase_y + drift[1] * t) / scale).astype(np.float32)
    m = pattern(kind, xs, ys).astype(np.float32, copy=False)
    ca = np.asarray(a, np.float32)
    return ca + m[..., None] * (np.asarray(b, np.float32) - ca)
