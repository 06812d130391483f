"""Video reader promises, on videos the tests generate with the frame number drawn in each frame."""

import os
import threading
import time

import av
import numpy as np
import pytest

from vidqa import video as video_mod
from vidqa.errors import ConfigError, VideoError
from vidqa.video import iter_chunks, open_video, read_frames, sample_times, target_size

from videos import make_video, read_barcode

CODECS = [("libx264", "mp4"), ("libx265", "mp4"), ("libvpx-vp9", "webm"), ("libsvtav1", "mkv"),
          ("mjpeg", "avi")]


def _have(codec):
    return codec in av.codecs_available


@pytest.mark.parametrize("codec,ext", CODECS)
def test_each_codec_returns_the_frames_and_times_it_claims(tmp_path, codec, ext):
    if not _have(codec):
        pytest.skip(f"encoder {codec} not available in this PyAV build")
    path = make_video(tmp_path / f"v.{ext}", 60, fps=10, codec=codec)
    info = open_video(path)
    assert info.duration == pytest.approx(6.0, abs=0.11) and info.fps == pytest.approx(10)
    got = read_frames(path, fps=2.0)
    numbers = [read_barcode(f) for f in got.frames]
    assert numbers == list(range(0, 60, 5))
    np.testing.assert_allclose(got.times, np.arange(12) * 0.5, atol=1e-6)
    assert got.indices.tolist() == list(range(12))


def test_sparse_sampling_seeks_and_stays_frame_accurate(tmp_path):
    path = make_video(tmp_path / "long.mp4", 600, fps=10, gop=30)  # 60 s, keyframe every 3 s
    got = read_frames(path, num_frames=7)
    step = 60.0 / 7
    expected = [int(round(i * step * 10)) for i in range(7)]
    numbers = [read_barcode(f) for f in got.frames]
    assert all(abs(a - b) <= 1 for a, b in zip(numbers, expected)), (numbers, expected)
    np.testing.assert_allclose(got.times, np.array(numbers) / 10.0, atol=1e-6)


def test_variable_frame_rate_returns_nearest_frames_with_true_times(tmp_path):
    times = [0.0, 0.1, 0.2, 1.5, 1.6, 3.7, 4.0, 4.1, 6.0, 6.5]
    path = make_video(tmp_path / "vfr.mkv", len(times), fps=10, times=times, container="matroska")
    got = read_frames(path, fps=1.0)
    for t_target, t_got, frame in zip(np.arange(len(got.times)), got.times, got.frames):
        nearest = min(times, key=lambda t: abs(t - t_target))
        assert t_got == pytest.approx(nearest, abs=1e-3)
        assert read_barcode(frame) == times.index(nearest)


def test_rotation_metadata_is_honoured(tmp_path):
    path = make_video(tmp_path / "rot.mp4", 10, fps=5, width=96, height=64, rotate=90)
    info = open_video(path)
    if info.rotation == 0:
        pytest.skip("this muxer did not store the rotation")
    assert (info.width, info.height) == (64, 96)
    got = read_frames(path, fps=1.0)
    assert got.frames.shape[1:3] == (96, 64)
    upright = np.rot90(got.frames[0], k=info.rotation // 90)  # undo: back to the encoded frame
    assert read_barcode(upright) == 0


def test_one_frame_and_very_short_videos(tmp_path):
    one = make_video(tmp_path / "one.mp4", 1, fps=25)
    info = open_video(one)
    assert info.num_frames == 1 and info.duration > 0
    got = read_frames(one, fps=1.0)
    assert len(got.frames) == 1 and read_barcode(got.frames[0]) == 0
    short = make_video(tmp_path / "short.mp4", 5, fps=25)  # 0.2 s
    got = read_frames(short, fps=1.0)
    assert len(got.frames) == 1 and got.times[0] == 0.0


def test_long_sparse_video_is_quick(tmp_path):
    path = make_video(tmp_path / "sparse.mp4", 240, fps=1 / 30, gop=10)  # 2 hours, a frame / 30 s
    t0 = time.perf_counter()
    info = open_video(path)
    assert info.duration == pytest.approx(7200, rel=0.01)
    got = read_frames(path, fps=1.0, max_frames=24)
    assert len(got.frames) == 24 and time.perf_counter() - t0 < 20
    numbers = [read_barcode(f) for f in got.frames]
    assert numbers == sorted(numbers) and numbers[0] == 0 and numbers[-1] >= 225


def test_large_frames_are_resized_under_max_pixels(tmp_path):
    path = make_video(tmp_path / "big.mp4", 2, fps=1, width=1920, height=1080)
    got = read_frames(path, fps=1.0, max_pixels=64 * 36 * 4)
    h, w = got.frames.shape[1:3]
    assert h * w <= 64 * 36 * 4 and abs(w / h - 16 / 9) < 0.1
    assert target_size(100, 50, None) == (100, 50)


def test_non_ascii_path_with_spaces(tmp_path):
    path = make_video(tmp_path / "vidéo été 東京.mp4", 10, fps=5)
    assert len(read_frames(path, fps=1.0).frames) == 2


def test_chunks_are_bounded_and_cover_all_samples(tmp_path):
    path = make_video(tmp_path / "c.mp4", 100, fps=10)
    chunks = list(iter_chunks(path, fps=2.0, chunk_frames=6))
    assert [len(c.frames) for c in chunks] == [6, 6, 6, 2]
    assert np.concatenate([c.indices for c in chunks]).tolist() == list(range(20))


def test_sample_times_respects_caps():
    info = video_mod.VideoInfo("x", 3600.0, 30.0, 108000, 64, 64, 0, "h264", "mp4")
    assert len(sample_times(info, fps=1.0)) == 3600
    capped = sample_times(info, fps=1.0, max_frames=100)
    assert len(capped) == 100 and capped[-1] < 3600 and capped[1] == pytest.approx(36.0)
    assert len(sample_times(info, num_frames=8)) == 8
    slow = video_mod.VideoInfo("x", 10.0, 0.5, 5, 64, 64, 0, "h264", "mp4")
    assert len(sample_times(slow, fps=1.0)) == 5  # never more than the video's own frames


def _error(path_or_obj):
    with pytest.raises(VideoError) as info:
        open_video(path_or_obj)
    return str(info.value)


def test_error_cases_have_one_line_reasons(tmp_path):
    assert "no such file" in _error(tmp_path / "missing.mp4")
    assert "directory" in _error(tmp_path)
    (tmp_path / "empty.mp4").write_bytes(b"")
    assert "empty" in _error(tmp_path / "empty.mp4")
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    assert "not a readable video" in _error(tmp_path / "noise.mp4")
    (tmp_path / "notes.txt").write_text("hello, this is not a video\n" * 50)
    assert "not a readable video" in _error(tmp_path / "notes.txt")
    assert "URL" in _error("https://example.com/v.mp4")
    for msg in (_error(tmp_path / "missing.mp4"), _error(tmp_path / "noise.mp4")):
        assert "\n" not in msg


def test_audio_only_and_still_image(tmp_path):
    audio = tmp_path / "a.m4a"
    out = av.open(str(audio), "w")
    stream = out.add_stream("aac", rate=16000)
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
    frame.sample_rate = 16000
    for packet in stream.encode(frame):
        out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    out.close()
    assert "no video stream" in _error(audio)
    from PIL import Image

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "still.png")
    assert "still image" in _error(tmp_path / "still.png")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file(tmp_path):
    path = make_video(tmp_path / "locked.mp4", 5)
    path.chmod(0)
    assert "permission" in _error(path)


def test_truncated_file_yields_the_decodable_prefix_or_a_clear_error(tmp_path):
    path = make_video(tmp_path / "full.mkv", 100, fps=10, container="matroska")
    data = path.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    got = read_frames(cut, fps=2.0)
    numbers = [read_barcode(f) for f in got.frames]
    assert 0 < len(numbers) < 20 and got.truncated
    assert numbers[:-1] == list(range(0, 5 * (len(numbers) - 1), 5))
    assert 0 <= 5 * (len(numbers) - 1) - numbers[-1] <= 3  # the last decodable frame, not a later one
    mp4 = make_video(tmp_path / "full.mp4", 100, fps=10)
    (tmp_path / "noindex.mp4").write_bytes(mp4.read_bytes()[: len(mp4.read_bytes()) // 2])
    with pytest.raises(VideoError):  # moov at the end: the index is gone, nothing is recoverable
        list(iter_chunks(tmp_path / "noindex.mp4"))


def test_a_stalled_decoder_raises_instead_of_hanging(tmp_path, monkeypatch):
    path = make_video(tmp_path / "s.mp4", 20, fps=10)
    release = threading.Event()

    def stuck(self, targets):
        release.wait(30)
        yield from ()

    monkeypatch.setattr(video_mod._PyAVDecoder, "frames_at", stuck)
    t0 = time.perf_counter()
    with pytest.raises(VideoError, match="stalled"):
        list(iter_chunks(path, timeout_s=1.0))
    release.set()
    assert time.perf_counter() - t0 < 5


def test_decord_backend_missing_is_a_config_error(tmp_path):
    path = make_video(tmp_path / "d.mp4", 10, fps=5)
    try:
        import decord  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="decord"):
            list(iter_chunks(path, decoder="decord"))
    else:
        assert len(read_frames(path, decoder="decord").frames) == 2
    with pytest.raises(ConfigError):
        list(iter_chunks(path, decoder="magic"))


def test_memory_stays_flat_while_streaming(tmp_path):
    path = make_video(tmp_path / "ram.mp4", 1200, fps=20, width=320, height=240)

    def rss_mb():
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024

    growth = []
    for limit in (10, 60):
        before = rss_mb()
        for _ in iter_chunks(path, fps=20.0, num_frames=limit * 20, chunk_frames=8):
            pass
        growth.append(rss_mb() - before)
    assert growth[1] < 30  # 1,200 frames of 320x240 would be 270 MB if held


_FUZZ_BASE = {}


def _base_bytes(tmp_path_factory):
    if "mp4" not in _FUZZ_BASE:
        d = tmp_path_factory.mktemp("fuzz")
        _FUZZ_BASE["mp4"] = make_video(d / "base.mp4", 20, fps=10).read_bytes()
    return _FUZZ_BASE["mp4"]


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=int(os.environ.get("VIDQA_FUZZ_EXAMPLES", "25")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.floats(0.0, 1.0), flips=st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)), max_size=8))
def test_fuzzed_files_raise_only_video_errors(tmp_path_factory, cut, flips):
    data = bytearray(_base_bytes(tmp_path_factory))
    for where, value in flips:
        data[int(where * (len(data) - 1))] ^= value
    data = bytes(data[: max(1, int(cut * len(data)))])
    path = tmp_path_factory.mktemp("f") / "fuzz.mp4"
    path.write_bytes(data)
    try:
        for chunk in iter_chunks(path, fps=5.0, timeout_s=10):
            assert chunk.frames.dtype == np.uint8 and chunk.frames.ndim == 4
    except VideoError as err:
        assert "\n" not in str(err)
