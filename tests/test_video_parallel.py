"""Sparse and dense reads on several decoders: the same frames and times as one decoder, bit for bit,
in order; dense reads whose blocks would be too short stay on one; a stalled or failing worker, an
early close and a truncated file behave as with one decoder; the pool behind it keeps its jobs in
order and bounded."""

import logging
import threading
import time

import av
import numpy as np
import pytest

from vidqa.errors import ConfigError, VideoError
from vidqa.video import iter_chunks, open_video, read_frames
from vidqa.videoio.parallel import ordered_map
from vidqa.videoio.pyav_backend import AHEAD_PER_WORKER, BLOCK_TARGETS, PyAVDecoder

from videos import make_video, open_fds_to, read_barcode

FPS = 10
WORKER = "vidqa-decode-worker"


def sparse_video(tmp_path, codec="libx264", ext="mp4", **kwargs):
    """40 s at 10 fps, a keyframe a second: 16 targets 2.5 s apart each need a seek."""
    return make_video(tmp_path / f"sparse.{ext}", 400, fps=FPS, codec=codec, gop=10, **kwargs)


_REAL_DECODE = PyAVDecoder._decode


def _patch_decode(monkeypatch, before_frame):
    """Runs ``before_frame()`` in the decoding thread before each decoded frame is handed over."""

    def decode(self, container, stream, beat):
        for frame in _REAL_DECODE(self, container, stream, beat):
            before_frame()
            yield frame

    monkeypatch.setattr(PyAVDecoder, "_decode", decode)


def _record_threads(monkeypatch) -> set:
    """The names of the threads that decode frames, collected as they do."""
    names: set = set()
    _patch_decode(monkeypatch, lambda: names.add(threading.current_thread().name))
    return names


def _decode_threads() -> int:
    return sum(t.name.startswith("vidqa-decode") and t.is_alive() for t in threading.enumerate())


def _wait_for_threads(count: int, seconds: float = 5.0) -> int:
    deadline = time.monotonic() + seconds
    while _decode_threads() > count and time.monotonic() < deadline:
        time.sleep(0.02)
    return _decode_threads()


def _same(a, b) -> None:
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.times, b.times)
    np.testing.assert_array_equal(a.indices, b.indices)
    assert a.truncated == b.truncated


@pytest.mark.parametrize("codec,ext,realistic", [("libx264", "mp4", False), ("libx264", "mp4", True),
                                                 ("libx265", "mp4", False), ("libvpx-vp9", "webm", False)])
def test_a_sparse_read_on_several_decoders_equals_one_decoder(tmp_path, monkeypatch, codec, ext, realistic):
    if codec not in av.codecs_available:
        pytest.skip(f"encoder {codec} is not in this PyAV build")
    path = sparse_video(tmp_path, codec, ext, realistic=realistic)
    one = read_frames(path, num_frames=16, decode_workers=1)
    assert [read_barcode(f) for f in one.frames] == [25 * i for i in range(16)]
    threads = _record_threads(monkeypatch)
    for workers in (2, 3):
        threads.clear()
        _same(read_frames(path, num_frames=16, decode_workers=workers), one)
        assert sum(name.startswith(WORKER) for name in threads) >= 2  # it did run in parallel
        chunks = list(iter_chunks(path, num_frames=16, chunk_frames=5, decode_workers=workers))
        assert [len(c.times) for c in chunks] == [5, 5, 5, 1]
        np.testing.assert_array_equal(np.concatenate([c.frames for c in chunks]), one.frames)
        np.testing.assert_array_equal(np.concatenate([c.times for c in chunks]), one.times)


def test_explicit_sparse_times_and_counters(tmp_path):
    """Uneven targets, two of them nearest the same frame; the decoders' counts add up."""
    path = sparse_video(tmp_path)
    times = [0.33, 3.04, 3.06, 7.72, 13.06, 16.5, 22.93, 25.0, 29.46, 33.3, 36.0, 39.8]
    one = read_frames(path, times=times, decode_workers=1)
    _same(read_frames(path, times=times, decode_workers=4), one)
    assert [read_barcode(f) for f in one.frames] == [int(round(t * FPS)) for t in times]
    decoder = PyAVDecoder(open_video(path), workers=3)
    got = list(decoder.frames_at(np.asarray(times)))
    assert [t for t, _ in got] == one.times.tolist() and decoder.seeks >= 9 and decoder.decoded < 150


@pytest.mark.parametrize("realistic", [False, True])
def test_a_dense_read_on_several_decoders_equals_one_decoder(tmp_path, monkeypatch, realistic):
    """5 fps of a 10 fps video with a keyframe a second: blocks of 8 keyframe intervals (40 targets),
    each worker starting its blocks from a keyframe; the same frames as one decoder reading on, and
    about as many frames decoded."""
    path = sparse_video(tmp_path, realistic=realistic)
    one_decoder = PyAVDecoder(open_video(path), workers=1)
    one = [(t, f) for t, f in one_decoder.frames_at(np.arange(200) * 0.2)]
    threads = _record_threads(monkeypatch)
    several = PyAVDecoder(open_video(path), workers=3)
    got = list(several.frames_at(np.arange(200) * 0.2))
    assert [t for t, _ in got] == [t for t, _ in one]
    for (_, a), (_, b) in zip(got, one):
        np.testing.assert_array_equal(a, b)
    assert [read_barcode(f) for _, f in got] == [2 * i for i in range(200)]
    assert sum(name.startswith(WORKER) for name in threads) == 3  # five blocks on three workers
    assert one_decoder.seeks == 0 and several.seeks >= 2  # a worker reads on into the next block it takes
    assert several.decoded <= one_decoder.decoded + 4 * 10  # at most a keyframe interval per block
    _same(read_frames(path, fps=5.0, decode_workers=3), read_frames(path, fps=5.0, decode_workers=1))


def test_dense_blocks_too_short_for_the_memory_bound_keep_one_decoder(tmp_path, monkeypatch):
    """5 fps, a keyframe a second, 4 workers (6 blocks counted as held): 8 intervals are 40 targets; a
    bound of 10 held frames per block leaves 10 (2 s, enough); of 4, 0.8 s (less than an interval)
    and of 3, fewer than a sparse block: one decoder."""
    import vidqa.videoio.pyav_backend as backend

    path = sparse_video(tmp_path)
    decoder = PyAVDecoder(open_video(path), workers=4)
    held_bytes = 6 * decoder.out_w * decoder.out_h * 3  # one frame in each block held
    for frames, size in [(100, 40), (10, 10), (4, None), (3, None)]:
        monkeypatch.setattr(backend, "DENSE_AHEAD_BYTES", frames * held_bytes)
        assert decoder._dense_block_targets(interval=1.0, gap=0.2) == size
    threads = _record_threads(monkeypatch)
    got = read_frames(path, fps=5.0, decode_workers=4)
    assert len(got.times) == 200 and threads == {"vidqa-decode"}


def test_leaving_a_parallel_read_early_ends_its_threads_and_closes_its_files(tmp_path):
    path = sparse_video(tmp_path)
    before = _decode_threads()
    # 16 blocks: the workers wait for the consumer after the first few.
    stream = iter_chunks(path, times=np.arange(64) * 0.6, chunk_frames=2, decode_workers=3)
    first = next(stream)
    assert [read_barcode(f) for f in first.frames] == [0, 6]
    assert _decode_threads() > before + 1  # the workers are there
    stream.close()
    assert _wait_for_threads(before) == before
    deadline = time.monotonic() + 5
    while open_fds_to(path) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert open_fds_to(path) == 0


def _at_the_40th_frame(action):
    """(a per-frame hook that runs ``action`` on the 40th decoded frame of any thread, the names of
    the threads it ran in): a decoder that stalls or fails part-way."""
    count, lock, threads = [0], threading.Lock(), []

    def hook():
        with lock:
            count[0] += 1
            hit = count[0] == 40
        if hit:
            threads.append(threading.current_thread().name)
            action()

    return hook, threads


def test_a_stalled_worker_raises_stalled(tmp_path, monkeypatch):
    path = sparse_video(tmp_path)
    release = threading.Event()
    stall_at_the_40th_frame, stuck_in = _at_the_40th_frame(lambda: release.wait(30))
    _patch_decode(monkeypatch, stall_at_the_40th_frame)
    before = _decode_threads()
    got, t0 = [], time.perf_counter()
    with pytest.raises(VideoError, match="decoding stalled"):
        for chunk in iter_chunks(path, num_frames=16, chunk_frames=2, decode_workers=2, timeout_s=0.5):
            got += [read_barcode(f) for f in chunk.frames]
    assert time.perf_counter() - t0 < 5 and got == [25 * i for i in range(len(got))]
    assert stuck_in[0].startswith(WORKER)
    release.set()
    assert _wait_for_threads(before) == before


def test_a_failing_worker_is_a_project_error_after_the_frames_before_it(tmp_path, monkeypatch):
    path = sparse_video(tmp_path)
    def boom():
        raise RuntimeError("boom")

    fail_at_the_40th_frame, failed_in = _at_the_40th_frame(boom)
    _patch_decode(monkeypatch, fail_at_the_40th_frame)
    before = _decode_threads()
    got = []
    with pytest.raises(VideoError, match=r"decoding failed \(RuntimeError: boom\)$"):
        for chunk in iter_chunks(path, num_frames=16, chunk_frames=1, decode_workers=2):
            got += [read_barcode(f) for f in chunk.frames]
    assert got == [25 * i for i in range(len(got))] and len(got) < 16 and failed_in[0].startswith(WORKER)
    assert _wait_for_threads(before) == before


def test_a_truncated_file_read_sparsely_yields_what_decodes(tmp_path, monkeypatch, caplog):
    """An MP4 with its index first, cut in half: the index lists frames that are not there."""
    full = sparse_video(tmp_path, container_options={"movflags": "faststart"})
    data = full.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    one = read_frames(cut, num_frames=16, decode_workers=1)
    threads = _record_threads(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="vidqa.video"):
        many = read_frames(cut, num_frames=16, decode_workers=3)
    assert any(name.startswith(WORKER) for name in threads)
    _same(many, one)
    numbers = [read_barcode(f) for f in many.frames]
    assert many.truncated and 3 < len(numbers) < 14 and numbers == [25 * i for i in range(len(numbers))]
    assert any("ends early" in r.getMessage() for r in caplog.records)


def test_damaged_packets_are_skipped_and_reported_as_by_one_decoder(tmp_path, monkeypatch, caplog):
    """The same frames, times and warning. Only the pixels of a frame that FFmpeg patches up from
    damaged data may differ: they depend on its thread count, with one decoder too."""
    data = bytearray(sparse_video(tmp_path, container_options={"movflags": "faststart"}).read_bytes())
    middle = len(data) // 2
    data[middle:middle + 2000] = bytes(2000)  # around frame 190: target 20 s gets the nearest good one
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))

    def read(workers):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="vidqa.video"):
            got = read_frames(damaged, num_frames=16, decode_workers=workers)
        return got, [r.getMessage() for r in caplog.records]

    one, one_warnings = read(1)
    threads = _record_threads(monkeypatch)
    got, warnings = read(3)
    assert any(name.startswith(WORKER) for name in threads)
    np.testing.assert_array_equal(got.times, one.times)
    numbers = [read_barcode(f) for f in got.frames]
    assert numbers == [read_barcode(f) for f in one.frames] and numbers[8] != 200 and not got.truncated
    assert sum(np.array_equal(a, b) for a, b in zip(got.frames, one.frames)) >= 15
    assert warnings == one_warnings and "damaged packets" in warnings[0]


def test_a_parallel_read_decodes_only_a_few_blocks_ahead_of_its_consumer(tmp_path, monkeypatch):
    path = sparse_video(tmp_path)
    converted, lock, real_convert = [0], threading.Lock(), PyAVDecoder.convert

    def convert(self, frame):
        with lock:
            converted[0] += 1
        return real_convert(self, frame)

    monkeypatch.setattr(PyAVDecoder, "convert", convert)
    frames = PyAVDecoder(open_video(path), workers=2).frames_at(np.arange(64) * 0.6)
    next(frames)
    time.sleep(0.5)  # time enough to decode all 64 if nothing held the workers back
    assert converted[0] <= (AHEAD_PER_WORKER * 2 + 1) * BLOCK_TARGETS  # 20 of 64
    assert len(list(frames)) == 63 and converted[0] == 64


@pytest.mark.parametrize("workers", [0, -1, True, 2.5, "4"])
def test_bad_worker_counts_are_config_errors(tmp_path, workers):
    path = make_video(tmp_path / "a.mp4", 5)
    with pytest.raises(ConfigError, match="decode_workers must be a positive integer or None") as info:
        list(iter_chunks(path, decode_workers=workers))
    assert "\n" not in str(info.value)


def test_ordered_map_keeps_order_and_bounds_the_jobs_ahead():
    lock, ahead_seen, consumed = threading.Lock(), [], [0]

    def run(state, job, halted):
        with lock:
            ahead_seen.append(job - consumed[0])
        time.sleep(0.002 * (job % 3))  # uneven jobs finish out of order
        return job * state

    got = []
    results = ordered_map(40, run, workers=3, ahead=5, open_state=lambda k: 10, close_state=lambda s: None)
    for value in results:
        got.append(value)
        with lock:
            consumed[0] = len(got)
        time.sleep(0.003)  # a slow consumer: the workers must wait for it
    # A job starts while fewer than 5 past the consumer's are taken (consumed[0] lags it by one).
    assert got == [10 * i for i in range(40)] and len(ahead_seen) == 40 and max(ahead_seen) <= 5


def test_ordered_map_raises_in_place_and_closes_every_state():
    opened, closed = [], []

    def run(state, job, halted):
        if job == 7:
            raise KeyError("seven")
        return job

    def open_state(k):
        opened.append(k)
        return k

    results = ordered_map(20, run, workers=3, ahead=6, open_state=open_state, close_state=closed.append,
                          name="vidqa-test-pool")
    got = []
    with pytest.raises(KeyError, match="seven"):
        for value in results:
            got.append(value)
    assert got == list(range(7)) and opened and sorted(closed) == sorted(opened)
    assert not any(t.name.startswith("vidqa-test-pool") for t in threading.enumerate())


def test_decode_workers_setting_reaches_the_config_and_leaves_the_memory_key_alone():
    """--decode-workers / VIDQA_DECODE_WORKERS set VideoConfig.decode_workers (validated there);
    parallel decoders return the same frames, so a memory ingested with any count is reused."""
    from vidqa.app.settings import resolve
    from vidqa.config import VideoConfig, VidqaConfig
    from vidqa.errors import ConfigError

    assert resolve({"decode_workers": 3}, environ={}).config.video.decode_workers == 3
    assert resolve({}, environ={"VIDQA_DECODE_WORKERS": "1"}).config.video.decode_workers == 1
    assert resolve({}, environ={}).config.video.decode_workers is None
    for bad in (0, True, 2.0):
        with pytest.raises(ConfigError, match="decode_workers"):
            VideoConfig(decode_workers=bad)
    assert (VidqaConfig(video=VideoConfig(decode_workers=1)).ingest_key()
            == VidqaConfig(video=VideoConfig(decode_workers=4)).ingest_key() == VidqaConfig().ingest_key())
