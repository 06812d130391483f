"""bench/quality.py end to end on a tiny random model: the variants see what they claim to see."""

import json

from bench_scripts import load_bench


def test_variants_attend_what_they_claim(tmp_path):
    quality = load_bench("quality")
    budget = 400
    assert quality.main(["--model", "tiny-random/qwen2_5_vl", "--minutes", "1", "--token-budget", str(budget),
                         "--per-task", "1", "--variants", "vidqa", "uniform", "full", "QuoTA budget", "blind",
                         "--out", str(tmp_path)]) == 0
    rows = {r["variant"]: r for r in json.loads((tmp_path / "quality.json").read_text())}
    assert set(rows) == {"vidqa", "uniform", "full", "QuoTA budget", "blind"}
    assert rows["blind"]["visual_attended_median"] == 0 and rows["blind"]["frames"] == 60
    assert all(r["questions"] >= 5 and set(r["tasks"]) <= set(quality.HELD_OUT_TASKS) for r in rows.values())
    assert rows["vidqa"]["frames"] == rows["full"]["frames"] == 60  # every frame at 1 fps
    assert rows["full"]["visual_attended_median"] == rows["full"]["visual_stored"] > budget
    assert rows["vidqa"]["visual_attended_median"] <= budget < rows["full"]["visual_attended_median"]
    assert rows["QuoTA budget"]["frames"] == 60 and rows["QuoTA budget"]["visual_attended_median"] <= budget
    # uniform: fewer frames spread over the whole minute, all attended, within the budget
    assert rows["uniform"]["frames"] < 60 and rows["uniform"]["visual_attended_median"] == rows["uniform"]["visual_stored"]
    assert rows["uniform"]["visual_attended_median"] <= budget
    text = (tmp_path / "quality.md").read_text()
    assert "| 1 min | uniform |" in text and "M-Avg" in text and "needle in view" in text
    # Run again into the same folder: every answer is journaled, nothing is re-asked, and the rows
    # (stored tokens and frames included) come back the same.
    assert quality.main(["--model", "tiny-random/qwen2_5_vl", "--minutes", "1", "--token-budget", str(budget),
                         "--per-task", "1", "--variants", "vidqa", "--out", str(tmp_path)]) == 0
    (again,) = json.loads((tmp_path / "quality.json").read_text())
    assert again["needle_questions"] == rows["vidqa"]["needle_questions"] >= 1
    assert {k: again[k] for k in ("tasks", "questions", "visual_stored", "frames")} == \
        {k: rows["vidqa"][k] for k in ("tasks", "questions", "visual_stored", "frames")}


def test_needle_in_view_counts_the_frames_the_model_saw():
    """A needle is in view when a frame the variant sampled lies in both an answer span and the
    needle's interval: a uniform variant's wide spans do not count the frames between its samples."""
    import numpy as np

    from vidqa.synth.world import Appearance, Timeline

    evidence = load_bench("quality_evidence")
    frames_seen, needle_in_view = evidence.frames_seen, evidence.needle_in_view

    needle = Appearance("diamond", "red", "small", 100.0, 104.0, 0.1, 0.5, 0.9, 0.5)
    circle = Appearance("circle", "blue", "small", 10.0, 14.0, 0.1, 0.5, 0.9, 0.5)
    tl = Timeline(seed=0, duration=600.0, objects=[circle, needle])
    ask = "What colour was the diamond that appeared in the video?"
    v = "a/video.mp4"
    rows = [{"video": v, "task": "findNeedle", "question": ask, "spans": [[96.0, 112.0]], "correct": True},  # seen
            {"video": v, "task": "findNeedle", "question": ask, "spans": [[0.0, 96.0]], "correct": False},  # before it
            {"video": v, "task": "count", "question": "How many times did a blue circle appear?", "spans": [],
             "correct": True},
            {"video": "other.mp4", "task": "findNeedle", "question": ask, "spans": [[0.0, 600.0]], "correct": True}]
    dense = np.arange(600.0)
    assert list(frames_seen(dense, [[96.0, 98.0]])) == [96.0, 97.0]
    got = needle_in_view(rows, {v: tl}, lambda video: dense)
    assert got == {"needle_questions": 2, "needle_in_view": 50.0, "needle_acc_in_view": 100.0,
                   "needle_acc_out_of_view": 0.0}
    sparse = np.arange(0.0, 600.0, 7.0)  # 91, 98, 105: none in [100, 104)
    assert needle_in_view(rows[:1], {v: tl}, lambda video: sparse)["needle_in_view"] == 0.0
    assert needle_in_view(rows[:1], {v: tl}, lambda video: np.arange(0.0, 600.0, 3.0))["needle_in_view"] == 100.0


def test_count_in_view_needs_every_appearance():
    """A count question has its evidence in view only when a seen frame lies in every appearance of
    the (colour, shape) it names; other shapes and colours are not its evidence."""
    import numpy as np

    from vidqa.synth.world import Appearance, Timeline

    evidence = load_bench("quality_evidence")
    blue = [Appearance("circle", "blue", "small", t, t + 4.0, 0.1, 0.5, 0.9, 0.5) for t in (10.0, 200.0, 400.0)]
    others = [Appearance("circle", "red", "small", 300.0, 304.0, 0.1, 0.5, 0.9, 0.5),
              Appearance("square", "blue", "small", 500.0, 504.0, 0.1, 0.5, 0.9, 0.5)]
    tl = Timeline(seed=0, duration=600.0, objects=blue + others)
    ask = "How many times did a blue circle appear in the video?"
    assert evidence.count_intervals(tl, ask) == [(10.0, 14.0), (200.0, 204.0), (400.0, 404.0)]
    v = "a/video.mp4"
    rows = [{"video": v, "task": "count", "question": ask, "spans": [[0.0, 20.0], [190.0, 210.0], [396.0, 412.0]],
             "correct": True},
            {"video": v, "task": "count", "question": ask, "spans": [[0.0, 250.0]], "correct": False},
            {"video": v, "task": "findNeedle", "question": ask, "spans": [], "correct": False}]
    got = evidence.count_in_view(rows, {v: tl}, lambda video: np.arange(600.0))
    assert got == {"count_questions": 2, "count_all_in_view": 50.0, "count_appearances_in_view": 83.3,
                   "count_acc_all_in_view": 100.0, "count_acc_some_missing": 0.0,
                   "count_acc_by_true": {"3-4": {"acc": 50.0, "n": 2}}}
    assert evidence.count_in_view(rows[2:], {v: tl}, lambda video: np.arange(600.0)) == {}


def test_questions_of_an_older_generator_are_rewritten_and_the_video_kept(tmp_path):
    quality = load_bench("quality")
    folder = quality.held_out_video(tmp_path / "v", 0.5, 10_000_001, 1)
    fresh = (folder / "questions.json").read_text()
    video = (folder / "video.mp4").stat()
    stale = json.loads(fresh)
    stale[0]["candidates"] = list(reversed(stale[0]["candidates"]))
    (folder / "questions.json").write_text(json.dumps(stale))
    assert quality.held_out_video(folder, 0.5, 10_000_001, 1) == folder
    assert (folder / "questions.json").read_text() == fresh
    after = (folder / "video.mp4").stat()
    assert (after.st_mtime_ns, after.st_size) == (video.st_mtime_ns, video.st_size)


def test_several_videos_per_length_pool_their_questions(tmp_path):
    """--videos 2: two held-out videos (seeds s and s + 1) answered together, their questions and
    needle questions pooled in one row."""
    quality = load_bench("quality")
    args = ["--model", "tiny-random/qwen2_5_vl", "--minutes", "1", "--token-budget", "400", "--per-task", "1",
            "--variants", "vidqa"]
    assert quality.main(args + ["--out", str(tmp_path / "one")]) == 0
    assert quality.main(args + ["--videos", "2", "--out", str(tmp_path / "two")]) == 0
    (one,) = json.loads((tmp_path / "one" / "quality.json").read_text())
    (two,) = json.loads((tmp_path / "two" / "quality.json").read_text())
    second = json.loads((tmp_path / "two" / "video_1min_1" / "questions.json").read_text())
    assert two["videos"] == 2 and two["questions"] == one["questions"] + len(second) > one["questions"]
    assert two["needle_questions"] > one["needle_questions"]
    assert "| 1 min x 2 | vidqa |" in (tmp_path / "two" / "quality.md").read_text()


def test_grid_runs_every_model_and_variant_on_the_same_generated_videos(tmp_path):
    """bench/quality_grid.py: one run per (model, variant), in parallel, over videos generated once
    and linked into each run; the merged table has a row per cell, all over the same questions."""
    grid = load_bench("quality_grid")
    assert grid.main(["--models", "tiny-random/qwen2_5_vl", "--variants", "vidqa", "blended retrieval",
                      "--extra", "b32:token_budget=32,answer_weight=0.5", "--minutes", "0.5", "--videos", "2", "--per-task", "1", "--token-budget", "64",
                      "--jobs", "2", "--threads", "1", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "grid.json").read_text())
    assert [r["variant"] for r in rows] == ["tiny-random/qwen2_5_vl: vidqa", "tiny-random/qwen2_5_vl: blended retrieval",
                                            "tiny-random/qwen2_5_vl: b32"]
    assert rows[0]["questions"] == rows[1]["questions"] == rows[2]["questions"] >= 10
    assert all(r["videos"] == 2 for r in rows)
    shared = sorted(p.name for p in (tmp_path / "videos").iterdir())
    assert shared == ["video_0.5min", "video_0.5min_1"]
    for variant in ("vidqa", "blended_retrieval", "b32"):
        run = tmp_path / "tiny-random_qwen2_5_vl" / variant
        assert all((run / name).is_symlink() and (run / name).resolve() == (tmp_path / "videos" / name).resolve()
                   for name in shared)
    assert "| 0.5 min x 2 | tiny-random/qwen2_5_vl: blended retrieval |" in (tmp_path / "grid.md").read_text()


def test_grid_retries_a_failed_cell_alone_and_says_why_it_failed(tmp_path, capsys):
    """A cell that fails is run again once, alone (its first log kept as log.1.txt); a cell that
    still fails makes the grid exit 1 with the last lines of its log on stderr, and the others'
    rows are kept."""
    grid = load_bench("quality_grid")
    missing = str(tmp_path / "no-such-model")
    assert grid.main(["--models", "tiny-random/qwen2_5_vl", missing, "--variants", "vidqa", "--minutes", "0.5",
                      "--per-task", "1", "--token-budget", "64", "--jobs", "2", "--threads", "1",
                      "--out", str(tmp_path / "g")]) == 1
    err = capsys.readouterr().err
    assert err.count("retrying:") == 1 and "failed:" in err
    failed = err[err.index("failed:"):]
    assert missing in failed.splitlines()[0] and len(failed.splitlines()) >= 2  # the log's tail follows
    run = tmp_path / "g" / grid.slug(missing) / "vidqa"
    assert (run / "log.1.txt").exists() and (run / "log.txt").exists()
    rows = json.loads((tmp_path / "g" / "grid.json").read_text())
    assert [r["variant"] for r in rows] == ["tiny-random/qwen2_5_vl: vidqa"]


def test_extra_variants_change_memory_fields_and_reject_unknown_ones():
    import pytest

    quality = load_bench("quality")
    name, config = quality.extra_variant("b2k:token_budget=2048,answer_weight=0.5,positions=compact", 4096)
    assert name == "b2k" and config.memory.token_budget == 2048 and config.memory.answer_weight == 0.5
    assert config.memory.positions == "compact" and config.memory.retrieval == "mass"
    assert quality.extra_variant("plain:retrieval_window=1", 4096)[1].memory.token_budget == 4096
    name, config = quality.extra_variant("lk:choice=likelihood,answer_weight=0.5", 4096)
    assert config.choice == "likelihood" and config.memory.answer_weight == 0.5
    for bad in ("b2k", "b:warp=2", ":token_budget=5", "b:token_budget", "b:answer_weight=2", "b:choice=vote"):
        with pytest.raises(SystemExit, match="--extra"):
            quality.extra_variant(bad, 4096)


def test_reuse_ingest_loads_the_first_variants_memory_for_question_time_variants(tmp_path):
    """--reuse-ingest: a variant that changes only question-time settings loads the memory the first
    one saved (vidqa's cache) instead of ingesting again; one that changes ingest does not."""
    quality = load_bench("quality")
    assert quality.main(["--model", "tiny-random/qwen2_5_vl", "--minutes", "0.5", "--token-budget", "4096",
                         "--per-task", "1", "--variants", "vidqa", "4-bit KV", "--extra", "b32:token_budget=32",
                         "--reuse-ingest", "--out", str(tmp_path)]) == 0
    rows = {r["variant"]: r for r in json.loads((tmp_path / "quality.json").read_text())}
    assert [rows[v]["ingest_reused"] for v in ("vidqa", "4-bit KV", "b32")] == [0, 0, 1]
    assert rows["b32"]["visual_stored"] == rows["vidqa"]["visual_stored"]
    assert rows["b32"]["visual_attended_median"] < rows["vidqa"]["visual_attended_median"]
    assert sum(p.is_dir() for p in (tmp_path / "memories").iterdir()) == 2  # 16-bit and 4-bit KV
