"""The bundled ``synth-tiny`` model: a real Qwen2.5-VL architecture sized to the synthetic world.

* Tokenizer: word level (``tokenizers`` WordLevel), lower-cased, digits split one by one, over the
  words of the world's vocabulary, the question templates and the prompt -- a few hundred tokens.
* Model: ``Qwen2_5_VLForConditionalGeneration`` with a 6-block, 192-wide vision tower (14-pixel
  patches, 112-pixel windows, 2x2 merge, 2-frame temporal patches, absolute-time M-RoPE) and a
  6-layer, 256-wide language model: about 7M parameters, about 14 MB in bf16.
* Processor: the stock ``Qwen2_5_VLProcessor`` with frames resized to at most 224x126 pixels
  (4x8 merged tokens per 2-frame grid on the synthetic world's 16:9 frames).

The same builders are used by the trainer (:mod:`vidqa.synth.train`) and to save the result with
``save_pretrained``, so vidqa's Qwen adapter drives the bundled model unchanged.
"""

from __future__ import annotations

import json

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from vidqa.synth import vocab
from vidqa.vlm.tiny import QWEN_CHAT_TEMPLATE, QWEN_SPECIALS

FRAME_PIXELS = 224 * 126
# Qwen2.5-VL's own base (1e6, as in the 3B and 7B configs), not the 1e4 of short-context models: with
# 1e4 even the slowest rotary pair turns ~1 rad over the 7,200 positions an hour of video spans and
# past pi/2 at 3 hours, so no channel pair can match a question word to what a distant frame shows;
# with 1e6 the slowest eight pairs turn at most 0.23 rad over an hour and 0.68 over three (Xiong et
# al., 2023, "Effective Long-Context Scaling of Foundation Models", on raising the base for long context).
ROPE_THETA = 1_000_000.0
UNK, PAD = "[unk]", "<|endoftext|>"


def _pre_tokenizer():
    return pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Split(Regex(r"[^a-z0-9_']"), behavior="isolated"),
        pre_tokenizers.Digits(individual_digits=True),
    ])


def corpus_words(extra_texts: list[str] = ()) -> list[str]:
    """Every word the prompts, questions and answers of the synthetic world can contain."""
    from vidqa.mcq import MC_ANSWER_PREFIX, format_mc_question
    from vidqa.synth.questions import make_questions
    from vidqa.synth.timeline import make_timeline
    from vidqa.synth.train_data import DESCRIBE, HINT

    texts = [MC_ANSWER_PREFIX, format_mc_question("x", ["a", "b", "c", "d"]), "You are a helpful assistant.",
             "system user assistant", " ".join(vocab.SCENES), " ".join(vocab.COLOURS), " ".join(vocab.SHAPES),
             " ".join(vocab.SIZES), " ".join(vocab.CARD_WORDS), " ".join(vocab.ANOMALIES.values()),
             "0 1 2 3 4 5 6 7 8 9 : < > ( ) , . ? ' -", " ".join(vocab.all_words()), DESCRIBE, HINT, *extra_texts]
    for seed in range(40):
        for duration in (16, 40, 600):
            tl = make_timeline(seed, duration)
            for q in make_questions(tl, seed, per_task=3):
                texts.append(q["question"])
                texts.extend(q["candidates"])
    pre, norm = _pre_tokenizer(), normalizers.Lowercase()
    words = set()
    for t in texts:
        words.update(w for w, _ in pre.pre_tokenize_str(norm.normalize_str(t)))
    return sorted(words)


def build_tokenizer() -> PreTrainedTokenizerFast:
    words = corpus_words()
    table = {UNK: 0}
    for w in words:
        table.setdefault(w, len(table))
    core = Tokenizer(models.WordLevel(vocab=table, unk_token=UNK))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = _pre_tokenizer()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token=UNK, pad_token=PAD, eos_token="<|im_end|>",
                                  additional_special_tokens=QWEN_SPECIALS)
    tok.chat_template = QWEN_CHAT_TEMPLATE
    return tok


def build_model_and_processor(seed: int = 0):
    import torch
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    tok = build_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    text_config = dict(
        vocab_size=len(tok), hidden_size=256, intermediate_size=512, num_hidden_layers=6,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32768,
        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
        rope_scaling={"type": "mrope", "mrope_section": [8, 12, 12]}, rope_theta=ROPE_THETA,
        tie_word_embeddings=True,
    )
    vision_config = dict(
        depth=6, hidden_size=192, intermediate_size=512, num_heads=6, patch_size=14, spatial_merge_size=2,
        temporal_patch_size=2, tokens_per_second=2, window_size=112, fullatt_block_indexes=[2, 5],
        out_hidden_size=256, in_channels=3,
    )
    config = Qwen2_5_VLConfig(
        text_config=text_config, vision_config=vision_config, image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"], bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"], tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    size = {"shortest_edge": 56 * 56, "longest_edge": FRAME_PIXELS}
    common = dict(size=size, patch_size=14, merge_size=2, temporal_patch_size=2)
    processor = Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(**common),
                                    video_processor=Qwen2VLVideoProcessor(**common),
                                    tokenizer=tok, chat_template=QWEN_CHAT_TEMPLATE)
    return model, processor


def describe(model) -> str:
    n = sum(p.numel() for p in model.parameters())
    return json.dumps({"parameters": n})
