"""Tiny random VLMs built in memory from configs: real architectures, no download.

``tiny_random("qwen2_5_vl")`` and ``tiny_random("llava_onevision")`` return ``(model, processor)``
pairs whose model classes, processors and chat templates are the real transformers ones, with
a few thousand random parameters. They are reachable from every front door as
``--model tiny-random/<family>``, so smoke runs and tests need no network.

The tokenizer is byte-level (every UTF-8 byte is one token) plus the family's special tokens, so any
text round-trips; it is built with the ``tokenizers`` library.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

BYTE_VOCAB = 256
QWEN_SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|image_pad|>", "<|video_pad|>",
]
LLAVA_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]

QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'video' %}<video>\n"
    "{% elif content['type'] == 'image' %}<image>\n"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def byte_tokenizer(specials: list[str], chat_template: str, **extra) -> PreTrainedTokenizerFast:
    """A byte-level tokenizer: ids 0..255 are bytes, specials follow from 256 on."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    assert len(vocab) == BYTE_VOCAB
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        additional_special_tokens=specials, **extra,
    )
    tok.chat_template = chat_template
    return tok


def _qwen_tokenizer() -> PreTrainedTokenizerFast:
    return byte_tokenizer(QWEN_SPECIALS, QWEN_CHAT_TEMPLATE)


def tiny_qwen2_5_vl(seed: int = 0):
    """Qwen2.5-VL with 2 LLM layers of width 64 and a 2-layer vision tower with 4-pixel patches."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    tok = _qwen_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    vocab_size = len(tok)
    text_config = dict(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32768,
        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
        rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]}, rope_theta=10000.0,
    )
    vision_config = dict(
        depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=4,
        spatial_merge_size=2, temporal_patch_size=2, tokens_per_second=2, window_size=16,
        fullatt_block_indexes=[1], out_hidden_size=64,
    )
    config = Qwen2_5_VLConfig(
        text_config=text_config, vision_config=vision_config,
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    pixels = dict(patch_size=4, merge_size=2, temporal_patch_size=2)
    # 8x8-pixel merged tokens; frames up to 64x64 pixels -> at most 64 tokens per temporal grid.
    size = {"shortest_edge": 8 * 8, "longest_edge": 64 * 64}
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=size, **pixels),
        video_processor=Qwen2VLVideoProcessor(size=size, **pixels),
        tokenizer=tok, chat_template=QWEN_CHAT_TEMPLATE,
    )
    return model, processor


def tiny_llava_onevision(seed: int = 0):
    """LLaVA-OneVision with a 2-layer SigLIP on 16-pixel images (4 tokens per frame) and a 2-layer Qwen2."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
    )

    tok = byte_tokenizer(LLAVA_SPECIALS, LLAVA_CHAT_TEMPLATE, extra_special_tokens={
        "image_token": "<image>", "video_token": "<video>"})
    ids = {t: tok.convert_tokens_to_ids(t) for t in LLAVA_SPECIALS}
    text_config = dict(
        model_type="qwen2", vocab_size=len(tok), hidden_size=64, intermediate_size=128,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=32768, rope_theta=10000.0,
        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
    )
    vision_config = dict(
        model_type="siglip_vision_model", hidden_size=32, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=2, image_size=16, patch_size=4,
    )
    config = LlavaOnevisionConfig(
        text_config=text_config, vision_config=vision_config,
        image_token_index=ids["<image>"], video_token_index=ids["<video>"],
        vision_feature_select_strategy="full", vision_feature_layer=-1,
        image_grid_pinpoints=[[16, 16]],
    )
    torch.manual_seed(seed)
    model = LlavaOnevisionForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    common = dict(size={"height": 16, "width": 16}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(image_grid_pinpoints=[[16, 16]], **common),
        video_processor=LlavaOnevisionVideoProcessor(**common),
        tokenizer=tok, chat_template=LLAVA_CHAT_TEMPLATE,
        num_image_tokens=16, vision_feature_select_strategy="full",  # 4x4 patches before pooling
    )
    return model, processor


TINY_FACTORIES = {"qwen2_5_vl": tiny_qwen2_5_vl, "llava_onevision": tiny_llava_onevision}


def tiny_random(family: str, seed: int = 0):
    """``(model, processor)`` of a tiny random model of ``family`` (see ``TINY_FACTORIES``)."""
    if family not in TINY_FACTORIES:
        from vidqa.errors import ModelError

        raise ModelError(
            f"unknown tiny-random family {family!r}; choose one of {sorted(TINY_FACTORIES)}"
        )
    return TINY_FACTORIES[family](seed)
