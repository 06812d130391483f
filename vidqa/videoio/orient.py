"""Upright frames from the display matrix.

Phones store the sensor's pixels as recorded plus a 3x3 display matrix (the MP4 ``tkhd`` matrix,
exported by FFmpeg as ``AV_FRAME_DATA_DISPLAYMATRIX``) that tells a player how to turn them. In
libavutil/display.h's convention the matrix ``[a b u; c d v; x y w]`` (row-major, 16.16 fixed
point) maps a source pixel ``(p, q)`` (x right, y down) to ``(a p + c q + x, b p + d q + y)``. An
iPhone portrait clip stores ``a=0, b=1, c=-1, d=0``: turn 90 degrees clockwise to show it.

Only the eight axis-aligned orientations occur in practice (EXIF's eight); a matrix with another
angle or a shear is rounded to the nearest of them. An orientation is ``(rotation, mirrored)``:
turn the decoded frame clockwise by ``rotation`` degrees (0, 90, 180 or 270), then mirror it
left-right if ``mirrored``. PyAV's ``VideoFrame.rotation`` is not enough: it ignores mirroring
(a mirrored clip reads as rotated by 180 degrees) and counts counter-clockwise.
"""

from __future__ import annotations

import numpy as np

IDENTITY = (0, False)


def upright(image: np.ndarray, rotation: int, mirrored: bool) -> np.ndarray:
    """``image`` ``[H, W, ...]`` turned clockwise by ``rotation`` degrees, then mirrored if asked."""
    out = np.rot90(image, k=-(rotation // 90) % 4)  # np.rot90 turns counter-clockwise for k > 0
    if mirrored:
        out = out[:, ::-1]
    return out


def _apply_matrix(image: np.ndarray, a: int, b: int, c: int, d: int) -> np.ndarray:
    """The display matrix's linear part applied to ``image`` (signs only, axis-aligned)."""
    if abs(a) + abs(d) >= abs(b) + abs(c):
        out, flip_x, flip_y = image, a < 0, d < 0  # p' = a p, q' = d q
    else:
        out, flip_x, flip_y = image.swapaxes(0, 1), c < 0, b < 0  # p' = c q, q' = b p
    if flip_x:
        out = out[:, ::-1]
    if flip_y:
        out = out[::-1]
    return out


_PROBE = np.arange(6).reshape(2, 3)
_CANDIDATES = [(r, m) for r in (0, 90, 180, 270) for m in (False, True)]


def orientation_from_matrix(matrix) -> tuple[int, bool]:
    """``(rotation, mirrored)`` of a 9-integer display matrix; identity if it is degenerate."""
    if matrix is None or len(matrix) < 5:
        return IDENTITY
    a, b, c, d = (int(matrix[i]) for i in (0, 1, 3, 4))
    if a == b == c == d == 0:
        return IDENTITY
    # Which of the eight orientations moves a small asymmetric probe the same way as the matrix.
    target = _apply_matrix(_PROBE, a, b, c, d)
    for rotation, mirrored in _CANDIDATES:
        got = upright(_PROBE, rotation, mirrored)
        if got.shape == target.shape and np.array_equal(got, target):
            return rotation, mirrored
    return IDENTITY


def frame_orientation(frame) -> tuple[int, bool]:
    """Orientation of a decoded PyAV frame from its display-matrix side data (identity if none)."""
    try:
        side = frame.side_data.get("DISPLAYMATRIX")
    except (AttributeError, KeyError, ValueError, TypeError):
        return IDENTITY
    if side is None:
        return IDENTITY
    raw = bytes(side)
    if len(raw) < 36:
        return IDENTITY
    return orientation_from_matrix(np.frombuffer(raw[:36], dtype=np.int32))


def _signed_permutations():
    for a, b, c, d in ((1, 0, 0, 1), (0, 1, 1, 0)):
        for sx in (1, -1):
            for sy in (1, -1):
                yield (a * sx, b * sx, c * sy, d * sy)


def ffmpeg_rotation(rotation: int, mirrored: bool) -> int:
    """The clockwise turn FFmpeg-based readers that ignore mirroring apply (decord does this).

    They take ``-av_display_rotation_get(matrix)``, i.e. ``atan2(b, a)``, of the matrix that
    means ``(rotation, mirrored)``; for a mirrored clip that is not ``rotation``.
    """
    for a, b, c, d in _signed_permutations():
        if orientation_from_matrix([a, b, 0, c, d]) == (rotation, mirrored):
            return int(round(np.degrees(np.arctan2(b, a)))) % 360
    return rotation
