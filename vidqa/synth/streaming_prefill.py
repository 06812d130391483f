"""One training forward that sees what streaming ingest shows each chunk.

:class:`~vidqa.memory.ingest.StreamingIngest` prefills chunk ``c`` of a video attending to the prompt
prefix (the sinks), ``recurrent_tokens`` mean-pooled KV entries of every chunk that already left the
window (at most ``recurrent_capacity``, newest kept), the last ``window_chunks`` chunks and itself
(causally). A model trained with full causal attention over its clips never meets that context:
later chunks' keys then differ from anything it has read, and the bundled model's answers on the
demo depended on ``--window-chunks`` (8 of 14 at the default 2, 10 of 14 with full context; stop 18).

:func:`streaming_prefill` runs the whole clip in one forward (every chunk at once, as training
needs) with an attention function that gives each query exactly ingest's context: the pooled
entries are computed inside each layer from that layer's own rotated keys and values, as ingest
pools the cache it just wrote, and appended as extra keys visible only to the chunks that ingest
would show them to. The cache the forward leaves holds the clip's own KV only, as ingest's blocks
do, so questions answered over it see what recall gives them. Tested equal to ingest, layer by
layer. The recurrent memory follows VideoLLaMB (Wang et al. 2024) and VideoStreaming (Qian et al.
2024), the window ReKV (Di et al. 2025); see :mod:`vidqa.memory.ingest`.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F

from vidqa.config import MemoryConfig
from vidqa.memory.attention import attention_implementation

NAME = "vidqa_streaming_prefill"
_active: dict = {}  # the layout of the forward in progress (one at a time: training is single-threaded)


def ingest_context(chunk_of: torch.Tensor, visual: torch.Tensor, config: MemoryConfig):
    """What ingest shows each token of one video laid out as ``chunk_of`` int64 ``[N]`` (the chunk of
    each token, -1 for the prompt prefix, chunks in order) with ``visual`` bool ``[N]``.

    Returns ``pool`` float32 ``[E, N]`` (row ``e`` averages the visual tokens of pooled entry ``e``:
    ``recurrent_tokens`` contiguous groups per chunk, as ingest's ``_summaries``) and the mask bool
    ``[N, N + E]`` (query, then token keys and pooled entries), True where attention is allowed.
    """
    n = chunk_of.numel()
    w, per = config.window_chunks, config.recurrent_tokens
    chunks = int(chunk_of.max()) + 1 if n else 0
    rows, owner = [], []
    for c in range(chunks):
        idx = ((chunk_of == c) & visual).nonzero().flatten()
        if per == 0 or idx.numel() == 0:
            continue
        for group in torch.tensor_split(idx, min(per, idx.numel())):
            row = torch.zeros(n)
            row[group] = 1.0 / group.numel()
            rows.append(row)
            owner.append(c)
    pool = torch.stack(rows) if rows else torch.zeros(0, n)
    owner = torch.tensor(owner, dtype=torch.long)
    q_chunk = chunk_of[:, None]
    i = torch.arange(n)
    k_chunk = chunk_of[None, :]
    # tokens: causal, and either the prefix or a chunk still in the query's window (or the query's own)
    tokens = (i[None, :] <= i[:, None]) & ((k_chunk < 0) | (k_chunk >= q_chunk - w))
    # pooled entries: of chunks that left the query's window, the newest ``recurrent_capacity``
    order = torch.arange(len(owner))
    left = owner[None, :] <= q_chunk - w - 1  # [N, E]
    seen_before = (left.sum(dim=1, keepdim=True) - order[None, :]) <= config.recurrent_capacity
    pooled = left & seen_before & (q_chunk >= 0)
    return pool, torch.cat([tokens, pooled], dim=1)


def _attention(module, query, key, value, attention_mask=None, scaling=None, dropout=0.0, **kwargs):
    """``query [B, Hq, N, D]`` over the clip's ``key/value [B, Hkv, N, D]`` plus their pooled entries."""
    pool, mask = _active["pool"], _active["mask"]
    if key.shape[-2] != pool.shape[1] or query.shape[-2] != pool.shape[1]:
        raise RuntimeError("streaming prefill runs one whole clip per forward, without a cache before it")
    groups = query.shape[1] // key.shape[1]
    p = pool.to(key.device, torch.float32)
    pooled_k = torch.einsum("en,bhnd->bhed", p, key.float()).to(key.dtype)
    pooled_v = torch.einsum("en,bhnd->bhed", p, value.float()).to(value.dtype)
    k = torch.cat([key, pooled_k], dim=2).repeat_interleave(groups, 1)
    v = torch.cat([value, pooled_v], dim=2).repeat_interleave(groups, 1)
    out = F.scaled_dot_product_attention(query, k, v, attn_mask=mask.to(query.device), scale=scaling,
                                         dropout_p=dropout if module.training else 0.0)
    return out.transpose(1, 2).contiguous(), None


@contextmanager
def streaming_prefill(adapter, chunk_of: torch.Tensor, visual: torch.Tensor, config: MemoryConfig):
    """Within the block, forwards of ``adapter``'s language model over the video laid out as
    ``chunk_of``/``visual`` (:func:`ingest_context`) attend as ingest with ``config`` would."""
    pool, mask = ingest_context(chunk_of, visual, config)
    _active.update(pool=pool, mask=mask)
    try:
        with attention_implementation(adapter, NAME, _attention):
            yield
    finally:
        _active.clear()
