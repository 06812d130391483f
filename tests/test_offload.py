"""The host offload's promises on CPU: the arena hands out aligned, disjoint, typed views of a few
slabs; a stored tensor waits for its copy exactly once; packing through the offload stores the same
bytes as the plain pack, and an ingest through it equals the plain ingest and round-trips exactly;
the slabs die with the memory. The asynchronous CUDA path is checked in test_gpu.py."""

import contextlib
import gc
import importlib.util
import json
import weakref
from pathlib import Path

import pytest
import torch

from vidqa.config import MemoryConfig
from vidqa.memory import StreamingIngest
from vidqa.memory.offload import HostOffload, Landing, PinnedArena
from vidqa.memory.persist import load_memory, save_memory
from vidqa.memory.storage import StoredKV

from memory_data import random_chunks

DTYPES = [torch.float16, torch.int8, torch.uint8, torch.float32, torch.bfloat16, torch.bool, torch.int64]


def _span(t: torch.Tensor) -> tuple[int, int]:
    return t.data_ptr(), t.data_ptr() + t.numel() * t.element_size()


def test_arena_views_are_aligned_disjoint_and_typed():
    arena = PinnedArena(slab_bytes=1 << 16, align=256, pin=False, prefetch=False)
    shapes = [(3, 5, 7), (1000,), (2, 4096), (5,), (7, 3), (33000,), (0, 4), (100_000,), (17,)]
    views = [arena.take(s, DTYPES[i % len(DTYPES)]) for i, s in enumerate(shapes)]
    for v, s, i in zip(views, shapes, range(len(shapes))):
        assert v.shape == s and v.dtype == DTYPES[i % len(DTYPES)] and v.is_contiguous()
        assert v.numel() == 0 or v.data_ptr() % 256 == 0
    spans = sorted(_span(v) for v in views if v.numel())
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))  # no two views overlap
    for i, v in enumerate(views):  # each keeps what was written to it
        v.fill_(i % 2 if v.dtype == torch.bool else i)
    for i, v in enumerate(views):
        assert (v == (i % 2 if v.dtype == torch.bool else i)).all()
    assert arena.used_bytes == sum(v.numel() * v.element_size() for v in views)
    # the 200 kB request got a slab of its own (a power of two); the rest, 42 kB, share one slab
    assert [s.numel() for s in arena.slabs] == [1 << 16, 1 << 18]


def test_arena_fills_old_tails_first():
    arena = PinnedArena(slab_bytes=1 << 12, align=64, pin=False, prefetch=False)
    big = arena.take((3000,), torch.uint8)
    other = arena.take((3000,), torch.uint8)  # does not fit beside the first: a second slab
    small = arena.take((500,), torch.uint8)  # fits in the first slab's tail
    first = arena.slabs[0]
    assert len(arena.slabs) == 2 and other.untyped_storage().data_ptr() == arena.slabs[1].data_ptr()
    assert first.data_ptr() <= small.data_ptr() < first.data_ptr() + first.numel()
    assert big.untyped_storage().data_ptr() == first.data_ptr()


def test_arena_keeps_one_spare_slab_pinning_and_close_drops_it():
    arena = PinnedArena(slab_bytes=1 << 12, align=64, pin=False, prefetch=True)
    assert arena.slabs == [] and arena._spare is not None
    arena.take((25,), torch.float32)  # 100 bytes: the next 4,000 (from byte 128) need a new slab
    spare = arena._spare
    assert len(arena.slabs) == 1 and spare is not None and spare.result().numel() == 1 << 12
    assert arena.reserved_bytes == 1 << 12  # the spare is not the memory's
    arena.close()
    assert arena._spare is None
    arena.take((4000,), torch.uint8)  # after close a slab is allocated on the spot
    assert len(arena.slabs) == 2 and arena._spare is None


def test_a_failed_background_allocation_is_raised_where_the_slab_is_needed():
    from vidqa.memory.offload import _Allocation

    with pytest.raises(RuntimeError):
        _Allocation(-1, False).result()


class FakeEvent:
    """A CUDA event stand-in: not done until synchronised."""

    def __init__(self):
        self.syncs = 0

    def query(self) -> bool:
        return False

    def synchronize(self) -> None:
        self.syncs += 1


@pytest.mark.parametrize("bits", [16, 8])
def test_stored_kv_waits_for_its_copy_once_and_only_to_read_values(bits):
    x = torch.randn(2, 2, 5, 32)
    plain = StoredKV.pack(x, bits)
    parts = [plain.data] if bits == 16 else list(plain.data.state_dict().values())
    event = FakeEvent()
    stored = StoredKV(plain.data, bits, x.dtype, Landing(parts, event))
    assert stored.nbytes == plain.nbytes and stored.meta() == plain.meta() and event.syncs == 0
    assert not stored.landed
    torch.testing.assert_close(stored.unpack("cpu"), plain.unpack("cpu"), rtol=0, atol=0)
    assert event.syncs == 1 and stored.landed
    stored.tensors()
    stored.unpack("cpu")
    assert event.syncs == 1


@pytest.mark.parametrize("bits", [16, 8, 4])
@pytest.mark.parametrize("head_dim", [32, 24])  # 24: the group shrinks to gcd(32, 24) = 8
def test_pack_through_the_offload_stores_the_same_bytes(bits, head_dim):
    torch.manual_seed(bits)
    x = torch.randn(3, 2, 11, head_dim, dtype=torch.bfloat16)
    offload = HostOffload(PinnedArena(slab_bytes=1 << 12, pin=False))
    stored = StoredKV.pack(x, bits, offload=offload)
    plain = StoredKV.pack(x, bits)
    x.fill_(float("nan"))  # the stored copy no longer depends on the source
    offload.finish()
    a, b = stored.tensors("p."), plain.tensors("p.")
    assert a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)
    assert stored.meta() == plain.meta() and stored.nbytes == plain.nbytes
    slabs = {s.data_ptr() for s in offload.arena.slabs}
    assert all(t.untyped_storage().data_ptr() in slabs for t in a.values())
    back = StoredKV.from_tensors(a, stored.meta(), "p.")
    assert torch.equal(back.unpack("cpu"), plain.unpack("cpu"))


def _ingest(adapter, chunks, kv_bits, offload=None):
    ing = StreamingIngest(adapter, MemoryConfig(window_chunks=1, recurrent_tokens=2, kv_bits=kv_bits),
                          offload=offload)
    for tokens, layout, t_end in chunks:
        ing.add_chunk(tokens, layout, t_end)
    return ing.finish("tiny-random/qwen2_5_vl", {"path": "x.mp4"}, "k", {})


def _assert_same_memory(a, b):
    assert torch.equal(a.sink_keys, b.sink_keys) and torch.equal(a.sink_values, b.sink_values)
    assert len(a.blocks) == len(b.blocks) and a.next_position == b.next_position
    for x, y in zip(a.blocks, b.blocks):
        for name in ("keys", "values"):
            tx, ty = getattr(x, name).tensors(), getattr(y, name).tensors()
            assert tx.keys() == ty.keys() and all(tx[k].dtype == ty[k].dtype and torch.equal(tx[k], ty[k]) for k in tx)
        assert torch.equal(x.summary, y.summary) and torch.equal(x.visual, y.visual) and torch.equal(x.frames, y.frames)
        assert (x.start, x.end, x.t_start, x.t_end) == (y.start, y.end, y.t_start, y.t_end)
        for name in ("t", "frame", "time", "embeds", "entry_t"):
            gx, gy = getattr(x.grids, name), getattr(y.grids, name)
            assert gx.dtype == gy.dtype and torch.equal(gx, gy), name


@pytest.mark.parametrize("kv_bits", [16, 8])
def test_ingest_through_the_offload_equals_plain_ingest_and_round_trips(qwen_adapter, tmp_path, kv_bits):
    chunks = random_chunks(qwen_adapter, 4)
    plain = _ingest(qwen_adapter, chunks, kv_bits)
    offload = HostOffload(PinnedArena(slab_bytes=1 << 16, pin=False))
    ours = _ingest(qwen_adapter, chunks, kv_bits, offload)
    _assert_same_memory(ours, plain)
    slabs = {s.data_ptr() for s in offload.arena.slabs}
    assert all(b.summary.untyped_storage().data_ptr() in slabs for b in ours.blocks)  # summaries landed too
    blocks_bytes = ours.host_bytes - 2 * ours.sink_keys.nbytes
    assert ours.stats["host_reserved_bytes"] == offload.arena.reserved_bytes >= blocks_bytes
    assert "host_reserved_bytes" not in plain.stats
    save_memory(ours, tmp_path / "m")
    back = load_memory(tmp_path / "m")
    _assert_same_memory(back, ours)
    assert back.stats == ours.stats


class FakeStream:
    device = torch.device("cpu")

    def wait_stream(self, other) -> None:
        pass


def test_the_asynchronous_branch_bounds_copies_in_flight_and_lands_every_block(qwen_adapter, monkeypatch):
    """The side-stream branch with a stand-in stream whose events land only when waited for: at most
    ``max_in_flight`` copies are outstanding, blocks keep their own summary until theirs has landed,
    and ``finish`` lands everything into the same memory as the plain ingest."""
    events = []

    class Event:
        def __init__(self):
            self.landed = False
            events.append(self)

        def record(self, stream) -> None:
            pass

        def query(self) -> bool:
            return self.landed

        def synchronize(self) -> None:
            self.landed = True

    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: contextlib.nullcontext())
    chunks = random_chunks(qwen_adapter, 5)
    offload = HostOffload(PinnedArena(slab_bytes=1 << 16, pin=False), FakeStream(), max_in_flight=3)
    ing = StreamingIngest(qwen_adapter, MemoryConfig(window_chunks=1, recurrent_tokens=2, kv_bits=8), offload=offload)
    for tokens, layout, t_end in chunks:
        ing.add_chunk(tokens, layout, t_end)
        assert len(offload.in_flight) <= 3 and sum(not e.landed for e in events) <= 3
    newest = ing.blocks[-1]
    slabs = {s.data_ptr() for s in offload.arena.slabs}
    assert not newest.keys.landed and ing.arriving and ing.arriving[-1][1] is newest
    assert newest.summary.untyped_storage().data_ptr() not in slabs  # its own, until its copy lands
    memory = ing.finish("tiny-random/qwen2_5_vl", {"path": "x.mp4"}, "k", {})
    assert all(e.landed for e in events) and not ing.arriving and newest.keys.landed
    assert all(b.summary.untyped_storage().data_ptr() in {s.data_ptr() for s in offload.arena.slabs}
               for b in memory.blocks)
    _assert_same_memory(memory, _ingest(qwen_adapter, chunks, 8))


def test_slabs_live_as_long_as_the_memory(qwen_adapter):
    chunks = random_chunks(qwen_adapter, 3)
    offload = HostOffload(PinnedArena(slab_bytes=1 << 16, pin=False))
    memory = _ingest(qwen_adapter, chunks, 8, offload)
    storages = [weakref.ref(s.untyped_storage()) for s in offload.arena.slabs]
    arena = weakref.ref(offload.arena)
    del offload
    gc.collect()
    assert arena() is None and all(s() is not None for s in storages)  # the blocks hold the slabs
    del memory
    gc.collect()
    assert all(s() is None for s in storages)  # and nothing else does: no leak into the next video


def test_offload_bench_smoke_runs(tmp_path, monkeypatch):
    path = Path(__file__).resolve().parent.parent / "bench" / "offload.py"
    spec = importlib.util.spec_from_file_location("bench_offload", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setenv("OUT", str(tmp_path))
    rows = bench.main(["--smoke", "--cache", "warm", "--device", "cpu"])
    assert [r["mode"] for r in rows] == ["busy", "old", "new", "old pack only", "new pack only"]
    lines = (tmp_path / "offload.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["identical"] is True and len(lines) == 1 + len(rows)
    assert "| new |" in (tmp_path / "offload.md").read_text()
