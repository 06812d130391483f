"""Chunks of a video as ingest feeds them, and memories built from them, for the memory tests.

* :func:`encode_chunks` -- ``frames [T, H, W, 3]`` encoded chunk by chunk by the adapter, one second
  per frame: ``(tokens, layout, t_end)`` per chunk;
* :func:`random_chunks` -- the same for random frames of the adapter's native size;
* :func:`ingest` -- a :class:`VideoMemory` of (possibly reduced) chunks.
"""

import numpy as np

from vidqa.memory import StreamingIngest


def frame_side(adapter) -> int:
    return 16 if adapter.family == "llava_onevision" else 32


def encode_chunks(adapter, frames: np.ndarray, frames_per_chunk: int = 4):
    out = []
    for start in range(0, len(frames), frames_per_chunk):
        part = frames[start:start + frames_per_chunk]
        times = np.arange(len(part), dtype=float) + start
        tokens = adapter.encode(part, times, first_index=start)
        out.append((tokens, adapter.chunk_layout(tokens), float(times[-1] + 1)))
    return out


def random_chunks(adapter, n_chunks: int, frames_per_chunk: int = 4, seed: int = 0):
    side = frame_side(adapter)
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (n_chunks * frames_per_chunk, side, side, 3), dtype=np.uint8)
    return encode_chunks(adapter, frames, frames_per_chunk)


def ingest(adapter, chunks, config, reducer=None):
    """The memory of ``chunks`` (reduced by ``reducer``, a stream, when given)."""
    ing = StreamingIngest(adapter, config)
    for tokens, layout, t_end in chunks:
        ing.add_chunk(reducer(tokens) if reducer is not None else tokens, layout, t_end)
    return ing.finish(model=adapter.name, video={}, config_key="k", stats={})
