"""Packed attention for Qwen2-VL / Qwen2.5-VL vision towers without flash-attn.

The Qwen2.5-VL vision tower (Bai et al., 2025) attends inside 112-pixel windows in most blocks and
inside each temporal grid in a few: a sequence of segments given by ``cu_seqlens``. With SDPA or
eager attention, transformers runs one attention call per segment from a Python loop: at 448x448 a
16-frame chunk has 8 grids x 16 windows, so 128 calls per window block and about 3,600 per chunk for
the 7B tower, each on a 64-token problem too small to fill a GPU. That loop, not the matrix work,
is most of the vision time (shared REFERENCES: the tower reaches ~10% of the matmul throughput).

:func:`packed_vision_attention` switches a vision tower, for the duration of a ``with`` block, to
:func:`varlen_sdpa`: segments of equal length are stacked into one batch and attended by one SDPA
call (a frame's windows are all equal except at the right and bottom edges, so a chunk needs one to
four calls per block). Exact: every segment still attends only to itself.

transformers hands the segment boundaries (``cu_seq_lens_q``) only to attention implementations
whose name contains "flash" (``is_flash_attention_requested``); the registered name says so for that
reason, not because it is FlashAttention. A tower already set to a real flash implementation is left
as it is.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

NAME = "vidqa_flash_varlen_sdpa"
_registered = False
_plans: dict | None = None  # segment plans of the current `packed_vision_attention` block
# Plans of boundary tensors that outlive a forward (vision_plan.py): id -> (tensor, plan)
_static: dict[int, tuple] = {}


def remember_segments(cu_seq_lens_q: torch.Tensor, n_tokens: int, device) -> None:
    """Builds the plan of ``cu_seq_lens_q`` (a host tensor reused across forwards) once and keeps it
    until :func:`forget_segments`."""
    _static[id(cu_seq_lens_q)] = (cu_seq_lens_q, _build_plan(cu_seq_lens_q, n_tokens, device))


def forget_segments(cu_seq_lens_q: torch.Tensor) -> None:
    _static.pop(id(cu_seq_lens_q), None)


def remembered_segments(cu_seq_lens_q: torch.Tensor):
    """The ``(tensor, plan)`` kept by :func:`remember_segments` for ``cu_seq_lens_q``, or None."""
    hit = _static.get(id(cu_seq_lens_q))
    return hit if hit is not None and hit[0] is cu_seq_lens_q else None


def _segment_plan(cu_seq_lens_q, n_tokens: int, device):
    """How to attend the segments ``cu_seq_lens_q`` (``[S + 1]`` boundaries tiling ``[0, n_tokens)``):
    ``("one", seg)`` for equal segments of length ``seg``, else ``("groups", [(length, idx [n, length])])``
    with the token indices of the segments of each length. One host sync per boundary tensor: the
    tower passes the same two tensors (window and full-attention boundaries) to all of its blocks,
    so inside :func:`packed_vision_attention` a plan is built once per tensor and forward, not per block."""
    kept = remembered_segments(cu_seq_lens_q) if cu_seq_lens_q is not None else None
    if kept is not None:
        return kept[1]
    cache = _plans if cu_seq_lens_q is not None else None
    hit = cache.get(id(cu_seq_lens_q)) if cache is not None else None
    if hit is not None and hit[0] is cu_seq_lens_q:
        return hit[1]
    plan = _build_plan(cu_seq_lens_q, n_tokens, device)
    if cache is not None:
        cache[id(cu_seq_lens_q)] = (cu_seq_lens_q, plan)  # the tensor is kept so that its id cannot be reused
    return plan


def _build_plan(cu_seq_lens_q, n_tokens: int, device):
    cu = [0, n_tokens] if cu_seq_lens_q is None else [int(x) for x in cu_seq_lens_q.tolist()]
    starts = torch.tensor(cu[:-1])
    lengths = torch.tensor(cu[1:]) - starts
    if (lengths == lengths[0]).all() and lengths[0] > 0:  # the common case: a plain reshape
        return ("one", int(lengths[0]))
    return ("groups", [(length, (starts[lengths == length][:, None] + torch.arange(length)).to(device))
                       for length in torch.unique(lengths).tolist() if length > 0])


def segment_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seq_lens_q, scaling=None) -> torch.Tensor:
    """Non-causal attention within segments. ``q/k/v``: ``[N, H, D]`` (any strides); ``cu_seq_lens_q``:
    ``[S + 1]`` cumulative segment boundaries tiling ``[0, N)`` (None: one segment). Returns ``[N, H, D]``."""
    n_tokens, heads, dim = q.shape
    kind, plan = _segment_plan(cu_seq_lens_q, n_tokens, q.device)
    if kind == "one":
        stack = [t.reshape(-1, plan, heads, dim).transpose(1, 2) for t in (q, k, v)]
        out = torch.nn.functional.scaled_dot_product_attention(*stack, scale=scaling)  # [S, H, seg, D]
        return out.transpose(1, 2).reshape(n_tokens, heads, dim)
    out = q.new_empty(n_tokens, heads, dim)
    for _, idx in plan:
        stack = [t[idx].transpose(1, 2) for t in (q, k, v)]  # [n, H, length, D]
        o = torch.nn.functional.scaled_dot_product_attention(*stack, scale=scaling)
        out[idx] = o.transpose(1, 2)
    return out


def varlen_sdpa(module, query, key, value, attention_mask=None, scaling=None, dropout=0.0,
                cu_seq_lens_q=None, is_causal=False, **kwargs):
    """transformers' attention-interface form of :func:`segment_sdpa`: ``query/key/value`` ``[1, H, N, D]``
    -> ``([1, N, H, D], None)`` as transformers' flash functions return."""
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # [N, H, D]
    return segment_sdpa(q, k, v, cu_seq_lens_q, scaling).unsqueeze(0), None


def _register() -> None:
    global _registered
    if not _registered:
        from transformers import AttentionInterface

        AttentionInterface.register(NAME, varlen_sdpa)
        _registered = True


def is_packed(config) -> bool:
    """Whether a tower with ``config`` is inside :func:`packed_vision_attention` (and so attends with
    :func:`segment_sdpa`)."""
    return getattr(config, "_attn_implementation", None) == NAME


@contextmanager
def packed_vision_attention(vision_tower: torch.nn.Module):
    """Within the block, ``vision_tower`` (a Qwen2-VL/Qwen2.5-VL vision model) attends with
    :func:`varlen_sdpa`, unless it already uses a flash implementation; restored afterwards."""
    config = vision_tower.config
    previous = config._attn_implementation
    if previous and "flash" in previous:
        yield
        return
    global _plans
    _register()
    outer = _plans
    try:
        config._attn_implementation = NAME
        _plans = {}
        yield
    finally:
        config._attn_implementation = previous
        _plans = outer
