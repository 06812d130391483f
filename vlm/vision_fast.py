"""Exact rewrites of two slow pieces of the Qwen2-VL / Qwen2.5-VL vision tower (Bai et al., 2025).

Both were found with ``bench/ingest_profile.py`` on an H200 (7B tower, 16 frames of 588x336 per
call), and neither changes what the tower computes:

* **MLP width.** The 7B tower's MLP is 3,420 wide. A bf16 row of 3,420 values is not a multiple of
  16 bytes, so cuBLAS cannot use its Hopper kernels for the three MLP products and falls back to
  Ampere-generation ones (``cutlass_80_tensorop_bf16_s16816gemm``): 30 of the 69 ms of GPU time per
  call. :func:`pad_mlp_width` widens ``gate``/``up`` with zero rows (and zero bias) and ``down``
  with zero columns up to a multiple of 64: the extra channels are ``silu(0) * 0 = 0`` and multiply
  zero weights, so outputs are unchanged, and ``vision_config.intermediate_size`` follows, so the
  model stays self-consistent (a ``save_pretrained`` of it loads back as the same function).
* **Patch embedding.** It is a ``Conv3d`` whose kernel equals its stride, i.e. one matrix product of
  the flattened ``(channel, time, row, column)`` patches with the reshaped kernel; cuDNN's 3-D
  convolution took 2.0 ms per call against 0.1 ms for that product. :func:`patch_embed_as_matmul`
  makes the module compute the product (same weights, same parameter).

:func:`speed_up_vision` applies both once per tower (idempotent), with the fused block forward of
``vision_fused.py``; the Qwen adapter calls it at its first ``encode``, with the MLP padding only for
a tower on a GPU (on a CPU it only costs FLOPs).
"""

from __future__ import annotations

import types

import torch

from vidqa.vlm.vision_fused import fuse_vision_blocks

WIDTH_MULTIPLE = 64


def _padded_linear(linear: torch.nn.Linear, out_features: int, in_features: int) -> torch.nn.Linear:
    """``linear`` with zero rows/columns appended up to ``[out_features, in_features]``."""
    w = linear.weight
    new = torch.nn.Linear(in_features, out_features, bias=linear.bias is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[: w.shape[0], : w.shape[1]] = w
        if linear.bias is not None:
            new.bias.zero_()
            new.bias[: linear.bias.shape[0]] = linear.bias
    new.requires_grad_(w.requires_grad)
    return new


def pad_mlp_width(visual: torch.nn.Module, multiple: int = WIDTH_MULTIPLE) -> bool:
    """Widens every block's gated MLP (``gate_proj``/``up_proj``/``down_proj``) of ``visual`` to a
    multiple of ``multiple`` channels. Returns whether anything changed."""
    changed = False
    for block in getattr(visual, "blocks", []):
        mlp = block.mlp
        if not all(hasattr(mlp, n) for n in ("gate_proj", "up_proj", "down_proj")):
            continue  # Qwen2-VL's plain fc1/fc2 MLP: nothing gated to pad
        width = mlp.gate_proj.out_features
        target = -(-width // multiple) * multiple
        if target == width:
            continue
        hidden = mlp.gate_proj.in_features
        mlp.gate_proj = _padded_linear(mlp.gate_proj, target, hidden)
        mlp.up_proj = _padded_linear(mlp.up_proj, target, hidden)
        mlp.down_proj = _padded_linear(mlp.down_proj, mlp.down_proj.out_features, target)
        if hasattr(mlp, "intermediate_size"):
            mlp.intermediate_size = target
        changed = True
    if changed and hasattr(visual.config, "intermediate_size"):
        visual.config.intermediate_size = -(-visual.config.intermediate_size // multiple) * multiple
    return changed


def _patch_embed_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
    """``[N, C * T * P * P]`` flattened patches (the processor's layout) -> ``[N, embed_dim]``."""
    w = self.proj.weight  # [E, C, T, P, P]
    x = hidden_states.reshape(-1, w[0].numel()).to(w.dtype)
    out = x @ w.reshape(w.shape[0], -1).t()
    if self.proj.bias is not None:
        out = out + self.proj.bias
    return out


def patch_embed_as_matmul(visual: torch.nn.Module) -> bool:
    """Makes ``visual.patch_embed`` (a Conv3d with kernel == stride) compute its product as a matmul."""
    pe = getattr(visual, "patch_embed", None)
    conv = getattr(pe, "proj", None)
    if not isinstance(conv, torch.nn.Conv3d) or tuple(conv.kernel_size) != tuple(conv.stride) or any(conv.padding):
        return False
    if pe.__dict__.get("forward") is None:
        pe.forward = types.MethodType(_patch_embed_forward, pe)
    return True


def speed_up_vision(visual: torch.nn.Module, pad: bool = True) -> None:
    """Both rewrites and the fused block forward (``vision_fused.py``), once per tower (``pad=False``
    keeps the MLP width)."""
    if getattr(visual, "_vidqa_fast", False):
        return
    patch_embed_as_matmul(visual)
    if pad:
        pad_mlp_width(visual)
    fuse_vision_blocks(visual)
    visual._vidqa_fast = True
