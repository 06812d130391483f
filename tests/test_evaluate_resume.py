"""Nothing lost: a batch evaluation SIGKILLed at random moments, then resumed, answers every
question exactly once (issue 12)."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from fake_qa import fake_choice
from test_evaluate import write_set
from vidqa.app.jsonl import read_jsonl
from vidqa.app.mlvu import load_mlvu

TESTS = Path(__file__).resolve().parent


def start(args, env=None):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]), **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "vidqa.app.evaluate", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def count_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def test_sigkill_at_random_moments_then_resume_answers_each_question_once(tmp_path):
    root = tmp_path / "videos"
    data = write_set(tmp_path / "data", n_videos=5, per_video=8, videos_root=root)
    questions = load_mlvu(data, video_root=root)
    out = tmp_path / "out"
    journal = out / "samples_rank0.jsonl"
    args = [str(data), "--video-root", str(root), "--out", str(out), "--qa-factory", "fake_qa:make",
            "--no-progress", "--model", "fake"]
    rng = random.Random(12)
    kills, survived = 0, 0
    for _ in range(6):
        before = count_lines(journal)
        proc = start(args, env={"FAKE_QA_SLEEP": "0.04"})
        deadline = time.monotonic() + 60
        # Kill only once this run has made progress, at a random point inside a question or a write.
        while count_lines(journal) <= before and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.12))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        rows = read_jsonl(journal)
        ids = [r["doc_id"] for r in rows]
        assert len(ids) == len(set(ids)), "a question was answered twice"
        assert len(rows) >= before, "a recorded answer was lost"
        survived = len(rows)
        if kills == 3:  # as if the kill had landed inside a write: half a row, no newline
            with open(journal, "ab") as f:
                f.write(json.dumps(rows[-1]).encode()[:40])
    assert kills >= 4 and 0 < survived < len(questions)

    final = start(args)
    assert final.wait(timeout=120) == 0, final.stderr.read().decode()[-800:]
    rows = read_jsonl(journal)
    assert sorted(r["doc_id"] for r in rows) == sorted(q.qid for q in questions)  # each exactly once
    merged = read_jsonl(out / "samples.jsonl")
    assert [r["doc_id"] for r in merged] == [q.qid for q in questions]
    for q, r in zip(questions, merged):  # the answers are the ones an uninterrupted run gives
        if q.multiple_choice:
            assert r["choice_index"] == fake_choice(q.question, len(q.candidates))
    summary = json.loads(final.stdout.read().decode().strip().splitlines()[-1])
    assert summary["missing"] == 0 and summary["questions"] == len(questions)
