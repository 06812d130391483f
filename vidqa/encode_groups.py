"""Encoding several chunks in one vision-tower call, prefilling them one by one.

The memory works chunk by chunk (one KV block, one window step per chunk of ``chunk_frames``
frames), but the vision tower of a 7B model on a 16-frame chunk leaves the GPU idle about a third of
the time while the host launches its ~1,700 kernels (``bench/results/ingest_profile_NVIDIA_H200.txt``:
39 ms of wall time for 25.5 ms of GPU work). Launches cost the same for twice the frames, so
:func:`encode_group` runs the tower once on consecutive chunks and splits its tokens back into the
chunks. This is exact for both families: Qwen2.5-VL's vision attention never crosses a temporal grid
(two frames) and the chunks start on even frames; LLaVA-OneVision encodes every frame on its own.

:func:`groups` keeps the first chunk alone, so that the first prefill starts as soon as it is
decoded, and ends a group at a chunk of odd length (only the video's last one can be).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from vidqa.tokens import VisualTokens


def groups(chunks: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of at most ``size`` chunks (``FrameChunk``s), the first chunk alone."""
    group: list = []
    first = True
    for chunk in chunks:
        group.append(chunk)
        if first or len(group) >= size or len(chunk.times) % 2:
            yield group
            group, first = [], False
    if group:
        yield group


def _joinable(chunks: list) -> bool:
    """Frames of one size, consecutive sampled indices, every chunk but the last of even length."""
    if any(int(c.indices[-1]) - int(c.indices[0]) != len(c.indices) - 1 for c in chunks):
        return False  # a chunk with a gap: its tokens' frame numbers count from its own start
    for a, b in zip(chunks[:-1], chunks[1:]):
        if len(a.times) % 2 or a.frames.shape[1:] != b.frames.shape[1:] or int(b.indices[0]) != int(a.indices[-1]) + 1:
            return False
    return True


def encode_group(adapter, chunks: list) -> list[VisualTokens]:
    """Visual tokens of each chunk of ``chunks``: one ``adapter.encode`` call where they can be
    joined, one per chunk otherwise."""
    if len(chunks) == 1 or not _joinable(chunks):
        return [adapter.encode(c.frames, c.times, first_index=int(c.indices[0])) for c in chunks]
    first = int(chunks[0].indices[0])
    tokens = adapter.encode(np.concatenate([c.frames for c in chunks]), np.concatenate([c.times for c in chunks]),
                            first_index=first)
    return tokens.split_at_frames([int(c.indices[0]) for c in chunks[1:]])
