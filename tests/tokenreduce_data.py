"""Synthetic :class:`VisualTokens` for the reducer tests.

* :func:`make_tokens` -- ``grids`` temporal grids of ``h x w`` tokens: a random base grid plus small
  per-grid noise (``static=True``: identical grids), frame = 2t, time = 2t seconds.
* :func:`pattern_tokens` -- tokens computed from pictures: each ``patch x patch`` pixel block of a
  frame is projected by a fixed random matrix (and ``tanh``), so what changes in a picture changes the
  tokens at its place and nothing else.
* :func:`chunks` -- a video's tokens cut into chunks of whole grids, as ingest feeds them.
"""

from __future__ import annotations

import numpy as np
import torch

from vidqa.tokens import VisualTokens

# Parameters that reduce, per registered reducer (the matrix tests check every name has an entry).
REDUCING = {
    "temporal": {"keep_ratio": 0.4},
    "tome": {"keep_ratio": 0.4},
    "pool": {"keep_ratio": 0.5},
    "budget": {"keep_ratio": 0.4},
}


def tokens_from(embeds: torch.Tensor, grids: int, h: int, w: int, first_grid: int = 0) -> VisualTokens:
    t, r, c = torch.meshgrid(torch.arange(grids) + first_grid, torch.arange(h), torch.arange(w), indexing="ij")
    grid = torch.stack([t.flatten(), r.flatten(), c.flatten()], dim=1)
    return VisualTokens(embeds=embeds, frame=grid[:, 0] * 2, time=grid[:, 0].double() * 2.0, grid=grid,
                        size=torch.ones(len(grid)), grid_hw=(h, w))


def make_tokens(grids=6, h=4, w=4, dim=16, seed=0, static=False, noise=0.05) -> VisualTokens:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(h * w, dim, generator=g)
    parts = [base.clone() if static else base + noise * torch.randn(h * w, dim, generator=g) for _ in range(grids)]
    return tokens_from(torch.cat(parts), grids, h, w)


def pattern_tokens(frames: np.ndarray, patch: int = 4, dim: int = 24, seed: int = 0) -> VisualTokens:
    """Tokens of ``frames`` float ``[T, H, W]`` (one temporal grid per frame)."""
    t, height, width = frames.shape
    h, w = height // patch, width // patch
    blocks = torch.from_numpy(frames[:, : h * patch, : w * patch]).float()
    blocks = blocks.reshape(t, h, patch, w, patch).permute(0, 1, 3, 2, 4).reshape(t * h * w, patch * patch)
    proj = torch.randn(patch * patch, dim, generator=torch.Generator().manual_seed(seed))
    return tokens_from(torch.tanh((blocks - 0.5) @ proj / patch), t, h, w)


def gradient_frames(t: int, size: int = 16) -> np.ndarray:
    """``t`` identical frames ``[t, size, size]`` of a smooth two-way gradient in [0, 1]."""
    y, x = np.mgrid[0:size, 0:size] / (size - 1)
    return np.repeat((0.6 * x + 0.4 * y)[None], t, axis=0).astype(np.float32)


def chunks(tokens: VisualTokens, grids_per_chunk: int) -> list[VisualTokens]:
    t = tokens.grid[:, 0]
    out = []
    for start in range(int(t.min()), int(t.max()) + 1, grids_per_chunk):
        out.append(tokens.select(((t >= start) & (t < start + grids_per_chunk)).nonzero().flatten()))
    return out


def assert_same_tokens(a: VisualTokens, b: VisualTokens) -> None:
    """Exact equality of embeddings and all metadata."""
    for name in ("embeds", "frame", "time", "grid", "size"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.shape == y.shape and torch.equal(x, y), f"{name} differs"


def source_rows(inp: VisualTokens, out: VisualTokens) -> torch.Tensor:
    """For every output token, the row of the input token with the same (t, h, w); asserts it exists
    and that frame and time came along unchanged."""
    where = {tuple(g): i for i, g in enumerate(inp.grid.tolist())}
    rows = torch.tensor([where[tuple(g)] for g in out.grid.tolist()], dtype=torch.long)
    assert torch.equal(out.frame, inp.frame[rows]) and torch.equal(out.time, inp.time[rows])
    return rows
