"""Batch evaluation: the real MLVU dev files, M-Avg, resume after kills, 2-process sharding."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vidqa.app.evaluate import evaluate, evaluate_main, merge_and_summarize, read_jsonl
from vidqa.app.mlvu import load_mlvu
from vidqa.app.scoring import summarize
from vidqa.errors import DataError

from fake_qa import FakeQA

MLVU_DEV = Path(__file__).resolve().parents[1].parent / "shared" / "mlvu_dev"
TESTS = Path(__file__).resolve().parent


@pytest.mark.skipif(not MLVU_DEV.exists(), reason="../shared/mlvu_dev is not beside the checkout")
def test_loader_reads_all_real_mlvu_dev_files_and_their_traps():
    qs, report = load_mlvu(MLVU_DEV, video_root="/videos")
    assert report.files == 9 and report.questions == len(qs) == 2593
    assert sum(q.multiple_choice for q in qs) == 2175
    assert {q.task for q in qs if not q.multiple_choice} == {"subPlot", "summary"}
    assert report.answer_not_in_candidates == 2 and report.duplicate_candidates == 16
    assert len({q.qid for q in qs}) == 2593  # ids unique although file names repeat across folders
    assert qs[0].video == "/videos/1_plotQA/movie101_66.mp4"
    names = [Path(q.video).name for q in qs]
    assert len(set(names)) < len({q.video for q in qs})  # the same name in several task folders
    missing = [q for q in qs if q.multiple_choice and q.target_index is None]
    assert len(missing) == 2 and all(q.task == "findNeedle" for q in missing)


def test_m_avg_is_the_mean_of_task_accuracies_not_pooled():
    rows = ([{"task": "a", "correct": True}] * 9 + [{"task": "a", "correct": False}] +
            [{"task": "b", "correct": False}] * 3 + [{"task": "b", "correct": True}] +
            [{"task": "summary", "multiple_choice": False, "prediction": "x"}])
    s = summarize(rows)
    assert s["accuracy"] == {"a": 90.0, "b": 25.0}
    assert s["m_avg"] == 57.5  # (90 + 25) / 2, while pooled accuracy would be 10/14 = 71.43
    assert s["pooled_accuracy"] == 71.43 and s["open_ended_unscored"] == 1
    judged = summarize(rows, judge=lambda r: 0.5)
    assert judged["open_ended"] == {"summary": 0.5}


def _write_set(folder: Path, n_videos=4, per_video=3):
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for v in range(n_videos):
        for k in range(per_video):
            items.append({"video": f"v{v}.mp4", "duration": 60, "question": f"q{v}-{k}?",
                          "candidates": ["w", "x", "y", "z"], "answer": "xwyz"[k % 4],
                          "question_type": "count" if k % 2 else "order"})
    (folder / "1_set.json").write_text(json.dumps(items))
    return folder / "1_set.json"


def test_runner_ingests_each_video_once_and_writes_everything(tmp_path):
    qs, _ = load_mlvu(_write_set(tmp_path / "data"), video_root=tmp_path / "videos")
    qa = FakeQA()
    rows = evaluate(qs, qa, tmp_path / "out", progress=False)
    assert len(qa.ingested) == 4 and len(set(qa.ingested)) == 4
    assert sorted(r["doc_id"] for r in rows) == sorted(q.qid for q in qs)
    summary = merge_and_summarize(tmp_path / "out", qs, "fake")
    assert summary["questions"] == 12 and summary["missing"] == 0
    lmms = list((tmp_path / "out" / "fake").glob("*_samples_count.jsonl"))
    assert lmms and set(json.loads(lmms[0].read_text().splitlines()[0])) >= {
        "doc_id", "input", "target", "filtered_resps", "doc_hash", "acc"}
    again = evaluate(qs, FakeQA(), tmp_path / "out", progress=False)
    assert len(again) == 12  # rerun: nothing new answered, nothing duplicated


def test_torn_last_line_is_dropped_and_repaired(tmp_path):
    path = tmp_path / "samples_rank0.jsonl"
    path.write_text('{"doc_id": "a"}\n{"doc_id": "b"}\n{"doc_id": "c", "trunc')
    assert [r["doc_id"] for r in read_jsonl(path, repair=True)] == ["a", "b"]
    assert path.read_text().endswith('"b"}\n')


def _run_cli(args, env=None, **kw):
    env = {**os.environ, "PYTHONPATH": str(TESTS), **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "vidqa.app.evaluate", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def test_sigkill_at_random_moments_then_resume_answers_each_question_once(tmp_path):
    data = _write_set(tmp_path / "data", n_videos=5, per_video=6)
    out = tmp_path / "out"
    args = [str(data), "--video-root", str(tmp_path / "v"), "--out", str(out), "--qa-factory", "fake_qa:make",
            "--no-progress"]
    rng = random.Random(0)
    kills = 0
    for _ in range(4):
        proc = _run_cli(args, env={"FAKE_QA_SLEEP": "0.05"})
        time.sleep(rng.uniform(0.8, 2.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    final = _run_cli(args)
    assert final.wait(timeout=120) == 0, final.stderr.read().decode()[-500:]
    rows = read_jsonl(out / "samples_rank0.jsonl")
    ids = [r["doc_id"] for r in rows]
    assert len(ids) == 30 and len(set(ids)) == 30
    assert kills >= 1
    assert json.loads((out / "results.json").read_text())["missing"] == 0


def test_two_process_run_equals_one_process_run(tmp_path):
    data = _write_set(tmp_path / "data", n_videos=5, per_video=2)
    common = [str(data), "--video-root", str(tmp_path / "v"), "--qa-factory", "fake_qa:make", "--no-progress"]
    one = _run_cli(common + ["--out", str(tmp_path / "one")])
    assert one.wait(timeout=120) == 0, one.stderr.read().decode()[-800:]
    two = _run_cli(common + ["--out", str(tmp_path / "two"), "--launcher", "torchrun", "--nproc", "2"])
    assert two.wait(timeout=300) == 0, two.stderr.read().decode()[-800:]
    assert (tmp_path / "two" / "samples_rank1.jsonl").exists()
    r1 = json.loads((tmp_path / "one" / "results.json").read_text())
    r2 = json.loads((tmp_path / "two" / "results.json").read_text())
    assert r1["accuracy"] == r2["accuracy"] and r1["questions"] == r2["questions"] == 10


@settings(max_examples=40, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.sampled_from(
                        ["video", "question", "answer", "candidates", "question_type", "duration"]), c, max_size=6),
                    max_leaves=12))
def test_fuzzed_annotation_files_raise_only_data_errors(tmp_path_factory, payload):
    path = tmp_path_factory.mktemp("fz") / "x.json"
    path.write_text(json.dumps(payload))
    try:
        load_mlvu(path)
    except DataError as err:
        assert "\n" not in str(err)


def test_cli_eval_on_a_synthetic_set_with_a_tiny_model(tmp_path, capsys):
    from vidqa.app.cli import main
    from vidqa.synth.cli import generate

    generate(tmp_path / "set", duration=24, seed=1, width=64, height=48, per_task=1)
    code = main(["eval", str(tmp_path / "set" / "questions.json"), "--out", str(tmp_path / "out"),
                 "--model", "tiny-random/qwen2_5_vl", "--device", "cpu", "--no-progress", "--limit", "3",
                 "--max-new-tokens", "2"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["questions"] == 3 and result["missing"] == 0 and result["errors"] == 0
