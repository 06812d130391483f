"""The written video and ``vidqa synth``: decoded frames show the script, memory stays flat."""

import dataclasses
import json

import av
import numpy as np
import pytest

from vidqa.errors import ConfigError
from vidqa.synth import Timeline, check_question, make_timeline, render_frame, synth_main, vocab, write_video
from vidqa.synth.render import card_box, object_centre

W, H = 224, 128


@pytest.fixture(scope="module")
def decoded(tmp_path_factory):
    tl = make_timeline(2, 90, object_every=6.0, card_every=10.0, scene_every=20.0)
    path = write_video(tl, tmp_path_factory.mktemp("synth") / "v.mp4", fps=1.0, width=W, height=H)
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        frames = {int(round(f.time)): f.to_ndarray(format="rgb24") for f in c.decode(stream)}
        codec, rate = stream.codec_context.name, stream.average_rate
    return tl, path, frames, codec, rate


def _nearest_colour(pixel):
    return min(vocab.COLOURS, key=lambda c: np.abs(np.array(vocab.COLOURS[c]) - pixel.astype(int)).sum())


def test_video_is_h264_with_one_frame_per_second(decoded):
    tl, path, frames, codec, rate = decoded
    assert codec == "h264" and rate == 1 and sorted(frames) == list(range(90))
    assert not path.with_name(path.name + ".partial").exists()


def test_decoded_frames_equal_the_renderer_up_to_compression(decoded):
    tl, _, frames, _, _ = decoded
    for t in range(0, 90, 9):
        assert np.abs(frames[t].astype(int) - render_frame(tl, float(t), W, H).astype(int)).mean() < 12


def test_decoded_objects_have_their_colour(decoded):
    tl, _, frames, _, _ = decoded
    checked = 0
    for t, frame in frames.items():
        for o in tl.objects_at(float(t)):
            x, y = object_centre(o, float(t), W, H)
            if tl.anomaly_at(float(t)) is None and o.size == "large" and 0.15 < o.centre(t)[0] < 0.85:
                assert _nearest_colour(frame[y, x]) == o.colour, (t, o)
                checked += 1
    assert checked >= 10


def test_decoded_card_frames_differ_from_the_frames_around_them(decoded):
    tl, _, frames, _, _ = decoded
    top, left, bottom, right = card_box(W, H)
    for card in tl.cards:
        inside = [t for t in frames if card.start <= t < card.end and tl.anomaly_at(float(t)) is None]
        outside = [t for t in (int(card.start) - 1, int(card.end) + 1) if t in frames and tl.card_at(float(t)) is None]
        for t in inside:
            band = frames[t][top:bottom, left:right].astype(int).mean(axis=2)
            assert (band > 200).mean() > 0.5 and (band < 60).mean() > 0.05, (card, t)
            for u in outside:
                assert np.abs(frames[t].astype(int) - frames[u].astype(int))[top:bottom, left:right].mean() > 30


def test_decoded_anomaly_and_needles_are_visible(decoded):
    tl, _, frames, _, _ = decoded
    a = tl.anomalies[0]
    t = int(np.ceil(a.start))
    normal = render_frame(dataclasses.replace(tl, anomalies=[]), float(t), W, H)
    assert np.abs(frames[t].astype(int) - normal.astype(int)).mean() > 30
    for o in (o for o in tl.objects if o.shape in vocab.RARE_SHAPES):
        t = int(np.ceil((o.start + o.end) / 2))
        if o.start <= t < o.end:
            x, y = object_centre(o, float(t), W, H)
            if o.size == "large":
                assert _nearest_colour(frames[t][y, x]) == o.colour


def _rss_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def test_generation_memory_is_flat_with_length(tmp_path):
    """RSS sampled while writing: no growth after warm-up, though holding the frames would add 40 MB."""
    samples = {}

    def progress(done, total):
        if done in (100, 300, 600, 900):
            samples[done] = _rss_mb()

    tl = make_timeline(1, 900, object_every=4.0, card_every=10.0)
    write_video(tl, tmp_path / "long.mp4", fps=1.0, width=160, height=96, preset="ultrafast", progress=progress)
    assert len(samples) == 4
    assert max(samples.values()) - samples[100] < 8, samples  # 800 more frames would hold 37 MB


def test_write_video_rejects_bad_settings(tmp_path):
    tl = make_timeline(1, 20)
    for kwargs in (dict(fps=0), dict(width=101), dict(height=8)):
        with pytest.raises(ConfigError):
            write_video(tl, tmp_path / "x.mp4", **kwargs)
    assert not list(tmp_path.iterdir())


def test_cli_writes_video_timeline_and_questions(tmp_path, capsys):
    args = ["--duration", "40", "--seed", "7", "--width", "112", "--height", "64", "--per-task", "1"]
    assert synth_main(args + ["--out", str(tmp_path / "a")]) == 0
    result = json.loads(capsys.readouterr().out)
    out = tmp_path / "a"
    qs = json.loads((out / "questions.json").read_text())
    tl = Timeline.from_json((out / "timeline.json").read_text())
    assert result["num_questions"] == len(qs) > 0 and (out / "video.mp4").stat().st_size > 0
    assert all(q["video"] == "video.mp4" and check_question(tl, q) for q in qs)
    with av.open(str(out / "video.mp4")) as c:
        assert c.streams.video[0].frames == 40 and c.streams.video[0].width == 112
    # Same arguments, same timeline and questions, byte for byte.
    assert synth_main(args + ["--out", str(tmp_path / "b")]) == 0
    for name in ("timeline.json", "questions.json"):
        assert (out / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_cli_count_targets_make_a_short_video_count_like_an_hour(tmp_path, capsys):
    """--count-targets 4: 2-minute videos hold pairs shown up to 6 times, whose counts their count
    questions ask for; without it most of a short video's counts are 1 (17 of 23 on these seeds)."""
    args = ["--duration", "120", "--width", "112", "--height", "64", "--per-task", "6"]
    counts = {}
    for flag in ([], ["--count-targets", "4"]):
        answers = []
        for seed in range(4):
            out = tmp_path / f"{len(flag)}_{seed}"
            assert synth_main(args + ["--seed", str(seed), "--out", str(out)] + flag) == 0
            tl = Timeline.from_json((out / "timeline.json").read_text())
            qs = [q for q in json.loads((out / "questions.json").read_text()) if q["question_type"] == "count"]
            assert all(check_question(tl, q) for q in qs)
            answers += [int(q["answer"]) for q in qs]
        counts[bool(flag)] = answers
    capsys.readouterr()
    share_above_two = {k: sum(n > 2 for n in v) / len(v) for k, v in counts.items()}
    assert share_above_two[True] >= 0.3 > 0.1 >= share_above_two[False] and max(counts[True]) >= 5


def test_cli_reports_bad_arguments_as_config_errors(tmp_path):
    with pytest.raises(ConfigError):
        synth_main(["--duration", "3", "--out", str(tmp_path)])
    with pytest.raises(ConfigError):
        synth_main(["--duration", "30", "--per-task", "0", "--out", str(tmp_path)])
    with pytest.raises(ConfigError):
        synth_main(["--duration", "30", "--name", "../escape.mp4", "--out", str(tmp_path)])
    with pytest.raises(ConfigError):
        synth_main(["--duration", "30", "--count-targets", "-1", "--out", str(tmp_path)])
    from vidqa.app.cli import main

    assert main(["synth", "--duration", "3", "--out", str(tmp_path)]) == ConfigError.exit_code


def test_demo_assets_match_the_generator():
    """assets/ holds what `vidqa synth --duration 240 --seed 8 --per-task 2 --name demo.mp4` writes."""
    from pathlib import Path

    from vidqa.synth import TASKS, make_questions

    assets = Path(__file__).resolve().parent.parent / "assets"
    tl = make_timeline(8, 240)
    assert (assets / "demo_timeline.json").read_text() == tl.to_json() + "\n"
    qs = make_questions(tl, 8, video="demo.mp4", per_task=2)
    assert (assets / "demo_questions.json").read_text() == json.dumps(qs, indent=1) + "\n"
    assert {q["question_type"] for q in qs} == set(TASKS) and all(check_question(tl, q) for q in qs)
    video = assets / "demo.mp4"
    assert video.stat().st_size < 5 * 2**20
    with av.open(str(video)) as c:
        s = c.streams.video[0]
        assert (s.codec_context.name, s.width, s.height, s.frames) == ("h264", 448, 252, 240)
        for f in c.decode(s):
            t = int(round(f.time))
            if t in (37, 151):
                frame = f.to_ndarray(format="rgb24").astype(int)
                assert np.abs(frame - render_frame(tl, float(t), 448, 252)).mean() < 12


@pytest.mark.slow
def test_three_hour_video_generates_in_bounded_memory(tmp_path):
    """The promise itself: a 3-hour 1-fps video, RSS sampled every 10 minutes of video."""
    samples = []

    def progress(done, total):
        if done % 600 == 0:
            samples.append(_rss_mb())

    tl = make_timeline(7, 3 * 3600)
    write_video(tl, tmp_path / "3h.mp4", fps=1.0, width=224, height=126, preset="ultrafast", progress=progress)
    assert len(samples) == 18 and max(samples) - samples[0] < 10, samples
    with av.open(str(tmp_path / "3h.mp4")) as c:
        assert c.streams.video[0].frames == 3 * 3600
