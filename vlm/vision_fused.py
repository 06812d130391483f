"""Qwen2.5-VL vision blocks run on fused kernels at inference (Bai et al., 2025, for the tower).

A block of the 7B tower on a 16-frame chunk spends about two thirds of its GPU time outside its
matrix products (``bench/results/ingest_profile_NVIDIA_H200.txt``): RMSNorm, the rotary embedding and
the SwiGLU gate each run as chains of PyTorch elementwise kernels with float32 intermediates, plus a
copy per cast. :func:`fuse_vision_blocks` gives each block a forward built from one kernel per step
(:mod:`vidqa.kernels.rms_norm`, :mod:`vidqa.kernels.rotary`, :mod:`vidqa.kernels.swiglu`) around the
block's own ``Linear`` layers and :func:`~vidqa.vlm.vision_attention.segment_sdpa`:

    h = RMSNorm1(x);  q, k, v = qkv(h);  q, k = rope(q, k)
    x = x + proj(attention within segments(q, k, v))      # fused with RMSNorm2 below
    y = x + down(silu(gate(RMSNorm2(x))) * up(RMSNorm2(x)))

The kernels keep transformers' roundings (``naive.py`` of each equals the stock functions exactly,
and the Triton kernels differ by float32 summation order), so the tower computes what it did. The
fused forward runs only where it can: without autograd (training keeps the stock block) and inside
:func:`~vidqa.vlm.vision_attention.packed_vision_attention`; anywhere else the stock forward runs.
"""

from __future__ import annotations

import types

import torch

from vidqa.kernels.rms_norm import add_rms_norm
from vidqa.kernels.rotary import rotary_qk
from vidqa.kernels.swiglu import silu_mul
from vidqa.vlm.vision_attention import is_packed, segment_sdpa


def _fusable(block: torch.nn.Module, config) -> bool:
    """A Qwen2.5-VL block: RMSNorms, a fused ``qkv`` projection, a SiLU-gated MLP."""
    norms_ok = all(hasattr(getattr(block, n, None), "variance_epsilon") for n in ("norm1", "norm2"))
    attn, mlp = getattr(block, "attn", None), getattr(block, "mlp", None)
    attn_ok = all(hasattr(attn, n) for n in ("qkv", "proj", "num_heads", "scaling"))
    mlp_ok = all(hasattr(mlp, n) for n in ("gate_proj", "up_proj", "down_proj"))
    return norms_ok and attn_ok and mlp_ok and getattr(config, "hidden_act", None) == "silu"


def _fused_forward(self, hidden_states: torch.Tensor, cu_seqlens: torch.Tensor, position_embeddings=None,
                   **kwargs) -> torch.Tensor:
    """``hidden_states`` ``[N, C]`` (window order), ``cu_seqlens`` ``[S + 1]`` attention segments,
    ``position_embeddings`` ``(cos, sin)`` ``[N, head_dim]`` -> ``[N, C]``."""
    if torch.is_grad_enabled() or position_embeddings is None or not is_packed(self.attn.config):
        return type(self).forward(self, hidden_states, cu_seqlens=cu_seqlens,
                                  position_embeddings=position_embeddings, **kwargs)
    attn, mlp = self.attn, self.mlp
    n = hidden_states.shape[0]
    cos, sin = position_embeddings
    _, h = add_rms_norm(hidden_states, None, self.norm1.weight, self.norm1.variance_epsilon)
    qkv = attn.qkv(h).view(n, 3, attn.num_heads, -1)  # [N, 3, H, D]
    q, k = rotary_qk(qkv[:, 0], qkv[:, 1], cos, sin)
    out = attn.proj(segment_sdpa(q, k, qkv[:, 2], cu_seqlens, attn.scaling).reshape(n, -1))
    x, h = add_rms_norm(hidden_states, out, self.norm2.weight, self.norm2.variance_epsilon)
    return x + mlp.down_proj(silu_mul(mlp.gate_proj(h), mlp.up_proj(h)))


def fuse_vision_blocks(visual: torch.nn.Module) -> int:
    """Gives every fusable block of ``visual`` the fused forward (idempotent). Returns how many have it."""
    count = 0
    for block in getattr(visual, "blocks", []):
        if not _fusable(block, visual.config):
            continue
        if block.__dict__.get("forward") is None:
            block.forward = types.MethodType(_fused_forward, block)
        count += 1
    return count
