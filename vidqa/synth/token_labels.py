"""Per-visual-token labels of a synthetic clip, for the trainer's dense auxiliary loss.

The renderer knows what every merged visual token shows, so the trainer can tell the vision tower
directly -- one label per token -- instead of only through the answers the language model gives.
Trained on answers alone, the bundled model learnt colours (count 86%) but not shapes: asked for
the colour of a rare shape it stayed at chance (27% on 55 held-out questions, 4 options). A linear
probe over the visual tokens with a per-token cross-entropy is dense supervision in the spirit of
deep supervision (Lee et al., 2015, "Deeply-Supervised Nets") and of the box-level targets used to
ground region features (e.g. Zhong et al., 2022, "RegionCLIP"); the probe is dropped after training,
so the shipped model stays a stock Qwen2.5-VL.

Labels, for each 2-frame temporal grid and merged cell (row, col) of the model frame:

* ``shape``: 1 + index in :data:`vocab.SHAPES` at the cells holding an object's centre in either of
  the grid's two frames, else 0;
* ``colour``: 1 + index in :data:`vocab.COLOURS` at the same cells, else 0;
* ``word``: 1 + index in :data:`vocab.CARD_WORDS` at the cells of the card's band while a card is
  shown, else 0.

Grids with an anomaly frame are left out (-100): the frame is flipped, inverted, dark or static.
"""

from __future__ import annotations

import numpy as np

from vidqa.synth import vocab
from vidqa.synth.render import CARD_BAND, CARD_WIDTH

IGNORE = -100
FIELDS = ("shape", "colour", "word")
CLASSES = {"shape": 1 + len(vocab.SHAPES), "colour": 1 + len(vocab.COLOURS), "word": 1 + len(vocab.CARD_WORDS)}
_SHAPE = {s: i + 1 for i, s in enumerate(vocab.SHAPES)}
_COLOUR = {c: i + 1 for i, c in enumerate(vocab.COLOURS)}
_WORD = {w: i + 1 for i, w in enumerate(vocab.CARD_WORDS)}


def card_cells(rows: int, cols: int) -> tuple[slice, slice]:
    """Rows and columns of merged cells whose centre lies on the card."""
    centres_y, centres_x = (np.arange(rows) + 0.5) / rows, (np.arange(cols) + 0.5) / cols
    left = (1 - CARD_WIDTH) / 2
    r = np.flatnonzero((centres_y >= CARD_BAND[0]) & (centres_y < CARD_BAND[1]))
    c = np.flatnonzero((centres_x >= left) & (centres_x < 1 - left))
    return slice(int(r[0]), int(r[-1]) + 1), slice(int(c[0]), int(c[-1]) + 1)


def token_labels(tl, times: np.ndarray, rows: int, cols: int, temporal: int = 2) -> np.ndarray:
    """int64 ``[T / temporal, rows, cols, 3]`` labels (``FIELDS`` order) of frames at ``times`` ``[T]``
    seconds of timeline ``tl``, on a grid of ``rows x cols`` merged cells."""
    grids = len(times) // temporal
    out = np.zeros((grids, rows, cols, len(FIELDS)), dtype=np.int64)
    band_rows, band_cols = card_cells(rows, cols)
    for g in range(grids):
        frame_times = [float(t) for t in times[g * temporal:(g + 1) * temporal]]
        if any(tl.anomaly_at(t) is not None for t in frame_times):
            out[g] = IGNORE
            continue
        for t in frame_times:
            for o in tl.objects_at(t):
                fx, fy = o.centre(t)
                r, c = min(rows - 1, max(0, int(fy * rows))), min(cols - 1, max(0, int(fx * cols)))
                out[g, r, c, 0], out[g, r, c, 1] = _SHAPE[o.shape], _COLOUR[o.colour]
            card = tl.card_at(t)
            if card is not None:
                out[g, band_rows, band_cols, 2] = _WORD[card.word]
    return out
