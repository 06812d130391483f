"""Streaming promises: bounded memory, a stalled decoder raises instead of hanging (while a slow one
or a slow caller does not), an abandoned stream releases its thread and file, and whatever a
decoder raises comes out as the project's own error."""

import threading
import time

import pytest

from vidqa.errors import ResourceError, VideoError
from vidqa.video import iter_chunks, open_video, read_frames
from vidqa.videoio import probe
from vidqa.videoio import pyav_backend
from vidqa.videoio.pyav_backend import PyAVDecoder

from videos import make_video, open_fds_to, read_barcode


@pytest.fixture
def clip(tmp_path):
    return make_video(tmp_path / "clip.mp4", 60, fps=10)  # 6 s, every frame sampled at fps=10


_REAL_DECODE = PyAVDecoder._decode


def _patch_decode(monkeypatch, before_frame):
    """Runs ``before_frame(i)`` before the decoder hands over its i-th decoded frame."""

    def decode(self, container, stream, beat):
        for i, frame in enumerate(_REAL_DECODE(self, container, stream, beat)):
            before_frame(i)
            yield frame

    monkeypatch.setattr(PyAVDecoder, "_decode", decode)


def test_a_decoder_stuck_from_the_start_raises_stalled(clip, monkeypatch):
    release = threading.Event()
    _patch_decode(monkeypatch, lambda i: release.wait(30))
    t0 = time.perf_counter()
    with pytest.raises(VideoError, match="decoding stalled"):
        list(iter_chunks(clip, fps=10.0, timeout_s=0.5))
    assert time.perf_counter() - t0 < 3
    release.set()


def test_a_decoder_stuck_mid_file_delivers_what_it_had_then_raises(clip, monkeypatch):
    release = threading.Event()
    _patch_decode(monkeypatch, lambda i: release.wait(30) if i == 30 else None)
    got = []
    with pytest.raises(VideoError, match="decoding stalled"):
        for chunk in iter_chunks(clip, fps=10.0, chunk_frames=8, timeout_s=0.5):
            got += [read_barcode(f) for f in chunk.frames]
    release.set()
    assert got[:24] == list(range(24)) and len(got) <= 32


def test_a_slow_but_steady_decoder_is_not_a_stall(clip, monkeypatch):
    _patch_decode(monkeypatch, lambda i: time.sleep(0.02))  # a 20-frame chunk takes 0.4 s > timeout
    chunks = list(iter_chunks(clip, fps=10.0, chunk_frames=20, timeout_s=0.25))
    assert [len(c.frames) for c in chunks] == [20, 20, 20]


def test_a_slow_caller_is_not_a_stall(clip):
    got = []
    for chunk in iter_chunks(clip, fps=10.0, chunk_frames=20, timeout_s=0.2):
        time.sleep(0.4)  # the model takes its time over each chunk
        got += [read_barcode(f) for f in chunk.frames]
    assert got == list(range(60))


def test_a_stalled_probe_raises(clip, monkeypatch):
    release = threading.Event()
    monkeypatch.setattr(probe, "_probe", lambda p: release.wait(30))
    with pytest.raises(VideoError, match="stalled"):
        open_video(clip, timeout_s=0.3)
    release.set()


def _decode_threads() -> int:
    return sum(t.name == "vidqa-decode" and t.is_alive() for t in threading.enumerate())


def test_leaving_a_stream_early_releases_its_thread_and_file(clip):
    before = _decode_threads()
    stream = iter_chunks(clip, fps=10.0, chunk_frames=4)
    first = next(stream)
    assert len(first.frames) == 4 and open_fds_to(clip) >= 1
    stream.close()
    deadline = time.monotonic() + 5
    while (_decode_threads() > before or open_fds_to(clip)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _decode_threads() == before and open_fds_to(clip) == 0


def test_anything_a_decoder_raises_comes_out_as_a_project_error(clip, monkeypatch):
    def fail_with(err):
        def raise_it(i):
            if i == 3:
                raise err
        return raise_it

    _patch_decode(monkeypatch, fail_with(RuntimeError("boom")))
    with pytest.raises(VideoError, match=r"decoding failed \(RuntimeError: boom\)"):
        read_frames(clip, fps=10.0)
    _patch_decode(monkeypatch, fail_with(MemoryError()))
    with pytest.raises(ResourceError, match="out of memory"):
        read_frames(clip, fps=10.0)


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


@pytest.mark.parametrize("workers", [1, 2])
def test_memory_stays_flat_while_streaming(tmp_path, monkeypatch, workers):
    """1,200 frames of 320x240 (276 MB if held) stream with a peak of a few chunks on one decoder;
    several decoders of a dense read add at most ``DENSE_AHEAD_BYTES`` (64 MiB here: blocks of 72
    frames, 3.6 s of a video with a keyframe every 2 s) of blocks decoded ahead."""
    monkeypatch.setattr(pyav_backend, "DENSE_AHEAD_BYTES", 64 * 2**20)
    path = make_video(tmp_path / "ram.mp4", 1200, fps=20, width=320, height=240, gop=40)
    for _ in iter_chunks(path, fps=20.0, num_frames=40, chunk_frames=8, decode_workers=workers):
        pass  # warm up: codec, threads, allocator pools
    base = _rss_mb()
    peak, count = base, 0
    for chunk in iter_chunks(path, fps=20.0, chunk_frames=8, decode_workers=workers):
        count += len(chunk.frames)
        peak = max(peak, _rss_mb())
    assert count == 1200
    assert peak - base < 40 + (64 if workers > 1 else 0)
