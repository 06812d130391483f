"""The trainer's streaming prefill gives every chunk exactly the context streaming ingest gives it."""

import random

import numpy as np
import pytest
import torch

from vidqa.config import MemoryConfig
from vidqa.memory import StreamingIngest
from vidqa.synth.streaming_prefill import ingest_context, streaming_prefill
from vidqa.synth.train import batch_logits, to_model_frames, video_template
from vidqa.synth.train_data import batch_layout, make_clip


def _batch(chunks: int, clips: int = 1):
    layout = dict(batch_layout(random.Random(3)), chunks=chunks, gap=0, chunk_gaps=[0] * chunks)
    items = [make_clip(200 + i, chunks, 0.0) for i in range(clips)]
    return {"frames": torch.from_numpy(np.stack([f for f, _, _, _ in items])), "times": items[0][1],
            "qa": [q[:2] for _, _, q, _ in items], **layout}


def test_context_mask_follows_window_and_capacity():
    """Two 3-token chunks after a 2-token prefix, window 1: chunk 2 sees the prefix, chunk 1, itself
    (causally) and chunk 0's pooled entries -- with capacity 1 only the newest of them."""
    chunk_of = torch.tensor([-1, -1, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    visual = torch.tensor([False, False, False, True, True, False, True, True, False, True, True])
    pool, mask = ingest_context(chunk_of, visual, MemoryConfig(window_chunks=1, recurrent_tokens=2,
                                                               recurrent_capacity=1))
    assert pool.shape == (6, 11)  # two entries per chunk
    torch.testing.assert_close(pool[0], torch.eye(11)[3])  # chunk 0's first visual token
    last = mask[10]  # the last token of chunk 2
    assert last[:11].tolist() == [True, True, False, False, False, True, True, True, True, True, True]
    assert last[11:].tolist() == [False, True, False, False, False, False]  # chunk 0's newest entry only
    assert not mask[4, 11:].any() and not mask[7, 11:].any()  # chunks 0 and 1 still see everything before
    assert mask[4, :5].tolist() == [True] * 5 and not mask[4, 5:11].any()  # causal
    assert not mask[1, 2:].any()  # the prefix sees only itself


@pytest.mark.parametrize("window, capacity", [(1, 3), (0, 128)])
def test_streaming_prefill_equals_streaming_ingest(synth_adapter, window, capacity):
    """Four chunks prefilled in one forward with :func:`streaming_prefill` leave, in every layer, the
    keys and values that :class:`StreamingIngest` stores chunk by chunk with the same settings."""
    a = synth_adapter
    batch = _batch(4)
    config = MemoryConfig(window_chunks=window, recurrent_tokens=2, recurrent_capacity=capacity)
    frames = to_model_frames(batch["frames"])[0].numpy().astype(np.uint8)
    times = batch["times"]
    ingest = StreamingIngest(a, config)
    tokens = []
    with torch.no_grad():
        for c in range(4):
            t = a.encode(frames[16 * c:16 * c + 16], times[16 * c:16 * c + 16], first_index=16 * c)
            tokens.append(t.embeds)
            ingest.add_chunk(t, a.chunk_layout(t), float(times[16 * c + 15]) + 1)
        memory = ingest.finish("synth-tiny", {}, "", {})
        ids, is_visual, positions, _, chunk_of = video_template(a, batch, (8, 16))
        video = a.embed_ids(ids).clone()
        video[is_visual] = torch.cat(tokens).to(video.dtype)
        with streaming_prefill(a, chunk_of, is_visual, config):
            out = a.language_model(inputs_embeds=video[None], position_ids=positions[:, None], use_cache=True)
    cache = out.past_key_values
    sinks = memory.sink_keys.shape[2]
    offset = sinks
    for c, block in enumerate(memory.blocks):
        n = block.num_tokens
        assert int((chunk_of == c).sum()) == n
        for layer in range(len(cache.layers)):
            torch.testing.assert_close(cache.layers[layer].keys[0, :, offset:offset + n],
                                       block.keys.unpack("cpu", torch.float32)[layer], atol=2e-4, rtol=1e-4)
            torch.testing.assert_close(cache.layers[layer].values[0, :, offset:offset + n],
                                       block.values.unpack("cpu", torch.float32)[layer], atol=2e-4, rtol=1e-4)
        offset += n
    if window < 3:  # the windowed context changes what later chunks hold: the test can tell the two apart
        full = a.language_model(inputs_embeds=video[None], position_ids=positions[:, None], use_cache=True)
        last = memory.blocks[-1]
        assert not torch.allclose(full.past_key_values.layers[-1].values[0, :, -last.num_tokens:],
                                  last.values.unpack("cpu", torch.float32)[-1], atol=1e-3)


def test_batch_logits_streams_every_clip(synth_adapter):
    """Batched clips with streaming prefill answer as each clip alone does, and differ from full attention."""
    a = synth_adapter
    batch = _batch(4, clips=2)
    config = MemoryConfig(window_chunks=1)
    with torch.no_grad():
        both, labels, _ = batch_logits(a, batch, "cpu", streaming=config)
        full, _, _ = batch_logits(a, batch, "cpu")
        one = {k: (v[1:] if k in ("frames", "qa") else v) for k, v in batch.items()}
        second, _, _ = batch_logits(a, one, "cpu", streaming=config)
    rows = len(batch["qa"][0])
    answer = labels[rows:] != -100
    torch.testing.assert_close(both[rows:][answer], second[answer[:, :second.shape[1]]], atol=2e-4, rtol=1e-4)
    assert not torch.allclose(both, full, atol=1e-3)
