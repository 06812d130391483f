"""The language model's decoder stack on fused kernels, for vidqa's own forwards.

A 2,016-token chunk prefill of the 7B decoder (Qwen2, as in Qwen2.5-VL and LLaVA-OneVision) spent
about a quarter of its GPU time outside matrix products and attention
(``bench/results/ingest_profile_NVIDIA_H200.txt``): each RMSNorm is a chain of float32 casts, a
power, a mean, a reciprocal square root and two products; the rotary embedding a dozen products,
negations and concatenations over query and key; the SwiGLU gate two more kernels; and the host
launched ~40 kernels per layer, so a one-token decode step is bound by the launches, not the GPU.
:func:`fuse_language_model` gives the decoder a forward with one kernel per step
(:mod:`vidqa.kernels.rms_norm`, :mod:`vidqa.kernels.rotary`, :mod:`vidqa.kernels.swiglu`) around
the layers' own ``Linear`` modules, the model's own ``rotary_emb`` and vidqa's attention
(:func:`~vidqa.memory.attention.bottom_right_sdpa`)::

    x, h = x + delta, RMSNorm_in(x + delta)          # one kernel (delta: the previous block's output)
    q, k, v = q_proj(h), k_proj(h), v_proj(h);  q, k = rope(q, k);  k, v = cache.update(k, v)
    delta = o_proj(attention(q, k, v))
    x, h = x + delta, RMSNorm_post(x + delta)        # one kernel
    delta = down(silu(gate(h)) * up(h))              # the gate in one kernel

The norms and the gate keep transformers' roundings exactly (``naive.py`` of each kernel equals the
stock functions); the rotary embedding is computed in float32 and rounded once, where transformers
multiplies in the model's dtype (in float32 models the two are the same).

The fused forward runs only inside :func:`~vidqa.memory.attention.bottom_right_attention` (so
``VLMAdapter.forward`` uses it and a native ``generate`` on the same model keeps transformers' own
path), without autograd (training keeps the stock layers), and when no hook watches a layer or its
attention (the query capture of retrieval, the training losses): anywhere else the stock forward
runs. Hooks on the decoder itself (the benchmark's stage timers) still fire.
"""

from __future__ import annotations

import types

import torch
from transformers.modeling_outputs import BaseModelOutputWithPast

from vidqa.kernels.rms_norm import add_rms_norm
from vidqa.kernels.rotary import rotary_qk
from vidqa.kernels.swiglu import silu_mul
from vidqa.vlm.hooks import is_watched


def _norm_ok(norm) -> bool:
    return hasattr(norm, "weight") and hasattr(norm, "variance_epsilon")


def _layer_fusable(layer: torch.nn.Module) -> bool:
    """A pre-norm decoder layer with RMSNorms, separate q/k/v/o projections and a SiLU-gated MLP."""
    attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
    attn_ok = all(hasattr(attn, n) for n in ("q_proj", "k_proj", "v_proj", "o_proj", "head_dim", "scaling",
                                             "layer_idx"))
    attn_ok = attn_ok and getattr(attn, "sliding_window", None) is None
    mlp_ok = all(hasattr(mlp, n) for n in ("gate_proj", "up_proj", "down_proj"))
    norms_ok = all(_norm_ok(getattr(layer, n, None)) for n in ("input_layernorm", "post_attention_layernorm"))
    return norms_ok and attn_ok and mlp_ok


def is_fusable(language_model: torch.nn.Module) -> bool:
    """Whether every layer of ``language_model`` (a transformers ``Qwen2Model``-like decoder) and its
    final norm fit the fused forward."""
    layers = getattr(language_model, "layers", None)
    silu = getattr(getattr(language_model, "config", None), "hidden_act", None) == "silu"
    return (silu and layers is not None and len(layers) > 0 and all(_layer_fusable(layer) for layer in layers)
            and _norm_ok(getattr(language_model, "norm", None)) and hasattr(language_model, "rotary_emb"))


def _can_fuse(lm, inputs_embeds, kwargs) -> bool:
    from vidqa.memory.attention import NAME

    if torch.is_grad_enabled() or inputs_embeds is None or inputs_embeds.shape[0] != 1:
        return False
    if lm.config._attn_implementation != NAME:
        return False
    if any(kwargs.get(k) for k in ("output_attentions", "output_hidden_states")):
        return False
    if torch.nn.modules.module._global_forward_hooks or torch.nn.modules.module._global_forward_pre_hooks:
        return False
    return not any(is_watched(layer) or is_watched(layer.self_attn) for layer in lm.layers)


def decoder_forward(lm, embeds: torch.Tensor, position_ids: torch.Tensor, cache) -> torch.Tensor:
    """The decoder ``lm`` on ``embeds`` ``[L, D]`` at ``position_ids`` (``[3, 1, L]`` M-RoPE or
    ``[1, L]``), appending every layer's rotated keys and values to ``cache`` (a transformers
    ``Cache``, or None). Returns the final-normed hidden states ``[L, D]``."""
    from vidqa.memory.attention import bottom_right_sdpa

    n = embeds.shape[0]
    cos, sin = lm.rotary_emb(embeds[None], position_ids)  # [1, L, Dh], M-RoPE sections composed
    if cos.dim() != 3:
        raise ValueError(f"rotary_emb returned cos of shape {tuple(cos.shape)}; expected [1, L, head_dim]")
    cos, sin = cos[0], sin[0]
    x, delta = embeds, None
    for layer in lm.layers:
        attn, mlp = layer.self_attn, layer.mlp
        x, h = add_rms_norm(x, delta, layer.input_layernorm.weight, layer.input_layernorm.variance_epsilon)
        q = attn.q_proj(h).view(n, -1, attn.head_dim)  # [L, Hq, Dh]
        k = attn.k_proj(h).view(n, -1, attn.head_dim)  # [L, Hkv, Dh]
        v = attn.v_proj(h).view(n, -1, attn.head_dim)
        q, k = rotary_qk(q, k, cos, sin)
        # [1, H, L, Dh] views, the layout transformers' attention stores in the cache
        q, k, v = (t.transpose(0, 1)[None] for t in (q, k, v))
        if cache is not None:
            k, v = cache.update(k, v, attn.layer_idx)
        out, _ = bottom_right_sdpa(attn, q, k, v, scaling=attn.scaling)  # [1, L, Hq, Dh]
        delta = attn.o_proj(out.reshape(n, -1))
        norm = layer.post_attention_layernorm
        x, h = add_rms_norm(x, delta, norm.weight, norm.variance_epsilon)
        delta = mlp.down_proj(silu_mul(mlp.gate_proj(h), mlp.up_proj(h)))
    _, y = add_rms_norm(x, delta, lm.norm.weight, lm.norm.variance_epsilon)
    return y


def _fused_forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                   inputs_embeds=None, use_cache=None, **kwargs):
    """The decoder's forward: fused (:func:`decoder_forward`) where :func:`_can_fuse` allows, the stock
    one otherwise, with the stock output type (``last_hidden_state [1, L, D]``, ``past_key_values``)."""
    if position_ids is None or not _can_fuse(self, inputs_embeds, kwargs):
        return type(self).forward(self, input_ids=input_ids, attention_mask=attention_mask,
                                  position_ids=position_ids, past_key_values=past_key_values,
                                  inputs_embeds=inputs_embeds, use_cache=use_cache, **kwargs)
    cache = past_key_values if use_cache is not False else None
    hidden = decoder_forward(self, inputs_embeds[0], position_ids, cache)
    return BaseModelOutputWithPast(last_hidden_state=hidden[None], past_key_values=cache)


def fuse_language_model(language_model: torch.nn.Module) -> bool:
    """Gives ``language_model`` the fused forward when it fits (idempotent). Returns whether it has it."""
    if not is_fusable(language_model):
        return False
    if language_model.__dict__.get("forward") is None:
        language_model.forward = types.MethodType(_fused_forward, language_model)
    return True
