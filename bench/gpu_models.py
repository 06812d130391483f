"""Real-size VLM architectures with random weights for the GPU benchmark: ``(model, processor)``
from a published config (a JSON spec in ``bench/configs``), or the family's tiny random model.

Weights change neither speed nor memory, so random ones measure what the checkpoint would. The
tokenizer is the byte-level one of the tiny models (no download), with the family's special tokens.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch


def _special_ids(tok, specials: list[str]) -> dict[str, int]:
    return {t: tok.convert_tokens_to_ids(t) for t in specials}


def _text_config(spec: dict, ids: dict[str, int]) -> dict:
    """The spec's text config with the byte tokenizer's BOS/EOS ids (the published ones index another vocabulary)."""
    return {**spec["text_config"], "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"]}


def _instantiate(cls, config, device: str, dtype: torch.dtype):
    """The model with random weights created directly on ``device`` in ``dtype`` (no host copy)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = cls(config).eval()
    finally:
        torch.set_default_dtype(previous)
    model.generation_config.eos_token_id = [config.get_text_config().eos_token_id]
    return model


def build_qwen(spec: dict, frame_pixels: int, device: str, dtype: torch.dtype):
    """Qwen2.5-VL ``(model, processor)`` from a ``{"text_config", "vision_config"}`` spec with random
    weights, the byte tokenizer of the tiny models and frames capped at ``frame_pixels``."""
    from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor,
                              Qwen2VLImageProcessor, Qwen2VLVideoProcessor)

    from vidqa.vlm.tiny import QWEN_CHAT_TEMPLATE, QWEN_SPECIALS, _qwen_tokenizer

    tok = _qwen_tokenizer()
    ids = _special_ids(tok, QWEN_SPECIALS)
    config = Qwen2_5_VLConfig(
        text_config=_text_config(spec, ids),
        vision_config=spec["vision_config"], image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=spec["text_config"].get("tie_word_embeddings", False))
    model = _instantiate(Qwen2_5_VLForConditionalGeneration, config, device, dtype)
    vc = spec["vision_config"]
    factor = vc["patch_size"] * vc["spatial_merge_size"]
    size = {"shortest_edge": factor * factor, "longest_edge": frame_pixels}
    common = dict(size=size, patch_size=vc["patch_size"], merge_size=vc["spatial_merge_size"],
                  temporal_patch_size=vc["temporal_patch_size"])
    processor = Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(**common),
                                    video_processor=Qwen2VLVideoProcessor(**common), tokenizer=tok,
                                    chat_template=QWEN_CHAT_TEMPLATE)
    return model, processor


def build_llava(spec: dict, device: str, dtype: torch.dtype):
    """LLaVA-OneVision ``(model, processor)`` from a spec with ``text_config`` (Qwen2),
    ``vision_config`` (SigLIP) and the top-level LlavaOnevisionConfig fields; random weights."""
    from transformers import (LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration,
                              LlavaOnevisionImageProcessor, LlavaOnevisionProcessor, LlavaOnevisionVideoProcessor)

    from vidqa.vlm.tiny import LLAVA_CHAT_TEMPLATE, LLAVA_SPECIALS, byte_tokenizer

    tok = byte_tokenizer(LLAVA_SPECIALS, LLAVA_CHAT_TEMPLATE,
                         extra_special_tokens={"image_token": "<image>", "video_token": "<video>"})
    ids = _special_ids(tok, LLAVA_SPECIALS)
    top = {k: v for k, v in spec.items() if k not in ("text_config", "vision_config") and not k.startswith("_")}
    config = LlavaOnevisionConfig(
        text_config=_text_config(spec, ids),
        vision_config=spec["vision_config"], image_token_index=ids["<image>"], video_token_index=ids["<video>"],
        **top)
    model = _instantiate(LlavaOnevisionForConditionalGeneration, config, device, dtype)
    vc = spec["vision_config"]
    side = vc["image_size"]
    common = dict(size={"height": side, "width": side}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    pinpoints = top.get("image_grid_pinpoints") or [[side, side]]
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(image_grid_pinpoints=pinpoints, **common),
        video_processor=LlavaOnevisionVideoProcessor(**common), tokenizer=tok, chat_template=LLAVA_CHAT_TEMPLATE,
        num_image_tokens=(side // vc["patch_size"]) ** 2,
        vision_feature_select_strategy=top.get("vision_feature_select_strategy", "full"))
    return model, processor


def build(config_path: str | None, family: str, frame_pixels: int, device: str, dtype: torch.dtype):
    """``(model, processor)``: the family's tiny random model when ``config_path`` is None, else the
    architecture of the JSON spec at ``config_path`` with random weights."""
    if config_path is None:
        from vidqa.vlm.tiny import tiny_random

        model, processor = tiny_random(family)
        return model.to(device), processor
    spec = json.loads(Path(config_path).read_text())
    if family == "qwen2_5_vl":
        return build_qwen(spec, frame_pixels, device, dtype)
    if family == "llava_onevision":
        return build_llava(spec, device, dtype)
    raise ValueError(f"unknown family {family!r}; choose qwen2_5_vl or llava_onevision")


def vision_module(model, family: str) -> torch.nn.Module:
    """The vision tower whose forward is timed as the "vision tower" stage (Qwen: with its merger)."""
    return model.model.visual if family == "qwen2_5_vl" else model.model.vision_tower


class StockVision:
    """Keeps the native path on transformers' own vision tower.

    vidqa's Qwen adapter rewrites the tower in place at its first encode (``vlm/vision_fast.py``:
    MLP padded to a multiple of 64 channels, patch embedding as a matmul; ``vlm/vision_fused.py``:
    blocks on fused kernels); the native baseline shares the model and must not get those for free.
    Made right after the model is built, this holds host copies of the stock MLP modules; ``with
    stock:`` swaps them onto the GPU (the rewritten ones go to the host meanwhile) and drops the
    matmul patch embedding and the fused block forwards, and restores vidqa's on exit. The swaps happen outside every timed region."""

    def __init__(self, model, family: str):
        self.visual = model.model.visual if family == "qwen2_5_vl" else None
        self.stock = None
        if self.visual is not None and hasattr(self.visual, "blocks"):
            self.stock = [{n: copy.deepcopy(getattr(b.mlp, n)).cpu() for n in ("gate_proj", "up_proj", "down_proj")
                           if hasattr(b.mlp, n)} for b in self.visual.blocks]
            self.width = getattr(self.visual.config, "intermediate_size", None)

    def __enter__(self):
        if self.stock is None:
            return self
        device = next(self.visual.parameters()).device
        self.saved = []
        for block, mods in zip(self.visual.blocks, self.stock):
            self.saved.append({n: getattr(block.mlp, n).cpu() for n in mods})
            for n, m in mods.items():
                setattr(block.mlp, n, m.to(device))
        self.fast_width = getattr(self.visual.config, "intermediate_size", None)
        if self.width is not None:
            self.visual.config.intermediate_size = self.width
        pe = self.visual.patch_embed
        self.pe_forward = pe.__dict__.pop("forward", None)
        self.block_forwards = [b.__dict__.pop("forward", None) for b in self.visual.blocks]
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return self

    def __exit__(self, *exc):
        if self.stock is None:
            return
        device = next(self.visual.parameters()).device
        for block, mods, saved in zip(self.visual.blocks, self.stock, self.saved):
            for n in mods:
                mods[n] = getattr(block.mlp, n).cpu()
                setattr(block.mlp, n, saved[n].to(device))
        if self.fast_width is not None:
            self.visual.config.intermediate_size = self.fast_width
        if self.pe_forward is not None:
            self.visual.patch_embed.forward = self.pe_forward
        for block, forward in zip(self.visual.blocks, self.block_forwards):
            if forward is not None:
                block.forward = forward
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
