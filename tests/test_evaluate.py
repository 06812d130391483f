"""Batch evaluation in one process: scoring (M-Avg), the runner, resuming, sharding, outputs, CLI."""

import json
from pathlib import Path

import pytest

from fake_qa import FakeQA, fake_choice
from vidqa.app.evaluate import (answer_shard, evaluate, evaluate_main, first_per_task, merge_rows,
                                shard_videos)
from vidqa.app.jsonl import JsonlAppender, cut_torn_tail, read_jsonl
from vidqa.app.mlvu import load_mlvu
from vidqa.app.scoring import is_correct, summarize
from vidqa.errors import ConfigError, DataError


def write_set(folder: Path, n_videos=4, per_video=3, stem="1_set", videos_root: Path | None = None,
              durations=None) -> Path:
    """An MLVU-format file: video v<i>.mp4 (in <root>/<stem>/ when a root is given), alternating tasks."""
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for v in range(n_videos):
        for k in range(per_video):
            items.append({"video": f"v{v}.mp4", "duration": (durations or {}).get(v, 60.0 * (v + 1)),
                          "question": f"{stem} question {v}-{k}?", "candidates": ["w", "x", "y", "z"],
                          "answer": "wxyz"[(v + k) % 4], "question_type": "count" if k % 2 else "order"})
    items.append({"video": "v0.mp4", "duration": 60.0, "question": f"{stem}: summarize.", "answer": "a summary",
                  "question_type": "summary"})
    path = folder / f"{stem}.json"
    path.write_text(json.dumps(items))
    if videos_root is not None:
        (videos_root / stem).mkdir(parents=True, exist_ok=True)
        for v in range(n_videos):
            (videos_root / stem / f"v{v}.mp4").write_bytes(b"")
    return path


# ---------------------------------------------------------------------- scoring
def test_is_correct_follows_mlvus_scorer():
    assert is_correct(1, ["a", "b", "c"], "b") and not is_correct(0, ["a", "b", "c"], "b")
    assert is_correct(2, ["Six", "Three", "Three", "Eight"], "Three")      # the last equal candidate
    assert not is_correct(1, ["Six", "Three", "Three", "Eight"], "Three")
    assert not any(is_correct(i, ["Fishing", "Catching the drone"], "Catching a flying drone") for i in (0, 1))
    assert not is_correct(None, ["a", "b"], "a")


def test_m_avg_is_the_mean_of_task_accuracies_not_pooled_accuracy():
    # plotQA 7/10 = 70 %, count 1/4 = 25 %, order 2/2 = 100 %  ->  M-Avg (70 + 25 + 100) / 3 = 65 %,
    # while pooled accuracy would be 10/16 = 62.5 %. One count row failed (error): it counts wrong.
    rows = ([{"task": "plotQA", "correct": i < 7, "choice_index": 0} for i in range(10)]
            + [{"task": "count", "correct": i == 0, "choice_index": 0} for i in range(3)]
            + [{"task": "count", "correct": False, "choice_index": None, "error": "VideoError: x"}]
            + [{"task": "order", "correct": True, "choice_index": 1} for _ in range(2)]
            + [{"task": "summary", "multiple_choice": False, "prediction": "p", "doc_id": "s1"},
               {"task": "summary", "multiple_choice": False, "prediction": "q", "doc_id": "s2"},
               {"task": "subPlot", "multiple_choice": False, "prediction": "r", "doc_id": "p1"}])
    s = summarize(rows)
    assert s["accuracy"] == {"count": 25.0, "order": 100.0, "plotQA": 70.0}
    assert s["m_avg"] == pytest.approx(65.0)
    assert s["pooled_accuracy"] == pytest.approx(62.5)
    assert s["counts"] == {"count": 4, "order": 2, "plotQA": 10} and s["errors"] == {"count": 1}
    assert s["open_ended_unscored"] == 3 and s["open_ended"] == {} and s["g_avg"] is None
    judged = summarize(rows, judge=lambda r: {"p": 2.0, "q": 4.0, "r": None}[r["prediction"]])
    assert judged["open_ended"] == {"summary": 3.0} and judged["g_avg"] == 3.0
    assert judged["open_ended_unscored"] == 1 and judged["judge_scores"] == {"s1": 2.0, "s2": 4.0}
    assert judged["m_avg"] == s["m_avg"]


# ---------------------------------------------------------------------- the runner
def test_runner_ingests_each_video_once_and_records_everything(tmp_path):
    root = tmp_path / "videos"
    qs = load_mlvu(write_set(tmp_path / "data", videos_root=root), video_root=root)
    qa = FakeQA()
    summary = evaluate(qs, qa, tmp_path / "out", model="fake", progress=False)
    assert sorted(qa.ingested) == sorted({q.video for q in qs}) and len(qa.ingested) == 4
    rows = read_jsonl(tmp_path / "out" / "samples_rank0.jsonl")
    assert sorted(r["doc_id"] for r in rows) == sorted(q.qid for q in qs)
    by_id = {r["doc_id"]: r for r in rows}
    for q in qs:
        r = by_id[q.qid]
        assert r["task"] == q.task and r["question"] == q.question and r["options"] == q.candidates
        assert r["answer"] == q.answer and r["video"] == q.video and r["spans"] == [[0.0, 1.0]]
        assert set(r["timings"]) >= {"total"} and r["tokens"]
        if q.multiple_choice:
            assert r["choice_index"] == fake_choice(q.question, 4) and r["choice"] == "ABCD"[r["choice_index"]]
            assert r["correct"] == (r["choice_index"] == q.target_index)
        else:
            assert r["prediction"] == f"about {q.question}" and r["correct"] is False
    expected = {t: 100.0 * sum(by_id[q.qid]["correct"] for q in qs if q.task == t) /
                sum(q.task == t for q in qs) for t in ("count", "order")}
    assert summary["accuracy"] == pytest.approx(expected)
    assert summary["m_avg"] == pytest.approx(sum(expected.values()) / 2)
    assert summary["questions"] == 13 and summary["missing"] == 0 and summary["complete"]
    assert summary["open_ended_unscored"] == 1


def test_rerun_skips_recorded_questions_and_answers_the_rest(tmp_path):
    root = tmp_path / "videos"
    qs = load_mlvu(write_set(tmp_path / "data", videos_root=root), video_root=root)
    out = tmp_path / "out"
    with JsonlAppender(out / "samples_rank0.jsonl") as journal:  # an earlier run got 5 answers in
        first = FakeQA()
        for q in qs[:5]:
            from vidqa.app.evaluate import answer_record

            journal.append(answer_record(q, first.ask({"video": q.video}, q.question, q.candidates)))
    with open(out / "samples_rank0.jsonl", "a") as f:
        f.write('{"doc_id": "' + qs[5].qid + '", "task": "co')  # and was killed writing the 6th
    qa = FakeQA()
    assert answer_shard(qs, qa, out, progress=False) == len(qs) - 5
    assert [q for _, q in qa.asked] == [q.question for q in qs[5:]]
    rows = read_jsonl(out / "samples_rank0.jsonl")
    assert sorted(r["doc_id"] for r in rows) == sorted(q.qid for q in qs)  # each exactly once
    assert answer_shard(qs, FakeQA(), out, progress=False) == 0


def test_failures_are_recorded_as_wrong_and_retried_on_request(tmp_path):
    root = tmp_path / "videos"
    qs = load_mlvu(write_set(tmp_path / "data", videos_root=root), video_root=root)
    bad_video = qs[0].video
    bad_question = next(q for q in qs if q.video != bad_video and q.multiple_choice)
    qa = FakeQA(bad_videos={bad_video}, bad_questions={bad_question.question})
    summary = evaluate(qs, qa, tmp_path / "out", model="fake", progress=False)
    rows = merge_rows(tmp_path / "out", qs)
    errors = {qid: r["error"] for qid, r in rows.items() if r.get("error")}
    assert {qid for qid in errors} == {q.qid for q in qs if q.video == bad_video} | {bad_question.qid}
    assert errors[bad_question.qid].startswith("QuestionError:") and all(
        e.startswith("VideoError: cannot decode") for qid, e in errors.items() if qid != bad_question.qid)
    assert all(not rows[qid]["correct"] for qid in errors) and sum(summary["errors"].values()) == len(errors)
    # A plain rerun keeps the failures; --retry-errors answers them again and the answers win.
    assert answer_shard(qs, FakeQA(), tmp_path / "out", progress=False) == 0
    again = FakeQA()
    assert answer_shard(qs, again, tmp_path / "out", progress=False, retry_errors=True) == len(errors)
    assert bad_video in again.ingested and len(again.ingested) == 2
    rows = merge_rows(tmp_path / "out", qs)
    assert len(rows) == len(qs) and not any(r.get("error") for r in rows.values())


def test_an_answerer_that_does_not_parse_is_parsed_here(tmp_path):
    qs = [q for q in load_mlvu(write_set(tmp_path / "data")) if q.multiple_choice]
    answer_shard(qs, FakeQA(parse=False), tmp_path / "out", progress=False)
    for r in read_jsonl(tmp_path / "out" / "samples_rank0.jsonl"):
        assert r["choice_index"] == fake_choice(r["question"], 4)


def test_an_output_folder_holds_one_models_run(tmp_path):
    qs = load_mlvu(write_set(tmp_path / "data"))
    evaluate(qs[:2], FakeQA(), tmp_path / "out", model="model-a", progress=False)
    with pytest.raises(ConfigError, match="holds a run of model 'model-a'"):
        evaluate(qs, FakeQA(), tmp_path / "out", model="model-b", progress=False)


def test_torn_tail_is_cut_and_complete_rows_survive(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text('{"doc_id": "a"}\n{"doc_id": "b"}\n{"doc_id": "c", "trunc')
    assert [r["doc_id"] for r in read_jsonl(path)] == ["a", "b"]
    assert cut_torn_tail(path) == len('{"doc_id": "c", "trunc')
    assert path.read_text() == '{"doc_id": "a"}\n{"doc_id": "b"}\n'
    long_row = {"doc_id": "d", "text": "x" * 200_000}  # longer than one scan block
    with JsonlAppender(path) as j:
        j.append(long_row)
    with open(path, "a") as f:
        f.write('{"doc_id": "e"')
    with JsonlAppender(path) as j:
        assert j.torn_bytes == len('{"doc_id": "e"')
        j.append({"doc_id": "f", "text": "line\nbreak \u2028 ok"})
    assert [r["doc_id"] for r in read_jsonl(path)] == ["a", "b", "d", "f"]
    assert read_jsonl(path)[-1]["text"] == "line\nbreak \u2028 ok"


# ---------------------------------------------------------------------- sharding
def test_shards_partition_videos_deterministically_and_balance_duration(tmp_path):
    durations = {0: 32000.0, 1: 600.0, 2: 600.0, 3: 600.0, 4: 20000.0, 5: 11000.0}
    qs = load_mlvu(write_set(tmp_path / "data", n_videos=6, per_video=2, durations=durations))
    shards = [shard_videos(qs, r, 3) for r in range(3)]
    assert sorted(q.qid for s in shards for q in s) == sorted(q.qid for q in qs)  # a partition
    videos = [{q.video for q in s} for s in shards]
    assert all(not (videos[a] & videos[b]) for a in range(3) for b in range(a + 1, 3))  # by video
    assert [{q.video for q in shard_videos(list(reversed(qs)), r, 3)} for r in range(3)] == videos
    names = [{Path(v).name for v in vs} for vs in videos]
    assert names == [{"v0.mp4"}, {"v4.mp4"}, {"v5.mp4", "v1.mp4", "v2.mp4", "v3.mp4"}]
    assert shard_videos(qs, 0, 1) == list(qs)


def test_limit_takes_the_first_questions_of_each_task(tmp_path):
    qs = load_mlvu(write_set(tmp_path / "data"))
    got = first_per_task(qs, 2)
    assert [q.task for q in got].count("order") == 2 and [q.task for q in got].count("count") == 2
    assert [q.qid for q in got] == [q.qid for q in qs if q in got]


# ---------------------------------------------------------------------- outputs
def test_outputs_have_lmms_eval_shape(tmp_path):
    root = tmp_path / "videos"
    qs = load_mlvu(write_set(tmp_path / "data", videos_root=root), video_root=root)
    summary = evaluate(qs, FakeQA(), tmp_path / "out", model="org/Model-7B", progress=False,
                       judge=lambda r: 5.0)
    out = tmp_path / "out"
    merged = read_jsonl(out / "samples.jsonl")
    assert [r["doc_id"] for r in merged] == [q.qid for q in qs]
    assert json.loads((out / "results.json").read_text())["m_avg"] == pytest.approx(summary["m_avg"])
    folder = out / "org__Model-7B"
    results = json.loads(next(folder.glob("*_results.json")).read_text())
    assert results["results"]["mlvu"]["m_avg,none"] == pytest.approx(summary["m_avg"])
    assert results["results"]["count"]["acc,none"] == pytest.approx(summary["accuracy"]["count"])
    assert results["n-samples"]["order"] == {"original": 8, "effective": 8}
    assert results["results"]["summary"]["judge_score,none"] == 5.0
    count_lines = [json.loads(x) for x in next(folder.glob("*_samples_count.jsonl")).read_text().splitlines()]
    assert len(count_lines) == 4 and [s["doc_id"] for s in count_lines] == list(range(4))
    s0 = count_lines[0]
    assert set(s0) >= {"doc_id", "doc", "input", "target", "resps", "filtered_resps", "doc_hash", "acc"}
    q0 = next(q for q in qs if q.task == "count")
    assert s0["target"] == "ABCD"[q0.target_index] and s0["input"].endswith("Only give the best option.\n"
                                                                            "Best Option: (")
    assert s0["acc"] == float(s0["filtered_resps"] == [s0["target"]])
    summary_line = json.loads(next(folder.glob("*_samples_summary.jsonl")).read_text())
    assert summary_line["judge_score"] == 5.0 and summary_line["target"] == "a summary"


# ---------------------------------------------------------------------- command line
def test_cli_arguments_and_one_line_errors(tmp_path, capsys):
    root = tmp_path / "videos"
    data = write_set(tmp_path / "data", videos_root=root)
    common = [str(data), "--video-root", str(root), "--no-progress"]
    assert evaluate_main(common + ["--out", str(tmp_path / "o"), "--tasks", "count", "--limit", "2"],
                         qa_factory=FakeQA) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["questions"] == 2 and set(result["accuracy"]) == {"count"} and result["missing"] == 0
    with pytest.raises(DataError, match="none of the 4 videos exist.*check --video-root"):
        evaluate_main([str(data), "--video-root", str(tmp_path), "--out", str(tmp_path / "o2")], qa_factory=FakeQA)
    with pytest.raises(ConfigError, match="--limit must be at least 1"):
        evaluate_main(common + ["--out", str(tmp_path / "o3"), "--limit", "0"], qa_factory=FakeQA)
    with pytest.raises(ConfigError, match="MODULE:CALLABLE"):
        evaluate_main(common + ["--out", str(tmp_path / "o4"), "--judge", "nocolon"], qa_factory=FakeQA)

    from vidqa.app.cli import main

    assert main(["eval", str(tmp_path / "missing.json"), "--out", str(tmp_path / "o5")]) == DataError.exit_code
    assert "no such file or folder" in capsys.readouterr().err


def test_cli_eval_end_to_end_on_a_synthetic_set_with_a_tiny_model(tmp_path, capsys):
    from vidqa.app.cli import main
    from vidqa.synth.cli import generate

    generate(tmp_path / "set", duration=24, seed=1, width=64, height=48, per_task=1)
    args = ["eval", str(tmp_path / "set" / "questions.json"), "--out", str(tmp_path / "out"),
            "--model", "tiny-random/qwen2_5_vl", "--device", "cpu", "--no-progress", "--tasks", "findNeedle", "order",
            "--max-new-tokens", "2", "--cache-dir", str(tmp_path / "cache")]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["model"] == "tiny-random/qwen2_5_vl"
    assert result["questions"] == 2 and result["missing"] == 0 and result["errors"] == {}
    rows = read_jsonl(tmp_path / "out" / "samples.jsonl")
    assert {r["task"] for r in rows} == {"findNeedle", "order"}
    assert all(r["tokens"]["visual_stored"] > 0 and r["timings"]["total"] > 0 and r["spans"] for r in rows)
    assert main(args) == 0  # resumed: nothing left to answer, same summary
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["accuracy"] == result["accuracy"]
