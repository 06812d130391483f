"""Matmul FLOPs (2 per multiply-add) of the vision towers and the LLM prefill, counted from the
configs and the shapes that ran: the work the GPU benchmark's profile compares with the device's
measured matmul throughput. Pure arithmetic on config attributes; tested against torch's
``FlopCounterMode`` on tiny real architectures.
"""

from __future__ import annotations


def qwen_vision_flops(vc, grids: list[tuple[int, int, int]]) -> dict:
    """Matmul FLOPs (2 per multiply-add) of a Qwen2.5-VL vision tower + merger on videos with patch
    grids ``(t, h, w)`` (``video_grid_thw`` rows), from the vision config alone.

    Counts the patch embedding (a conv = one matmul per patch), per block the fused QKV and output
    projections and the gated MLP, the attention (QK^T and AV: ``4 d L^2`` per segment) inside
    windows of ``window_size`` pixels in the window blocks and over each temporal grid in
    ``fullatt_block_indexes``, and the merger MLP. Returns ``{"linear", "attention", "total"}``.
    """
    d, inter, depth = vc.hidden_size, vc.intermediate_size, vc.depth
    m, p, tp = vc.spatial_merge_size, vc.patch_size, vc.temporal_patch_size
    channels = getattr(vc, "in_channels", 3)
    out = getattr(vc, "out_hidden_size", d)
    n_full = len(set(vc.fullatt_block_indexes) & set(range(depth)))
    ws = vc.window_size // m // p  # window side in merged tokens
    patches = win_sq = full_sq = 0
    for t, h, w in grids:
        patches += t * h * w
        full_sq += t * (h * w) ** 2
        hm, wm = h // m, w // m
        # windows tile the merged grid from the top left; the last row and column may be partial
        rows = [ws] * (hm // ws) + ([hm % ws] if hm % ws else [])
        cols = [ws] * (wm // ws) + ([wm % ws] if wm % ws else [])
        win_sq += t * sum((r * c * m * m) ** 2 for r in rows for c in cols)
    embed = 2 * patches * channels * tp * p * p * d
    blocks = depth * 2 * patches * (4 * d * d + 3 * d * inter)
    merged, wide = patches // (m * m), d * m * m
    merger = 2 * merged * (wide * wide + wide * out)
    attention = 4 * d * (n_full * full_sq + (depth - n_full) * win_sq)
    linear = embed + blocks + merger
    return {"linear": linear, "attention": attention, "total": linear + attention}


def siglip_vision_flops(vc, frames: int) -> dict:
    """Matmul FLOPs of a SigLIP vision tower on ``frames`` images of ``image_size``: patch embedding,
    per layer Q/K/V/O and the two-layer MLP, full attention over each image; with
    ``vision_use_head`` also the attention-pooling head (one probe query per image, its MLP)."""
    d, inter, layers = vc.hidden_size, vc.intermediate_size, vc.num_hidden_layers
    p, channels = vc.patch_size, getattr(vc, "num_channels", 3)
    tokens = (vc.image_size // p) ** 2
    embed = 2 * frames * tokens * channels * p * p * d
    linear = embed + layers * 2 * frames * tokens * (4 * d * d + 2 * d * inter)
    attention = layers * 4 * d * frames * tokens ** 2
    if getattr(vc, "vision_use_head", True):
        # probe query, keys + values of every patch, output projection, MLP on the pooled token
        linear += 2 * frames * (d * d + tokens * 2 * d * d + d * d + 2 * d * inter)
        attention += 4 * d * frames * tokens
    return {"linear": linear, "attention": attention, "total": linear + attention}


def _head_dim(tc) -> int:
    return getattr(tc, "head_dim", None) or tc.hidden_size // tc.num_attention_heads


def llm_linear_params(tc) -> int:
    """Weights of the decoder layers' linear maps (Q, K, V, O, gated MLP) of a text config: the
    ``params`` of ``2 * params * tokens`` (embeddings and the LM head are not run in prefill)."""
    h, heads, kv, dh = tc.hidden_size, tc.num_attention_heads, tc.num_key_value_heads, _head_dim(tc)
    per_layer = h * heads * dh + 2 * h * kv * dh + heads * dh * h + 3 * h * tc.intermediate_size
    return tc.num_hidden_layers * per_layer


def llm_flops(tc, calls: list[tuple[int, int]], causal: bool = True) -> dict:
    """Matmul FLOPs of decoder forwards ``calls`` = ``[(new tokens n, cached tokens c), ...]``:
    ``2 * params * n`` plus attention ``4 * heads * head_dim`` per (query, key) pair per layer; a
    causal query ``j`` sees ``c + j + 1`` keys (``causal=False``: all ``c + n``, what a kernel
    computing the full rectangle does)."""
    params = llm_linear_params(tc)
    linear = sum(2 * params * n for n, _ in calls)
    pairs = sum(n * c + (n * (n + 1) // 2 if causal else n * n) for n, c in calls)
    attention = 4 * tc.num_attention_heads * _head_dim(tc) * tc.num_hidden_layers * pairs
    return {"linear": linear, "attention": attention, "total": linear + attention,
            "tokens": sum(n for n, _ in calls)}
