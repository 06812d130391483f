"""Video reader promises on videos the tests generate, each frame showing its own number.

Frames and timestamps: every codec returns the frame nearest each target and that frame's own
time; seeking lands on the same frames as decoding forward; variable frame rate, orientation,
anamorphic pixels, one frame, sub-second, ten-hour sparse and 4K videos; chunking.
"""

import time
from fractions import Fraction

import av
import numpy as np
import pytest

from vidqa.errors import ConfigError
from vidqa.video import (FrameChunk, VideoInfo, choose_decoder, iter_chunks, open_video, read_frames,
                         sample_times, target_size)
from vidqa.videoio.pyav_backend import PyAVDecoder

from videos import barcode_frame, make_video, read_barcode

CODECS = [("libx264", "mp4", "h264"), ("libx265", "mp4", "hevc"), ("libvpx-vp9", "webm", "vp9"),
          ("libsvtav1", "mkv", "av1"), ("libaom-av1", "mkv", "av1"), ("mjpeg", "avi", "mjpeg")]


def need(codec):
    if codec not in av.codecs_available:
        pytest.skip(f"encoder {codec} is not in this PyAV build")


def numbers(chunk: FrameChunk) -> list[int]:
    return [read_barcode(f) for f in chunk.frames]


@pytest.mark.parametrize("codec,ext,name", CODECS)
def test_each_codec_returns_the_frames_and_times_it_claims(tmp_path, codec, ext, name):
    need(codec)
    path = make_video(tmp_path / f"v.{ext}", 60, fps=10, codec=codec)
    info = open_video(path)
    assert info.codec == name and (info.width, info.height) == (96, 64) and info.rotation == 0
    assert info.duration == pytest.approx(6.0, abs=0.11) and info.fps == pytest.approx(10)
    assert info.num_frames == pytest.approx(60, abs=1)
    got = read_frames(path, fps=2.0)
    assert numbers(got) == list(range(0, 60, 5))
    np.testing.assert_allclose(got.times, np.arange(12) * 0.5, atol=1e-6)
    assert got.indices.tolist() == list(range(12)) and not got.truncated
    assert got.frames.dtype == np.uint8 and got.frames.shape == (12, 64, 96, 3)


SEEK_CASES = [("libx264", "mp4", False), ("libx264", "mp4", True), ("libx265", "mp4", False),
              ("libx265", "mp4", True), ("libvpx-vp9", "webm", False), ("libvpx-vp9", "webm", True),
              ("libsvtav1", "mkv", False), ("mjpeg", "avi", False)]


@pytest.mark.parametrize("codec,ext,realistic", SEEK_CASES)
def test_seeking_lands_on_the_nearest_frame_for_each_codec(tmp_path, codec, ext, realistic):
    """Far-apart targets are reached by seeking (B-frames, open GOPs and alt-refs included) and
    give exactly the frame nearest each target, with that frame's time."""
    need(codec)
    fps = 5
    path = make_video(tmp_path / f"s.{ext}", 150, fps=fps, codec=codec, gop=25, realistic=realistic)
    targets = np.array([0.33, 7.72, 13.06, 22.93, 29.46])  # none halfway between two frames
    expected = [int(round(t * fps)) for t in targets]
    got = read_frames(path, times=targets)
    assert numbers(got) == expected
    np.testing.assert_allclose(got.times, np.array(expected) / fps, atol=1e-6)
    decoder = PyAVDecoder(open_video(path))
    assert [t for t, _ in decoder.frames_at(targets)] == pytest.approx(np.array(expected) / fps)
    assert decoder.seeks >= 3 and decoder.decoded < 100  # it did seek, and skipped most frames


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_seeks_happen_only_where_they_skip_frames(tmp_path, ext):
    """60 s at 10 fps, a keyframe every 3 s: 2 fps reads on; one frame every 2 s (some keyframes
    lie between targets) and 7 frames over the minute seek, and decode fewer frames for it."""
    path = make_video(tmp_path / f"d.{ext}", 600, fps=10, gop=30,
                      container="matroska" if ext == "mkv" else None)
    info = open_video(path)
    dense = PyAVDecoder(info, workers=1)  # one decoder's policy (several cut a dense read into blocks)
    assert len(list(dense.frames_at(sample_times(info, fps=2.0)))) == 120
    assert dense.seeks == 0 and dense.decoded <= 600
    for fps, count, most in ((0.5, 30, 500), (1.0, 7, 200)):
        targets = sample_times(info, fps=fps, max_frames=count)
        decoder = PyAVDecoder(info)
        got = [(t, read_barcode(f)) for t, f in decoder.frames_at(targets)]
        assert [n for _, n in got] == [int(round(t * 10)) for t in targets]
        assert [t for t, _ in got] == pytest.approx([n / 10 for _, n in got])
        assert decoder.seeks >= 3 and decoder.decoded < most


def test_variable_frame_rate_returns_nearest_frames_with_true_times(tmp_path):
    times = [0.0, 0.1, 0.2, 1.5, 1.6, 3.7, 4.0, 4.1, 6.0, 6.5]
    path = make_video(tmp_path / "vfr.mkv", len(times), fps=10, times=times, container="matroska")
    got = read_frames(path, fps=1.0)
    assert len(got.times) >= 6
    for target, t_got, frame in zip(np.arange(len(got.times)), got.times, got.frames):
        nearest = min(times, key=lambda t: abs(t - target))
        assert t_got == pytest.approx(nearest, abs=1e-3)
        assert read_barcode(frame) == times.index(nearest)


def test_an_earlier_frame_stays_a_candidate_after_a_gap(tmp_path):
    """Frames at 0, 0.1, 5.0, 5.1 s: targets 1 and 2 s are nearest 0.1 s, target 3 s is nearest 5.0 s."""
    times = [0.0, 0.1, 5.0, 5.1]
    path = make_video(tmp_path / "gap.mkv", 4, fps=10, times=times, container="matroska")
    got = read_frames(path, times=[1.0, 2.0, 3.0])
    assert numbers(got) == [1, 1, 2]
    np.testing.assert_allclose(got.times, [0.1, 0.1, 5.0], atol=1e-3)


def _orientation_video(tmp_path, name, rot_ccw, hflip, n=5):
    """A clip that shows ``barcode_frame(i, 64, 96)`` (portrait) when displayed as PyAV documents
    ``set_display_rotation``: turn the stored pixels ``rot_ccw`` degrees counter-clockwise, then
    mirror left-right if ``hflip``. So the stored pixels are that picture mirrored, then turned back."""
    def stored(i):
        shown = barcode_frame(i, 64, 96)
        if hflip:
            shown = shown[:, ::-1]
        return np.ascontiguousarray(np.rot90(shown, k=-rot_ccw // 90))

    h, w = stored(0).shape[:2]
    return make_video(tmp_path / name, n, fps=5, width=w, height=h, rotate=rot_ccw, hflip=hflip, draw=stored)


@pytest.mark.parametrize("rot_ccw,hflip", [(r, f) for r in (0, 90, 180, -90) for f in (False, True)])
def test_display_matrix_orientations_come_out_upright(tmp_path, rot_ccw, hflip):
    path = _orientation_video(tmp_path, "o.mp4", rot_ccw, hflip)
    info = open_video(path)
    assert (info.width, info.height) == (64, 96) and info.mirrored == hflip
    got = read_frames(path, fps=5.0)
    assert got.frames.shape[1:3] == (96, 64)
    assert numbers(got) == [0, 1, 2, 3, 4]  # a mirrored barcode would read its bits reversed
    assert got.frames[0, -10:, -10:].mean() > 200 and got.frames[0, -10:, :10].mean() < 150


def test_an_iphone_portrait_clip_is_turned_clockwise(tmp_path):
    """iPhones store portrait clips sideways with the tkhd matrix (0 1 / -1 0): turn 90 clockwise."""
    iphone = [0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30]
    path = make_video(tmp_path / "iphone.mov", 3, fps=5, width=96, height=64, display_matrix=iphone,
                      draw=lambda i: np.ascontiguousarray(np.rot90(barcode_frame(i, 64, 96), k=1)))
    info = open_video(path)
    assert (info.rotation, info.mirrored, info.width, info.height) == (90, False, 64, 96)
    assert numbers(read_frames(path, fps=5.0)) == [0, 1, 2]


def test_anamorphic_pixels_are_made_square(tmp_path):
    path = make_video(tmp_path / "sar.mp4", 4, fps=2, width=96, height=64, sample_aspect_ratio=Fraction(2, 1))
    info = open_video(path)
    assert (info.width, info.height) == (192, 64)
    got = read_frames(path, fps=2.0)
    assert got.frames.shape[1:3] == (64, 192) and numbers(got) == [0, 1, 2, 3]


def test_one_frame_and_very_short_videos(tmp_path):
    one = make_video(tmp_path / "one.mp4", 1, fps=25)
    info = open_video(one)
    assert info.num_frames == 1 and 0 < info.duration <= 0.05
    for kwargs in ({"fps": 1.0}, {"num_frames": 8}, {"fps": 30.0, "max_frames": 4}):
        got = read_frames(one, **kwargs)
        assert numbers(got) == [0] and got.times.tolist() == [0.0]
    short = make_video(tmp_path / "short.mp4", 5, fps=25)  # 0.2 s
    got = read_frames(short, fps=1.0)
    assert numbers(got) == [0] and got.times[0] == 0.0
    got = read_frames(short, num_frames=5)
    assert numbers(got) == [0, 1, 2, 3, 4]


def test_ten_hour_sparse_video_is_quick(tmp_path):
    path = make_video(tmp_path / "sparse.mp4", 600, fps=1 / 60, gop=10)  # 10 h, a frame a minute
    t0 = time.perf_counter()
    info = open_video(path)
    assert info.duration == pytest.approx(36000, rel=0.001) and info.num_frames == 600
    got = read_frames(path, fps=1.0, max_frames=24)
    expected = [i * 25 for i in range(24)]  # uniform over the whole video, not its first 24 minutes
    assert numbers(got) == expected
    np.testing.assert_allclose(got.times, np.array(expected) * 60.0, atol=1e-3)
    all_frames = read_frames(path, fps=1.0, chunk_frames=64)  # 1 fps is capped at the video's rate
    assert len(all_frames.times) == 600 and numbers(all_frames)[-3:] == [597, 598, 599]
    assert time.perf_counter() - t0 < 15


def test_4k_frames_are_resized_under_max_pixels(tmp_path):
    path = make_video(tmp_path / "4k.mp4", 2, fps=1, width=3840, height=2160)
    budget = 448 * 448
    got = read_frames(path, fps=1.0, max_pixels=budget)
    h, w = got.frames.shape[1:3]
    assert h * w <= budget and h * w > 0.95 * budget and abs(w / h - 16 / 9) < 0.01
    assert numbers(got) == [0, 1]


def test_target_size_keeps_aspect_and_budget():
    assert target_size(100, 50, None) == (100, 50) and target_size(100, 50, 10**6) == (100, 50)
    for w, h, budget in [(3840, 2160, 200_000), (4000, 2, 100), (2, 4000, 100), (7, 5, 3), (1, 1, 1)]:
        out_w, out_h = target_size(w, h, budget)
        assert 1 <= out_w * out_h <= budget and out_w <= w and out_h <= h
    assert target_size(3840, 2160, 200_000) == (596, 335)


def test_non_ascii_path_with_spaces(tmp_path):
    path = make_video(tmp_path / "vidéo d'été 東京 (1).mp4", 10, fps=5)
    assert open_video(path).num_frames == 10
    assert numbers(read_frames(path, fps=1.0)) == [0, 5]


def test_chunks_are_bounded_contiguous_and_equal_to_one_read(tmp_path):
    path = make_video(tmp_path / "c.mp4", 100, fps=10)
    chunks = list(iter_chunks(path, fps=2.0, chunk_frames=6))
    assert [len(c.frames) for c in chunks] == [6, 6, 6, 2]
    assert np.concatenate([c.indices for c in chunks]).tolist() == list(range(20))
    whole = read_frames(path, fps=2.0)
    np.testing.assert_array_equal(np.concatenate([c.frames for c in chunks]), whole.frames)
    np.testing.assert_array_equal(np.concatenate([c.times for c in chunks]), whole.times)


def test_explicit_times_are_sorted_and_clipped_to_the_video(tmp_path):
    path = make_video(tmp_path / "t.mp4", 50, fps=10)  # 5 s
    got = read_frames(path, times=[4.0, 1.0, 99.0, -3.0])
    assert numbers(got) == [0, 10, 40, 49] and not got.truncated


def test_animated_gif_is_a_video(tmp_path):
    path = make_video(tmp_path / "a.gif", 10, fps=10, codec="gif", width=96, height=64)
    info = open_video(path)
    assert info.num_frames == 10 and info.duration == pytest.approx(1.0, abs=0.11)


def test_raw_elementary_stream_without_timestamps(tmp_path):
    """A bare .h264 stream has no timing: frames are counted at the guessed rate, never sought."""
    path = make_video(tmp_path / "raw.h264", 40, fps=25, container="h264")
    info = open_video(path)
    assert info.fps == pytest.approx(25) and info.num_frames == 40 and info.duration == pytest.approx(40 / 25)
    got = read_frames(path, fps=5.0)
    assert numbers(got) == list(range(0, 5 * len(got.times), 5))
    np.testing.assert_allclose(got.times, np.array(numbers(got)) / 25, atol=1e-6)


def test_sample_times_by_rate_count_and_cap():
    info = VideoInfo("x", 3600.0, 30.0, 108000, 64, 64, 0, "h264", "mp4")
    by_rate = sample_times(info, fps=1.0)
    assert len(by_rate) == 3600 and by_rate[1] == 1.0 and by_rate[-1] == 3599.0
    capped = sample_times(info, fps=1.0, max_frames=100)
    assert len(capped) == 100 and capped[1] == pytest.approx(36.0) and capped[-1] == pytest.approx(3564.0)
    assert sample_times(info, num_frames=8).tolist() == [i * 450.0 for i in range(8)]
    assert len(sample_times(info, num_frames=8, max_frames=4)) == 4
    np.testing.assert_allclose(sample_times(info, num_frames=3600), by_rate)  # count = rate * duration
    slow = VideoInfo("x", 10.0, 0.5, 5, 64, 64, 0, "h264", "mp4")
    assert sample_times(slow, fps=1.0).tolist() == [0.0, 2.0, 4.0, 6.0, 8.0]  # never above the video's rate
    assert len(sample_times(slow, num_frames=50)) == 5  # nor more samples than frames


@pytest.mark.parametrize("kwargs", [{"fps": 0}, {"fps": -1.0}, {"fps": float("nan")}, {"num_frames": 0},
                                    {"max_frames": 0}, {"num_frames": 2.5}, {"max_frames": True}])
def test_bad_sampling_arguments_are_config_errors(kwargs):
    info = VideoInfo("x", 10.0, 10.0, 100, 64, 64, 0, "h264", "mp4")
    with pytest.raises(ConfigError):
        sample_times(info, **kwargs)


@pytest.mark.parametrize("kwargs", [{"chunk_frames": 0}, {"max_pixels": 0}, {"timeout_s": 0},
                                    {"decoder": "magic"}, {"fps": -2}])
def test_bad_reader_arguments_are_config_errors(tmp_path, kwargs):
    path = make_video(tmp_path / "a.mp4", 5)
    with pytest.raises(ConfigError):
        list(iter_chunks(path, **kwargs))


def test_sample_times_properties():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=200, deadline=None)
    @given(duration=st.floats(0.01, 1e5), video_fps=st.floats(0.01, 240), fps=st.floats(0.01, 60),
           num_frames=st.one_of(st.none(), st.integers(1, 5000)),
           max_frames=st.one_of(st.none(), st.integers(1, 5000)))
    def check(duration, video_fps, fps, num_frames, max_frames):
        frames = max(1, int(duration * video_fps))
        info = VideoInfo("x", duration, video_fps, frames, 8, 8, 0, "h264", "mp4")
        out = sample_times(info, fps=fps, num_frames=num_frames, max_frames=max_frames)
        assert out.dtype == np.float64 and len(out) >= 1 and out[0] == 0.0
        assert np.all(np.diff(out) > 0) and out[-1] < duration
        assert len(out) <= frames and (max_frames is None or len(out) <= max_frames)
        if num_frames is not None:
            assert len(out) == min(num_frames, frames, max_frames or num_frames)

    check()


def test_decord_is_asked_for_by_name_only(tmp_path):
    path = make_video(tmp_path / "d.mp4", 10, fps=5)
    info = open_video(path)
    assert choose_decoder(info, "auto") is PyAVDecoder and choose_decoder(info, "pyav") is PyAVDecoder
    try:
        import decord  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match=r"pip install 'vidqa\[decord\]'"):
            list(iter_chunks(path, decoder="decord"))
        hevc = VideoInfo("x", 1.0, 10.0, 10, 8, 8, 0, "hevc", "mp4")
        with pytest.raises(ConfigError, match="decord"):  # named but missing: said, whatever the codec
            choose_decoder(hevc, "decord")


def _decord():
    return pytest.importorskip("decord", reason="decord is optional (pip install 'vidqa[decord]')")


@pytest.mark.parametrize("realistic", [False, True])
def test_decord_returns_the_same_frames_as_pyav_on_h264(tmp_path, realistic):
    _decord()
    from vidqa.videoio.decord_backend import DecordDecoder

    path = make_video(tmp_path / "h.mp4", 150, fps=5, gop=25, realistic=realistic)
    assert choose_decoder(open_video(path), "decord") is DecordDecoder
    for kwargs in ({"fps": 1.0}, {"times": [0.33, 7.72, 13.06, 22.93, 29.46]}, {"fps": 1.0, "max_pixels": 1000}):
        a, b = read_frames(path, decoder="pyav", **kwargs), read_frames(path, decoder="decord", **kwargs)
        assert numbers(a) == numbers(b) and a.frames.shape == b.frames.shape
        np.testing.assert_allclose(a.times, b.times, atol=1e-6)


@pytest.mark.parametrize("rot_ccw,hflip", [(90, False), (0, True), (90, True), (180, False)])
def test_decord_frames_come_out_upright_too(tmp_path, rot_ccw, hflip):
    _decord()
    path = _orientation_video(tmp_path, "o.mp4", rot_ccw, hflip)
    got = read_frames(path, fps=5.0, decoder="decord")
    assert got.frames.shape[1:3] == (96, 64) and numbers(got) == [0, 1, 2, 3, 4]


def test_decord_request_for_hevc_is_served_by_pyav(tmp_path):
    _decord()
    need("libx265")
    path = make_video(tmp_path / "h.mp4", 20, fps=5, codec="libx265")
    assert choose_decoder(open_video(path), "decord") is PyAVDecoder
