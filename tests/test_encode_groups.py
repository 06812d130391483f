"""encode_groups: chunks encoded together give each chunk the tokens it gets alone, and ingest with
grouped encodes stores the memory it stores chunk by chunk."""

import numpy as np
import pytest
import torch

from vidqa.config import MemoryConfig, VidqaConfig, VideoConfig
from vidqa.encode_groups import encode_group, groups
from vidqa.pipeline import VideoQA
from vidqa.video import FrameChunk

from videos import make_video


def _chunks(lengths, start=0, hw=(40, 24), gap_after=None):
    rng = np.random.default_rng(0)
    out, i = [], start
    for n, length in enumerate(lengths):
        out.append(FrameChunk(frames=rng.integers(0, 256, (length, *hw, 3), dtype=np.uint8),
                              times=np.arange(i, i + length) * 0.5, indices=np.arange(i, i + length)))
        i += length + (2 if gap_after == n else 0)
    return out


def test_groups_keep_the_first_chunk_alone_then_pair_and_close_on_odd_lengths():
    sizes = lambda gs: [[len(c.times) for c in g] for g in gs]  # noqa: E731
    assert sizes(groups(_chunks([4, 4, 4, 4, 4, 4]), 2)) == [[4], [4, 4], [4, 4], [4]]
    assert sizes(groups(_chunks([4, 4, 4, 3]), 3)) == [[4], [4, 4, 3]]
    assert sizes(groups(_chunks([4, 4, 3]), 4)) == [[4], [4, 3]]
    assert sizes(groups(_chunks([4, 4, 4]), 1)) == [[4], [4], [4]]
    assert list(groups([], 2)) == []


@pytest.mark.parametrize("family", ["qwen", "llava"])
def test_a_joint_encode_gives_each_chunk_its_own_tokens(family, qwen_adapter, llava_adapter):
    adapter = qwen_adapter if family == "qwen" else llava_adapter
    chunks = _chunks([4, 4, 3], start=8)
    joint = encode_group(adapter, chunks)
    alone = [adapter.encode(c.frames, c.times, first_index=int(c.indices[0])) for c in chunks]
    assert len(joint) == 3
    for a, b in zip(joint, alone):
        torch.testing.assert_close(a.embeds, b.embeds, rtol=1e-5, atol=1e-5)
        for name in ("frame", "time", "grid", "size"):
            assert torch.equal(getattr(a, name), getattr(b, name)), name
        assert a.grid_hw == b.grid_hw
        assert adapter.chunk_layout(a) == adapter.chunk_layout(b)


def test_chunks_that_cannot_be_joined_are_encoded_one_by_one(qwen_adapter, monkeypatch):
    calls = []
    real = qwen_adapter.encode

    def counted(frames, times, first_index=0):
        calls.append(len(frames))
        return real(frames, times, first_index=first_index)

    monkeypatch.setattr(qwen_adapter, "encode", counted)
    encode_group(qwen_adapter, _chunks([4, 4]))
    assert calls == [8]
    calls.clear()
    out = encode_group(qwen_adapter, _chunks([4, 4], gap_after=0))  # sampled indices 0-3 then 6-9
    assert calls == [4, 4] and [int(t.frame[0]) for t in out] == [0, 6]

    class Recorder:  # an odd chunk first would shift the next one's temporal grids
        def encode(self, frames, times, first_index=0):
            calls.append(len(frames))

    calls.clear()
    encode_group(Recorder(), _chunks([3, 4]))
    assert calls == [3, 4]


def test_ingest_grouped_equals_ingest_chunk_by_chunk(tmp_path, qwen_adapter, monkeypatch):
    clip = make_video(tmp_path / "clip.mp4", 44, fps=4, width=64, height=48)  # 11 s: 11 frames at 1 fps

    def ingest(encode_chunks):
        config = VidqaConfig(video=VideoConfig(chunk_frames=4, encode_chunks=encode_chunks),
                             memory=MemoryConfig(kv_bits=16), cache_dir=str(tmp_path / f"c{encode_chunks}"))
        qa = VideoQA(model="tiny-random/qwen2_5_vl", config=config, adapter=qwen_adapter)
        calls = []
        real = qwen_adapter.encode
        monkeypatch.setattr(qwen_adapter, "encode",
                            lambda f, t, first_index=0: calls.append(len(f)) or real(f, t, first_index=first_index))
        progress = []
        memory = qa.ingest(clip, use_cache=False, progress=lambda done, total, info: progress.append(done))
        monkeypatch.undo()
        return memory, calls, progress

    one, calls_one, progress_one = ingest(1)
    three, calls_three, progress_three = ingest(3)
    assert calls_one == [4, 4, 3] and calls_three == [4, 7]  # the first chunk alone, then the rest together
    assert progress_one == progress_three == [4, 8, 11]
    assert len(one.blocks) == len(three.blocks) == 3
    assert one.next_position == three.next_position
    for a, b in zip(one.blocks, three.blocks):
        assert (a.start, a.end, a.t_start, a.t_end) == (b.start, b.end, b.t_start, b.t_end)
        assert torch.equal(a.frames, b.frames)
        torch.testing.assert_close(a.keys.unpack("cpu"), b.keys.unpack("cpu"), rtol=1e-5, atol=1e-5)


def test_out_of_memory_in_a_joint_encode_falls_back_to_one_chunk_at_a_time(tmp_path, qwen_adapter, monkeypatch):
    clip = make_video(tmp_path / "clip.mp4", 48, fps=4, width=64, height=48)  # 12 frames
    config = VidqaConfig(video=VideoConfig(chunk_frames=4, encode_chunks=2), cache_dir=str(tmp_path / "c"))
    qa = VideoQA(model="tiny-random/qwen2_5_vl", config=config, adapter=qwen_adapter)
    real = qwen_adapter.encode
    calls = []

    def tight(frames, times, first_index=0):
        calls.append(len(frames))
        if len(frames) > 4:
            raise torch.cuda.OutOfMemoryError("simulated")
        return real(frames, times, first_index=first_index)

    monkeypatch.setattr(qwen_adapter, "encode", tight)
    memory = qa.ingest(clip, use_cache=False)
    assert calls == [4, 8, 4, 4]
    assert [int(b.frames[0]) for b in memory.blocks] == [0, 4, 8]


def test_encode_chunks_is_checked_and_not_part_of_the_ingest_key():
    from vidqa.errors import ConfigError

    with pytest.raises(ConfigError, match="encode_chunks"):
        VideoConfig(encode_chunks=0)
    a = VidqaConfig(video=VideoConfig(encode_chunks=1)).ingest_key()
    assert a == VidqaConfig(video=VideoConfig(encode_chunks=4)).ingest_key()
