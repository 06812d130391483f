"""The files a finished (or partial) batch evaluation leaves, written by rank 0 after the merge.

``<out>/``

* ``samples.jsonl`` -- every answered question exactly once, in question order (the per-rank
  ``samples_rank<r>.jsonl`` files stay as the run's append-only journal).
* ``results.json`` -- :func:`vidqa.app.scoring.summarize` plus ``model``, ``missing`` (questions
  with no answer yet) and ``complete``.
* ``<model>/<date>_results.json`` and ``<model>/<date>_samples_<task>.jsonl`` -- the same in the
  shape lmms-eval writes (``EvolvingLMMs-Lab/lmms-eval``, ``loggers/evaluation_tracker.py``), so
  its tooling and habits apply: ``results[task]["acc,none"]``, ``n-samples``, ``configs``; one
  line per sample with ``doc_id, doc, input, target, resps, filtered_resps, doc_hash`` and the
  metric (``acc`` for multiple choice, ``judge_score`` for judged open-ended answers).

Every file is replaced atomically: a reader never sees half of one.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from datetime import datetime, timezone
from pathlib import Path

from vidqa.app.jsonl import write_json_atomic, write_jsonl_atomic
from vidqa.app.mlvu import Question
from vidqa.mcq import MC_ANSWER_PREFIX, format_mc_question, letter

GROUP = "mlvu"


def sanitize_model_name(model: str) -> str:
    """lmms-eval's folder name for a model: path separators and shell-hostile characters -> ``__``."""
    return re.sub(r"[\"<>:/|\\?*\[\]]+", "__", model).strip(". ") or "model"


def write_outputs(out_dir: Path, questions: list[Question], rows: dict[str, dict], summary: dict,
                  model: str, config: dict | None = None, started: float | None = None) -> dict[str, Path]:
    """Writes the merged samples, ``results.json`` and the lmms-eval-shaped copies; returns their paths."""
    out_dir = Path(out_dir)
    merged = [rows[q.qid] for q in questions if q.qid in rows]
    paths = {"samples": out_dir / "samples.jsonl", "results": out_dir / "results.json"}
    write_jsonl_atomic(paths["samples"], merged)
    write_json_atomic(paths["results"], summary)
    now = datetime.now(timezone.utc)
    folder = out_dir / sanitize_model_name(model)
    date_id = now.strftime("%Y%m%d_%H%M%S")
    paths["lmms_results"] = folder / f"{date_id}_results.json"
    write_json_atomic(paths["lmms_results"], _lmms_results(questions, rows, summary, model, config, now, started))
    by_task: dict[str, list[Question]] = {}
    for q in questions:
        by_task.setdefault(q.task, []).append(q)
    judged = summary.get("judge_scores", {})
    for task, qs in by_task.items():
        lines = [_lmms_sample(doc_id, q, rows[q.qid], judged) for doc_id, q in enumerate(qs) if q.qid in rows]
        path = folder / f"{date_id}_samples_{task}.jsonl"
        write_jsonl_atomic(path, lines)
        paths[f"lmms_samples_{task}"] = path
    return paths


def _lmms_results(questions, rows, summary, model, config, now, started) -> dict:
    originals: dict[str, int] = {}
    for q in questions:
        originals[q.task] = originals.get(q.task, 0) + 1
    results = {GROUP: {"alias": GROUP, "m_avg,none": summary["m_avg"], "m_avg_stderr,none": "N/A",
                       "pooled_acc,none": summary["pooled_accuracy"], "pooled_acc_stderr,none": "N/A"}}
    configs, higher, n_samples = {}, {}, {}
    for task, acc in summary["accuracy"].items():
        n = summary["counts"][task]
        results[task] = {"alias": f" - {task}", "acc,none": acc, "acc_stderr,none": _stderr_percent(acc, n)}
        configs[task] = {"task": task, "output_type": "generate_until",
                         "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}]}
        higher[task] = {"acc": True}
        n_samples[task] = {"original": originals.get(task, n), "effective": n}
    for task, score in summary["open_ended"].items():
        results[task] = {"alias": f" - {task}", "judge_score,none": score, "judge_score_stderr,none": "N/A"}
        higher[task] = {"judge_score": True}
    for task, n in summary["open_ended_counts"].items():
        configs.setdefault(task, {"task": task, "output_type": "generate_until", "metric_list": []})
        n_samples[task] = {"original": originals.get(task, n), "effective": n}
    subtasks = sorted(set(summary["accuracy"]) | set(summary["open_ended_counts"]))
    return {
        "results": results,
        "group_subtasks": {GROUP: subtasks},
        "configs": configs,
        "versions": {t: "vidqa-mlvu-1" for t in subtasks},
        "n-shot": {t: 0 for t in subtasks},
        "higher_is_better": higher,
        "n-samples": n_samples,
        "config": {"model": model, "model_args": config or {}, "batch_size": 1,
                   "limit": None, "answered": len(rows)},
        "date": now.timestamp(),
        "total_evaluation_time_seconds": str(round(now.timestamp() - started, 2)) if started else None,
    }


def _stderr_percent(acc: float, n: int) -> float | str:
    # lm-eval's mean stderr: sample standard deviation / sqrt(n), here in percentage points.
    if n < 2:
        return "N/A"
    p = acc / 100.0
    return 100.0 * math.sqrt(p * (1 - p) / (n - 1))


def _lmms_sample(doc_id: int, q: Question, row: dict, judged: dict) -> dict:
    doc = {"video": q.video_name, "duration": q.duration, "question": q.question, "answer": q.answer,
           "question_type": q.task}
    if q.multiple_choice:
        doc["candidates"] = q.candidates
        prompt = format_mc_question(q.question, q.candidates) + "\n" + MC_ANSWER_PREFIX
        target = letter(q.target_index) if q.target_index is not None else ""
        filtered = letter(row["choice_index"]) if row.get("choice_index") is not None else ""
    else:
        if q.scoring_points is not None:
            doc["scoring_points"] = q.scoring_points
        prompt, target, filtered = q.question, q.answer, row.get("prediction") or ""
    sample = {
        "doc_id": doc_id, "qid": q.qid, "doc": doc, "input": prompt, "target": target,
        "resps": [[row.get("prediction") or ""]], "filtered_resps": [filtered],
        "doc_hash": hashlib.sha256(json.dumps(doc, sort_keys=True, ensure_ascii=False).encode()).hexdigest(),
    }
    if q.multiple_choice:
        sample["acc"] = float(bool(row.get("correct")))
    elif q.qid in judged:
        sample["judge_score"] = judged[q.qid]
    if row.get("error"):
        sample["error"] = row["error"]
    return sample
