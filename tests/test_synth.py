"""Synthetic world promises: determinism, answers follow from the timeline, pixels show the script."""

import json

import av
import numpy as np
import pytest

from vidqa.synth import check_question, make_questions, make_timeline, render_frame, write_video
from vidqa.synth import vocab
from vidqa.synth.cli import synth_main
from vidqa.synth.render import object_centre


def test_same_seed_gives_byte_identical_timeline_and_questions(tmp_path):
    a = make_timeline(3, 900)
    b = make_timeline(3, 900)
    assert a.to_json() == b.to_json()
    assert json.dumps(make_questions(a, 3)) == json.dumps(make_questions(b, 3))
    assert make_timeline(4, 900).to_json() != a.to_json()
    from vidqa.synth.timeline import Timeline

    assert Timeline.from_json(a.to_json()).to_json() == a.to_json()


@pytest.mark.parametrize("duration", [30, 600, 3600, 36000])
def test_every_answer_follows_from_the_timeline(duration):
    for seed in range(5):
        tl = make_timeline(seed, duration)
        qs = make_questions(tl, seed, per_task=3)
        assert {q["question_type"] for q in qs} >= {"findNeedle", "anomaly_reco"}
        for q in qs:
            assert check_question(tl, q), q
            assert len(q["candidates"]) == 4 and len(set(q["candidates"])) == 4
            assert q["answer"] in q["candidates"]
            assert set(q) >= {"video", "duration", "question", "candidates", "answer", "question_type"}


def test_checker_rejects_a_wrong_answer():
    tl = make_timeline(1, 600)
    q = next(q for q in make_questions(tl, 1) if q["question_type"] == "count")
    wrong = dict(q, answer=next(c for c in q["candidates"] if c != q["answer"]))
    assert not check_question(tl, wrong)


def test_needles_spread_over_the_whole_video():
    tl = make_timeline(0, 3600)
    starts = sorted(o.start for o in tl.objects if o.shape in vocab.RARE_SHAPES)
    assert len(starts) == 3 and starts[0] < 1200 <= starts[1] < 2400 <= starts[2]
    assert all(o.end - o.start >= 2 for o in tl.objects)


def test_rendered_frames_show_the_script():
    tl = make_timeline(5, 300)
    o = next(o for o in tl.objects if o.shape == "circle" and o.size == "large")
    t = (o.start + o.end) / 2
    frame = render_frame(tl, t, 224, 224)
    x, y = object_centre(o, t, 224, 224)
    others = [p for p in tl.objects_at(t) if p is not o]
    if not others:
        assert np.abs(frame[y, x].astype(int) - vocab.COLOURS[o.colour]).max() < 25
    a, b = render_frame(tl, 10.0, 112, 112), render_frame(tl, 11.0, 112, 112)
    assert 0 < np.abs(a.astype(int) - b.astype(int)).mean() < 40  # similar, not identical
    assert np.array_equal(render_frame(tl, 10.0, 112, 112), a)  # pure function of t


def test_generated_video_decodes_to_the_script(tmp_path):
    tl = make_timeline(2, 60, card_every=10)
    path = write_video(tl, tmp_path / "v.mp4", fps=1.0, width=224, height=128)
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 60
    card = tl.cards[0]
    t = int(np.ceil(card.start + 0.5))
    # The card band is white where the card is shown and textured otherwise.
    band = frames[t][int(0.08 * 128):int(0.12 * 128), 40:60].mean()
    assert band > 200
    anomaly = tl.anomalies[0]
    t = int(np.ceil(anomaly.start + 0.2))
    expected = render_frame(tl, float(t), 224, 128)
    assert np.abs(frames[t].astype(int) - expected.astype(int)).mean() < 12


def _rss_mb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024


def test_generation_memory_is_flat_with_length(tmp_path):
    growth = []
    for duration in (60, 600):
        before = _rss_mb()
        write_video(make_timeline(1, duration), tmp_path / f"{duration}.mp4", fps=1.0, width=112, height=64)
        growth.append(_rss_mb() - before)
    assert growth[1] < growth[0] + 20


def test_cli_writes_video_timeline_and_questions(tmp_path, capsys):
    assert synth_main(["--duration", "40", "--seed", "7", "--out", str(tmp_path), "--width", "112",
                       "--height", "64", "--per-task", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    qs = json.loads((tmp_path / "questions.json").read_text())
    assert result["num_questions"] == len(qs) > 0 and (tmp_path / "video.mp4").stat().st_size > 0
    assert all(q["video"] == "video.mp4" for q in qs)


def test_training_patchify_equals_the_processor():
    """The trainer's GPU patchify must give the model exactly what the processor gives at inference."""
    import torch

    from vidqa.synth.model import build_model_and_processor
    from vidqa.synth.train import HEIGHT, WIDTH, make_example, patchify

    _, processor = build_model_and_processor()
    frames, times, qa = make_example(3, 16, 120.0)
    assert frames.shape == (16, HEIGHT, WIDTH, 3) and times[0] == 120.0 and 1 <= len(qa) <= 4
    ref = processor.video_processor(videos=[frames[:4]], return_tensors="pt", do_sample_frames=False,
                                    cap_pixels_per_frame=False)["pixel_values_videos"]
    ours = patchify(torch.from_numpy(frames[None, :4]), processor)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
