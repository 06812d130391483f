"""Moving KV between per-layer tensors and transformers' ``DynamicCache``.

Only ``DynamicCache`` is used, mutated through ``cache.layers[i].keys/values`` (the API that holds
across transformers 5.x). Layers have the same length unless in-LLM pruning asked otherwise, in
which case the model must attend through :func:`vidqa.memory.attention.bottom_right_attention` (the
stock mask is built from layer 0's length).
"""

from __future__ import annotations

import torch
from transformers import DynamicCache


def cache_from(keys, values) -> DynamicCache:
    """A cache holding ``keys``/``values`` ``[L, Hkv, n, Dh]`` (batch of one); lists of per-layer
    ``[Hkv, n_l, Dh]`` give layers of different lengths (attend with :mod:`.attention`)."""
    cache = DynamicCache()
    for layer in range(len(keys)):
        cache.update(keys[layer][None].contiguous(), values[layer][None].contiguous(), layer)
    return cache


def cache_tail(cache: DynamicCache, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The last ``n`` entries of every layer as ``[L, Hkv, n, Dh]`` keys and values."""
    keys = torch.stack([layer.keys[0, :, -n:] for layer in cache.layers])
    values = torch.stack([layer.values[0, :, -n:] for layer in cache.layers])
    return keys, values


def cache_length(cache: DynamicCache) -> int:
    return int(cache.layers[0].keys.shape[-2]) if cache.layers else 0
