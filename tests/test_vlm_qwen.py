"""Qwen2.5-VL adapter promises: exactness against the HF model, chunked = one-shot, positions."""

import numpy as np
import pytest
import torch
from transformers import DynamicCache

from sequences import one_shot_sequence


def _frames(n, h=32, w=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def _native_inputs(adapter, frames, question, fps):
    proc = adapter.processor
    msgs = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
    text = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    inputs = proc(text=[text], videos=[frames], return_tensors="pt",
                  videos_kwargs=dict(do_sample_frames=False, cap_pixels_per_frame=False))
    # The processor assumes a default fps for raw frame arrays; pass the real sampling rate, as
    # qwen-vl-utils does, so that temporal positions follow seconds.
    inputs["second_per_grid_ts"] = torch.tensor([adapter.temporal_patch / fps])
    return inputs


@pytest.fixture
def plain_prompt(qwen_adapter):
    qwen_adapter.timestamps_in_prompt = False
    yield qwen_adapter
    qwen_adapter.timestamps_in_prompt = True


def test_single_grid_logits_equal_native_forward(plain_prompt):
    """One temporal grid: native positions and the reference recipe coincide, so no override."""
    adapter = plain_prompt
    frames, times = _frames(2), np.array([0.0, 1.0])
    inputs = _native_inputs(adapter, frames, "What colour?", fps=1.0)
    with torch.no_grad():
        native = adapter.model(**inputs).logits[0, -1].float()
    tokens = adapter.encode(frames, times)
    embeds, positions = one_shot_sequence(adapter, [tokens], "What colour?")
    assert embeds.shape[0] == inputs["input_ids"].shape[1]
    ours = adapter.forward(embeds, positions, DynamicCache())
    torch.testing.assert_close(ours, native, atol=1e-5, rtol=1e-5)


def test_multi_grid_logits_equal_native_with_reference_positions(plain_prompt):
    """Several grids: equal to the HF forward given the reference M-RoPE positions.

    transformers >= 5.3 places text after a video at start + max(H, W)/merge, overlapping the
    video's time range; vidqa keeps the original recipe (next text at max + 1) and so passes it.
    """
    adapter = plain_prompt
    frames, times = _frames(6), np.arange(6, dtype=float)
    inputs = _native_inputs(adapter, frames, "Count?", fps=1.0)
    tokens = adapter.encode(frames, times)
    embeds, positions = one_shot_sequence(adapter, [tokens], "Count?")
    # The visual positions themselves agree with HF's own get_rope_index.
    native_pos, _ = adapter.model.model.get_rope_index(
        inputs["input_ids"], inputs["mm_token_type_ids"], video_grid_thw=inputs["video_grid_thw"],
        second_per_grid_ts=inputs["second_per_grid_ts"])
    is_video = inputs["mm_token_type_ids"][0] == 2
    assert torch.equal(native_pos[:, 0, is_video], positions[:, is_video])
    with torch.no_grad():
        native = adapter.model(**inputs, position_ids=positions[:, None]).logits[0, -1].float()
    ours = adapter.forward(embeds, positions, DynamicCache())
    torch.testing.assert_close(ours, native, atol=1e-5, rtol=1e-5)


def test_greedy_generation_equals_model_generate(plain_prompt):
    adapter = plain_prompt
    frames, times = _frames(2, seed=3), np.array([0.0, 1.0])
    inputs = _native_inputs(adapter, frames, "Describe.", fps=1.0)
    with torch.no_grad():
        native = adapter.model.generate(**inputs, max_new_tokens=6, do_sample=False, min_new_tokens=6,
                                        eos_token_id=None)
    native_new = native[0, inputs["input_ids"].shape[1]:].tolist()
    tokens = adapter.encode(frames, times)
    embeds, positions = one_shot_sequence(adapter, [tokens], "Describe.")
    cache = DynamicCache()
    logits = adapter.forward(embeds, positions, cache)
    ours = list(adapter.generate(logits, int(positions.max()) + 1, cache, max_new_tokens=6, stop_ids=[]))
    assert ours == native_new


def test_chunked_encoding_and_prefill_equal_one_shot(qwen_adapter):
    """Vision attention never crosses temporal grids, so even-sized chunks encode exactly; the LLM
    prefill in pieces over a DynamicCache equals one forward."""
    adapter = qwen_adapter
    frames, times = _frames(8, seed=1), np.arange(8, dtype=float)
    whole = adapter.encode(frames, times)
    parts = [adapter.encode(frames[i:i + 4], times[i:i + 4], first_index=i) for i in (0, 4)]
    from vidqa.tokens import VisualTokens

    joined = VisualTokens.cat(parts)
    torch.testing.assert_close(joined.embeds, whole.embeds, atol=1e-5, rtol=1e-5)
    assert torch.equal(joined.grid, whole.grid) and torch.equal(joined.frame, whole.frame)

    embeds, positions = one_shot_sequence(adapter, parts, "Q?")
    one = adapter.forward(embeds, positions, DynamicCache())
    cache, cut = DynamicCache(), [0, 7, 40, embeds.shape[0]]
    for a, b in zip(cut, cut[1:]):
        piece = adapter.forward(embeds[a:b], positions[:, a:b], cache)
    torch.testing.assert_close(piece, one, atol=1e-5, rtol=1e-5)


def test_positions_of_a_subset_equal_full_positions(qwen_adapter):
    adapter = qwen_adapter
    tokens = adapter.encode(_frames(4), np.arange(4, dtype=float) + 30.0, first_index=30)
    layout = adapter.chunk_layout(tokens)
    full = adapter.visual_positions(tokens, layout, start=100)
    keep = torch.tensor([0, 5, 17, len(tokens) - 1])
    sub = adapter.visual_positions(tokens.select(keep), layout, start=100)
    assert torch.equal(sub, full[:, keep])
    # temporal axis follows absolute time: 2 tokens per second (tiny config), grid of 2 frames.
    assert full[0].max() - full[0].min() == 4
    assert layout.extent == max(4, tokens.grid_hw[0] - 1, tokens.grid_hw[1] - 1) + 1


def test_prompt_snapshot(qwen_adapter):
    adapter = qwen_adapter
    text = adapter.prompt_prefix() + adapter.chunk_open(75.0) + "[V]" + adapter.chunk_close() + \
        adapter.prompt_question("Question: Which?", "Best Option: (")
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<01:15><|vision_start|>[V]<|vision_end|>Question: Which?<|im_end|>\n"
        "<|im_start|>assistant\nBest Option: ("
    )
    ids = adapter.tokenize(adapter.chunk_open(3725.0)).tolist()
    assert adapter.tokenizer.decode(ids) == "<1:02:05><|vision_start|>"
    assert ids[-1] == adapter.tokenizer.convert_tokens_to_ids("<|vision_start|>")
