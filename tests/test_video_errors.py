"""Bad inputs to the video reader: each gets frames or one VideoError line naming its reason.

Damaged files that still hold decodable frames give those frames (and say they are truncated);
files with nothing to give are errors. Messages start with the path and are one line.
"""

import logging
import os

import numpy as np
import pytest
from PIL import Image

from vidqa.errors import VideoError
from vidqa.video import iter_chunks, open_video, read_frames
from vidqa.videoio import probe

from videos import make_video, read_barcode, write_audio, write_empty_video


def error_of(target, *, read=False) -> str:
    with pytest.raises(VideoError) as info:
        if read:
            list(iter_chunks(target))
        else:
            open_video(target)
    message = str(info.value)
    assert "\n" not in message and len(message) < 400
    return message


def test_urls_are_refused_with_advice():
    for url in ("https://example.com/v.mp4", "http://x/y.mkv", "rtsp://cam/stream", "s3://bucket/v.mp4",
                "file:///tmp/v.mp4"):
        message = error_of(url)
        assert message.startswith(url) and "URLs are not supported" in message and "download" in message


def test_missing_directory_empty_and_wrong_type(tmp_path):
    assert error_of(tmp_path / "missing.mp4").endswith("missing.mp4: no such file")
    assert "is a directory" in error_of(tmp_path)
    (tmp_path / "empty.mp4").write_bytes(b"")
    assert "empty file (0 bytes)" in error_of(tmp_path / "empty.mp4")
    assert "expected a video file path, got int" in error_of(3)
    assert "no such file" in error_of(tmp_path / "missing.mp4", read=True)


def test_a_named_pipe_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    assert "not a regular file" in error_of(fifo)  # opening it would wait for a writer forever


def test_unreadable_file(tmp_path, monkeypatch):
    path = make_video(tmp_path / "locked.mp4", 5)
    path.chmod(0)
    if os.geteuid() == 0:  # root reads whatever the mode: make the check see what a user would
        real = os.access
        monkeypatch.setattr(probe.os, "access", lambda p, mode: False if str(p) == str(path) else real(p, mode))
    assert "permission denied" in error_of(path)


def test_random_bytes_and_text_are_not_videos(tmp_path):
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    assert "not a video (unrecognised format)" in error_of(tmp_path / "noise.mp4")
    for name in ("notes.txt", "notes.mp4"):
        (tmp_path / name).write_text("hello, this is not a video\n" * 50)
        assert "not a video (it is a text file)" in error_of(tmp_path / name)


@pytest.mark.parametrize("ext", ["png", "jpg", "webp", "gif", "bmp"])
def test_a_still_image_is_not_a_video(tmp_path, ext):
    path = tmp_path / f"still.{ext}"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (32, 48, 3), dtype=np.uint8)).save(path)
    assert "is a still image, not a video" in error_of(path)


def test_audio_only_with_and_without_cover_art(tmp_path):
    assert error_of(write_audio(tmp_path / "a.m4a")).endswith("has no video stream (audio only)")
    assert "audio only, with cover art" in error_of(write_audio(tmp_path / "c.m4a", cover_art=True))


def test_a_video_stream_without_frames_has_zero_duration(tmp_path):
    assert "zero duration" in error_of(write_empty_video(tmp_path / "e.avi"))


def test_an_implausible_duration_is_a_damaged_header(tmp_path, monkeypatch):
    path = make_video(tmp_path / "v.mp4", 30, fps=10)
    monkeypatch.setattr(probe, "MAX_DURATION_S", 2.0)  # a 3 s clip stands in for a 10^9 s header
    assert "implausible duration of 3 s" in error_of(path)


def test_mp4_cut_before_its_index_is_damaged_or_truncated(tmp_path):
    data = make_video(tmp_path / "full.mp4", 100, fps=10).read_bytes()  # index (moov) at the end
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    assert "damaged or truncated MP4/MOV file" in error_of(cut)
    assert "damaged or truncated MP4/MOV file" in error_of(cut, read=True)


@pytest.mark.parametrize("name,options", [("cut.mkv", {}), ("cut.mp4", {"movflags": "faststart"})])
def test_a_file_cut_mid_stream_yields_its_decodable_prefix(tmp_path, caplog, name, options):
    container = "matroska" if name.endswith("mkv") else None
    full = make_video(tmp_path / f"full-{name}", 100, fps=10, container=container, container_options=options)
    data = full.read_bytes()
    cut = tmp_path / name
    cut.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING, logger="vidqa.video"):
        got = read_frames(cut, fps=2.0)
    got_numbers = [read_barcode(f) for f in got.frames]
    assert 3 < len(got_numbers) < 20 and got.truncated
    assert got_numbers[:-1] == list(range(0, 5 * (len(got_numbers) - 1), 5))
    assert 0 <= 5 * (len(got_numbers) - 1) - got_numbers[-1] <= 3  # the last decodable frame, not a later one
    assert any("ends early" in r.getMessage() for r in caplog.records)
    sparse = read_frames(cut, num_frames=4)  # seeking into the missing half stops there too
    assert sparse.truncated and [read_barcode(f) for f in sparse.frames][0] == 0


def test_a_whole_file_is_not_called_truncated(tmp_path, caplog):
    path = make_video(tmp_path / "whole.mkv", 100, fps=10, container="matroska")
    with caplog.at_level(logging.WARNING, logger="vidqa.video"):
        got = read_frames(path, fps=2.0)
    assert len(got.times) == 20 and not got.truncated and not caplog.records


def test_damage_in_the_middle_costs_only_the_damaged_frames(tmp_path):
    data = bytearray(make_video(tmp_path / "g.mkv", 100, fps=10, gop=10, container="matroska").read_bytes())
    middle = len(data) // 2
    data[middle:middle + 300] = bytes(300)
    damaged = tmp_path / "damaged.mkv"
    damaged.write_bytes(bytes(data))
    got = read_frames(damaged, fps=2.0)
    got_numbers = [read_barcode(f) for f in got.frames]
    assert len(got_numbers) == 20 and got_numbers[-4:] == [80, 85, 90, 95]


def test_nothing_decodable_is_an_error_not_an_empty_result(tmp_path):
    data = bytearray(make_video(tmp_path / "v.mkv", 30, fps=10, container="matroska").read_bytes())
    header_end = data.find(b"\x1f\x43\xb6\x75")  # the first Matroska cluster: all frames follow it
    damaged = tmp_path / "headers-only.mkv"
    damaged.write_bytes(bytes(data[:header_end]))
    message = error_of(damaged, read=True)
    assert "no decodable video frames" in message or "damaged or truncated" in message
