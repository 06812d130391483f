"""Scale-out: two gloo processes on CPU (``--launcher torchrun``) give the one-process result."""

import json
import os
import subprocess
import sys
from pathlib import Path

from fake_qa import FakeQA
from test_evaluate import write_set
from vidqa.app.evaluate import evaluate
from vidqa.app.jsonl import read_jsonl
from vidqa.app.mlvu import load_mlvu

TESTS = Path(__file__).resolve().parent


def test_two_process_run_equals_one_process_run(tmp_path):
    root = tmp_path / "videos"
    data = tmp_path / "data"
    write_set(data, n_videos=4, per_video=3, stem="1_plotQA", videos_root=root)
    write_set(data, n_videos=3, per_video=2, stem="9_other", videos_root=root)  # same names, other folder
    questions = load_mlvu(data, video_root=root)
    one = evaluate(questions, FakeQA(), tmp_path / "one", model="fake", progress=False)

    log = tmp_path / "ingests.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
           "FAKE_QA_INGEST_LOG": str(log), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "vidqa.app.evaluate", str(data), "--video-root", str(root),
                           "--out", str(tmp_path / "two"), "--qa-factory", "fake_qa:make", "--model", "fake",
                           "--no-progress", "--launcher", "torchrun", "--nproc", "2"],
                          env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-1500:]

    # Each video ingested exactly once, by one of two different processes.
    ingests = [line.split(" ", 1) for line in log.read_text().splitlines()]
    assert sorted(v for _, v in ingests) == sorted({q.video for q in questions})
    assert len({pid for pid, _ in ingests}) == 2
    ranks = [read_jsonl(tmp_path / "two" / f"samples_rank{r}.jsonl") for r in (0, 1)]
    assert ranks[0] and ranks[1]
    assert not ({r["video"] for r in ranks[0]} & {r["video"] for r in ranks[1]})  # sharded by video

    two = json.loads((tmp_path / "two" / "results.json").read_text())
    for key in ("accuracy", "m_avg", "counts", "questions", "missing", "open_ended_counts"):
        assert two[key] == one[key], key
    merged_one = read_jsonl(tmp_path / "one" / "samples.jsonl")
    merged_two = read_jsonl(tmp_path / "two" / "samples.jsonl")
    keep = ("doc_id", "task", "video", "choice_index", "correct", "prediction")
    assert [{k: r[k] for k in keep} for r in merged_two] == [{k: r[k] for k in keep} for r in merged_one]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["m_avg"] == one["m_avg"]
