"""Saved memories: exact round trip, atomic replace, damaged or stale files detected."""

import json

import numpy as np
import pytest
import torch

from vidqa.config import MemoryConfig
from vidqa.errors import CacheError
from vidqa.memory import StreamingIngest
from vidqa.memory.persist import MANIFEST, TENSORS, load_memory, save_memory
from vidqa.tokenreduce import TemporalReducer


def _ingest(adapter, kv_bits=16):
    """Three chunks reduced by the temporal reducer, so that blocks carry segment starts."""
    rng = np.random.default_rng(0)
    ing = StreamingIngest(adapter, MemoryConfig(window_chunks=1, kv_bits=kv_bits))
    scenes = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    frames = scenes[[0] * 6 + [1] * 6]  # a cut at grid 3, inside the second chunk
    temporal = TemporalReducer(keep_ratio=0.5).stream()
    for c in range(3):
        tokens = adapter.encode(frames[4 * c:4 * c + 4], np.arange(4.0) + 4 * c, first_index=4 * c)
        ing.add_chunk(temporal(tokens), adapter.chunk_layout(tokens), 4.0 * c + 4)
    return ing.finish("tiny-random/qwen2_5_vl", {"path": "x.mp4"}, "key1", {"timings": {"total": 1.0}})


@pytest.fixture(scope="module")
def memory(qwen_adapter):
    return _ingest(qwen_adapter)


@pytest.mark.parametrize("bits", [8, 4])
def test_quantized_memory_round_trips_and_stays_close(qwen_adapter, tmp_path, bits):
    full, quant = _ingest(qwen_adapter), _ingest(qwen_adapter, kv_bits=bits)
    assert quant.host_bytes < 0.6 * full.host_bytes
    save_memory(quant, tmp_path / "q")
    back = load_memory(tmp_path / "q")
    for a, b, f in zip(back.blocks, quant.blocks, full.blocks):
        assert torch.equal(a.keys.unpack("cpu"), b.keys.unpack("cpu"))
        err = (a.values.unpack("cpu") - f.values.unpack("cpu")).abs().max()
        assert err < (0.05 if bits == 8 else 0.5) * f.values.unpack("cpu").abs().max()


def test_round_trip_is_exact(memory, tmp_path):
    save_memory(memory, tmp_path / "m")
    back = load_memory(tmp_path / "m", {"model": memory.model, "config_key": "key1"})
    assert torch.equal(back.sink_keys, memory.sink_keys)
    assert len(back.blocks) == len(memory.blocks) and back.next_position == memory.next_position
    for a, b in zip(back.blocks, memory.blocks):
        assert torch.equal(a.keys.unpack("cpu"), b.keys.unpack("cpu"))
        assert torch.equal(a.values.unpack("cpu"), b.values.unpack("cpu"))
        assert torch.equal(a.visual, b.visual) and torch.equal(a.summary, b.summary)
        assert (a.start, a.end, a.t_start, a.t_end) == (b.start, b.end, b.t_start, b.t_end)
        assert len(b.grids.distinct_keys) > 0  # the default keeps distinct keys: they must come back too
        for name in ("t", "frame", "time", "embeds", "entry_t", "keys", "distinct_keys", "distinct_grid"):
            # the grid record budget and retrieval read
            x, y = getattr(a.grids, name), getattr(b.grids, name)
            assert x.dtype == y.dtype and torch.equal(x, y), name
    assert back.segment_starts == memory.segment_starts == [0, 3]
    assert back.video == {"path": "x.mp4"} and back.stats["timings"]["total"] == 1.0


def test_truncated_file_is_detected(memory, tmp_path):
    save_memory(memory, tmp_path / "m")
    data = (tmp_path / "m" / TENSORS).read_bytes()
    (tmp_path / "m" / TENSORS).write_bytes(data[: len(data) // 2])
    with pytest.raises(CacheError, match="truncated"):
        load_memory(tmp_path / "m")


def test_tampered_file_is_detected(memory, tmp_path):
    save_memory(memory, tmp_path / "m")
    path = tmp_path / "m" / TENSORS
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CacheError, match="checksum"):
        load_memory(tmp_path / "m")


def test_stale_or_missing_manifest_is_detected(memory, tmp_path):
    save_memory(memory, tmp_path / "m")
    with pytest.raises(CacheError, match="stale"):
        load_memory(tmp_path / "m", {"config_key": "other"})
    manifest = json.loads((tmp_path / "m" / MANIFEST).read_text())
    for old in (1, 3, 999):  # format 1 had no grid records, 3 no distinct keys: rebuilt, never half-used
        manifest["format"] = old
        (tmp_path / "m" / MANIFEST).write_text(json.dumps(manifest))
        with pytest.raises(CacheError, match="format"):
            load_memory(tmp_path / "m")
    (tmp_path / "m" / MANIFEST).unlink()
    with pytest.raises(CacheError, match="manifest"):
        load_memory(tmp_path / "m")


def test_saving_over_an_existing_memory_replaces_it_whole(memory, tmp_path):
    save_memory(memory, tmp_path / "m")
    save_memory(memory, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == sorted([MANIFEST, TENSORS])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    load_memory(tmp_path / "m")
