"""LLaVA-OneVision adapter promises: exact against the HF forward/generate; chunking; positions."""

import numpy as np
import pytest
import torch
from transformers import DynamicCache

from vidqa.tokens import VisualTokens

from sequences import one_shot_sequence


def _frames(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)


@pytest.fixture
def plain(llava_adapter):
    llava_adapter.timestamps_in_prompt = False
    yield llava_adapter
    llava_adapter.timestamps_in_prompt = True


def _native(adapter, frames, question):
    msgs = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
    text = adapter.processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    return adapter.processor(text=[text], videos=[frames], return_tensors="pt")


def test_logits_equal_native_forward(plain):
    adapter = plain
    frames = _frames(3)
    inputs = _native(adapter, frames, "What is it?")
    with torch.no_grad():
        native = adapter.model(**inputs).logits[0, -1].float()
    tokens = adapter.encode(frames, np.arange(3.0))
    embeds, positions = one_shot_sequence(adapter, [tokens], "What is it?")
    assert embeds.shape[0] == inputs["input_ids"].shape[1]
    ours = adapter.forward(embeds, positions, DynamicCache())
    torch.testing.assert_close(ours, native, atol=1e-5, rtol=1e-5)


def test_greedy_generation_equals_model_generate(plain):
    adapter = plain
    frames = _frames(2, seed=5)
    inputs = _native(adapter, frames, "Say.")
    with torch.no_grad():
        native = adapter.model.generate(**inputs, max_new_tokens=5, min_new_tokens=5, do_sample=False,
                                        eos_token_id=None)
    tokens = adapter.encode(frames, np.arange(2.0))
    embeds, positions = one_shot_sequence(adapter, [tokens], "Say.")
    cache = DynamicCache()
    logits = adapter.forward(embeds, positions, cache)
    ours = list(adapter.generate(logits, int(positions.max()) + 1, cache, max_new_tokens=5, stop_ids=[]))
    assert ours == native[0, inputs["input_ids"].shape[1]:].tolist()


def test_chunked_encoding_equals_whole_and_subset_positions(llava_adapter):
    adapter = llava_adapter
    frames = _frames(5, seed=2)
    whole = adapter.encode(frames, np.arange(5.0))
    parts = VisualTokens.cat([adapter.encode(frames[:2], np.arange(2.0)),
                              adapter.encode(frames[2:], np.arange(2.0, 5.0), first_index=2)])
    torch.testing.assert_close(parts.embeds, whole.embeds, atol=1e-5, rtol=1e-5)
    assert torch.equal(parts.grid, whole.grid)
    layout = adapter.chunk_layout(whole)
    full = adapter.visual_positions(whole, layout, 10)
    assert full.shape == (1, len(whole)) and torch.equal(full[0], torch.arange(len(whole)) + 10)
    keep = torch.tensor([1, 6, 19])
    assert torch.equal(adapter.visual_positions(whole.select(keep), layout, 10), full[:, keep])


def test_frames_are_preprocessed_on_the_models_device(llava_adapter, monkeypatch):
    """The video processor is asked to resize and normalise on the model's device (on a GPU the CPU
    resize dominated ingest), and its output is what the tower gets."""
    vp = llava_adapter.processor.video_processor
    calls, original = [], type(vp).__call__

    def spy(self, *args, **kwargs):
        calls.append(kwargs.get("device"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(vp), "__call__", spy)
    frames = _frames(2, seed=3)
    tokens = llava_adapter.encode(frames, np.arange(2.0))
    assert calls == [str(llava_adapter.device)] and len(tokens) == 2 * llava_adapter.tokens_per_frame


def test_prompt_pieces_come_from_the_chat_template(llava_adapter):
    a = llava_adapter
    assert a.prompt_prefix() == "<|im_start|>user\n"
    assert a.prompt_question("Q?", "Best Option: (") == "\nQ?<|im_end|>\n<|im_start|>assistant\nBest Option: ("
    assert a.chunk_open(61.0) == "<01:01>"
