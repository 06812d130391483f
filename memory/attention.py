"""Attention over a cache whose layers hold different numbers of entries.

In-LLM pruning (FastV, Chen et al. 2024; PyramidDrop, Xing et al. 2024) keeps fewer visual KV
entries in deeper layers. transformers builds one causal mask from layer 0's cache length, which is
wrong for the other layers (shared TRANSFORMERS_NOTES: default SDPA is off by 5.7e-2 or raises).
:func:`uneven_attention` registers ``vidqa_sdpa`` -- SDPA with a bottom-right causal mask built from
each layer's own key length -- and switches the model to it for the duration of a ``with`` block,
restoring the previous implementation afterwards. Batch size 1, no padding (vidqa's case).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

NAME = "vidqa_sdpa"
_registered = False


def uneven_sdpa(module, query, key, value, attention_mask=None, scaling=None, dropout=0.0, **kwargs):
    """``query [1, Hq, q, D]`` over ``key/value [1, Hkv, k, D]``; query ``i`` sees keys ``j <= i + k - q``."""
    q_len, k_len = query.shape[-2], key.shape[-2]
    groups = query.shape[1] // key.shape[1]
    if groups > 1:
        key, value = key.repeat_interleave(groups, 1), value.repeat_interleave(groups, 1)
    mask = torch.ones(q_len, k_len, dtype=torch.bool, device=query.device).tril(k_len - q_len)
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scaling)
    return out.transpose(1, 2).contiguous(), None


def _register() -> None:
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, uneven_sdpa)
    AttentionMaskInterface.register(NAME, lambda *args, **kwargs: None)  # the function masks itself
    _registered = True


@contextmanager
def uneven_attention(adapter):
    """Within the block, ``adapter``'s language model attends with :func:`uneven_sdpa`."""
    _register()
    configs = {id(c): c for c in (adapter.model.config, adapter.text_config, adapter.language_model.config)}
    previous = {k: c._attn_implementation for k, c in configs.items()}
    try:
        for c in configs.values():
            c._attn_implementation = NAME
        yield
    finally:
        for k, c in configs.items():
            c._attn_implementation = previous[k]
