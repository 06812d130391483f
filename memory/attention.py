"""The language model's attention in every vidqa forward: bottom-right causal SDPA.

Every forward vidqa runs -- a chunk prefilled after the sinks, recurrent memory and window, a
question after the recalled blocks, one decoded token -- is a batch of one query span appended to a
cache: query ``i`` of ``q`` sees key ``j`` of ``k`` iff ``j <= i + k - q``. transformers instead builds
an explicit mask from layer 0's cache length for each call, and hands it to SDPA. Two costs follow:

* In-LLM pruning (FastV, Chen et al. 2024; PyramidDrop, Xing et al. 2024) keeps fewer visual KV
  entries in deeper layers, so layer 0's mask is wrong for the others (shared TRANSFORMERS_NOTES:
  default SDPA is off by 5.7e-2 or raises).
* On a GPU an explicit mask rules out FlashAttention, and PyTorch's default choice, cuDNN attention,
  builds an execution plan for each new key length: with a key length that changes every chunk and
  every decoded token, that was ~2 ms of host time per layer and call (profiled on an H200 with
  ``bench/ingest_profile.py``), i.e. the GPU idled most of the prefill.

:func:`bottom_right_sdpa` takes each layer's own key length and expresses the mask as
``torch.nn.attention.bias.causal_lower_right`` (FlashAttention's own convention, no mask tensor), or
no mask at all for a single query; cuDNN is left out on CUDA. :func:`bottom_right_attention` switches
a model to it for the duration of a ``with`` block (``VLMAdapter.forward`` always does), restoring
the previous implementation afterwards, so that other users of the same model (the native
``generate`` of the benchmark) keep transformers' own path. Batch size 1, no padding (vidqa's case).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.bias import causal_lower_right

NAME = "vidqa_sdpa"
_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def bottom_right_sdpa(module, query, key, value, attention_mask=None, scaling=None, dropout=0.0, **kwargs):
    """``query [1, Hq, q, D]`` over ``key/value [1, Hkv, k, D]`` (``Hq`` a multiple of ``Hkv``);
    query ``i`` sees keys ``j <= i + k - q``. Returns ``([1, q, Hq, D], None)`` as transformers'
    attention functions do; ``attention_mask`` is ignored (the function masks itself)."""
    q_len, k_len = query.shape[-2], key.shape[-2]
    groups = query.shape[1] // key.shape[1]
    if q_len == 1 or q_len == k_len:  # everything, or plain (square) causal: no mask object needed
        mask = dict(is_causal=q_len > 1, enable_gqa=groups > 1)
    else:
        if groups > 1:  # the lower-right bias dispatches to kernels without a GQA switch
            key, value = key.repeat_interleave(groups, 1), value.repeat_interleave(groups, 1)
        mask = dict(attn_mask=causal_lower_right(q_len, k_len))
    with sdpa_kernel(_BACKENDS):
        out = torch.nn.functional.scaled_dot_product_attention(query, key, value, scale=scaling, **mask)
    return out.transpose(1, 2).contiguous(), None


_registered: set[str] = set()


def _register(name: str, function) -> None:
    """Registers ``function`` as transformers attention ``name``, with no mask of transformers' own
    (the function masks itself); once per name."""
    if name in _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(name, function)
    AttentionMaskInterface.register(name, lambda *args, **kwargs: None)
    _registered.add(name)


@contextmanager
def attention_implementation(adapter, name: str, function):
    """Within the block, ``adapter``'s language model attends with ``function`` (registered as
    ``name``); the previous implementation is restored afterwards, so that other users of the same
    model keep theirs."""
    _register(name, function)
    configs = {id(c): c for c in (adapter.model.config, adapter.text_config, adapter.language_model.config)}
    previous = {k: c._attn_implementation for k, c in configs.items()}
    try:
        for c in configs.values():
            c._attn_implementation = name
        yield
    finally:
        for k, c in configs.items():
            c._attn_implementation = previous[k]


def bottom_right_attention(adapter):
    """Within the ``with`` block, ``adapter``'s language model attends with :func:`bottom_right_sdpa`."""
    return attention_implementation(adapter, NAME, bottom_right_sdpa)
