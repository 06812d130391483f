"""`VisualTokens`: the contract between the VLM adapters, the reducers and the memory.

A chunk of video becomes ``N`` visual tokens in the language model's embedding space. Every token
carries the metadata that later stages need to stay correct after tokens are dropped or merged:

* ``frame``     ``[N]`` int64 -- index of the (first) sampled frame the token comes from,
* ``time``      ``[N]`` float64 -- presentation time of that frame in seconds,
* ``grid``      ``[N, 3]`` int64 -- (t, h, w) position in the model's merged token grid; ``t`` counts
  temporal grids from the start of the video, ``h``/``w`` index the merged patch,
* ``size``      ``[N]`` float32 -- how many original tokens were merged into this one (1 if none).

Reducers keep all four consistent, so the adapter can assign each survivor its original position
and the UI can show which frames survived. Tokens are always kept in their original order
(frame-major, then row-major), which both model families expect.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class VisualTokens:
    """Visual embeddings ``[N, D]`` plus per-token metadata (see module docstring)."""

    embeds: torch.Tensor
    frame: torch.Tensor
    time: torch.Tensor
    grid: torch.Tensor
    size: torch.Tensor
    # Grid shape (rows, cols) of one temporal grid before any reduction: lets spatial reducers and
    # pooling reason about neighbours without knowing the model family.
    grid_hw: tuple[int, int] = (0, 0)
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.embeds.shape[0]
        if self.embeds.dim() != 2:
            raise ValueError(f"embeds must be [N, D], got {tuple(self.embeds.shape)}")
        for name in ("frame", "time", "size"):
            t = getattr(self, name)
            if t.shape != (n,):
                raise ValueError(f"{name} must be [{n}], got {tuple(t.shape)}")
        if self.grid.shape != (n, 3):
            raise ValueError(f"grid must be [{n}, 3], got {tuple(self.grid.shape)}")

    def __len__(self) -> int:
        return self.embeds.shape[0]

    @property
    def dim(self) -> int:
        return self.embeds.shape[1]

    @property
    def frames(self) -> torch.Tensor:
        """Sorted unique frame indices that still have at least one token."""
        return torch.unique(self.frame)

    def select(self, index: torch.Tensor) -> "VisualTokens":
        """Tokens at ``index`` (bool mask ``[N]`` or int64 indices), kept in original order."""
        if index.dtype == torch.bool:
            index = index.nonzero().flatten()
        index = torch.sort(index.to(torch.long)).values
        return VisualTokens(
            embeds=self.embeds[index],
            frame=self.frame[index.to(self.frame.device)],
            time=self.time[index.to(self.time.device)],
            grid=self.grid[index.to(self.grid.device)],
            size=self.size[index.to(self.size.device)],
            grid_hw=self.grid_hw,
            extra=dict(self.extra),
        )

    def split_at_frames(self, starts: list[int]) -> list["VisualTokens"]:
        """Consecutive pieces: the tokens of frames before ``starts[0]``, of ``[starts[0], starts[1])``,
        ..., of ``starts[-1]`` onwards (``starts`` ascending frame indices). Tokens are in frame order
        (the contract), so each piece is a slice: embeddings are views, not copies."""
        cuts = torch.searchsorted(self.frame.cpu().contiguous(), torch.tensor(starts, dtype=self.frame.dtype)).tolist()
        bounds = [0, *cuts, len(self)]
        return [VisualTokens(embeds=self.embeds[a:b], frame=self.frame[a:b], time=self.time[a:b],
                             grid=self.grid[a:b], size=self.size[a:b], grid_hw=self.grid_hw, extra=dict(self.extra))
                for a, b in zip(bounds[:-1], bounds[1:])]

    def replace(self, **changes) -> "VisualTokens":
        """A copy with some fields replaced (e.g. merged embeddings and sizes)."""
        fields = dict(
            embeds=self.embeds, frame=self.frame, time=self.time, grid=self.grid,
            size=self.size, grid_hw=self.grid_hw, extra=dict(self.extra),
        )
        fields.update(changes)
        return VisualTokens(**fields)

    def to(self, device=None, dtype=None) -> "VisualTokens":
        """Moves embeddings (and metadata, to the same device); dtype applies to embeddings only."""
        return self.replace(
            embeds=self.embeds.to(device=device, dtype=dtype),
            frame=self.frame.to(device), time=self.time.to(device),
            grid=self.grid.to(device), size=self.size.to(device),
        )

    @staticmethod
    def cat(parts: list["VisualTokens"]) -> "VisualTokens":
        """Concatenates chunks in the order given (callers pass them in time order).

        ``extra``: list values are per-grid or per-segment records of each chunk (the temporal
        reducer's ``segment_starts`` and ``change``), so they are concatenated in order -- a
        question-aware step over the whole video must see every chunk's; any other value is the
        first part's that has the key.
        """
        if not parts:
            raise ValueError("cannot concatenate an empty list of VisualTokens")
        extra: dict = {}
        for p in parts:
            for key, value in p.extra.items():
                if isinstance(value, list):
                    extra[key] = extra.get(key, []) + value
                else:
                    extra.setdefault(key, value)
        return VisualTokens(
            embeds=torch.cat([p.embeds for p in parts]),
            frame=torch.cat([p.frame for p in parts]),
            time=torch.cat([p.time for p in parts]),
            grid=torch.cat([p.grid for p in parts]),
            size=torch.cat([p.size for p in parts]),
            grid_hw=parts[0].grid_hw,
            extra=extra,
        )

    def frame_groups(self) -> list[torch.Tensor]:
        """Index tensors of the tokens of each temporal grid, in time order."""
        t = self.grid[:, 0]
        return [(t == v).nonzero().flatten() for v in torch.unique(t)]
