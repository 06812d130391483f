"""Scores of a batch run: MLVU's per-task accuracy and M-Avg, and a hook for open-ended judging.

MLVU (Zhou et al., 2024) reports, for its multiple-choice tasks, the accuracy of each task and
**M-Avg, the unweighted mean of those task accuracies**. It is not the accuracy pooled over all
questions (lmms-eval once reported that by mistake; plotQA's 539 questions would outweigh
anomaly_reco's 200). Pooled accuracy is returned too, clearly named, for comparison only.

A multiple-choice answer is correct when the chosen index is MLVU's target (the last candidate
equal to the answer text, see :mod:`vidqa.app.mlvu`); an answer whose text is not among the
candidates can never be right, and a failed question (``error``) counts as wrong. Open-ended
tasks (``subPlot``, ``summary``) need a judge model; MLVU used GPT-4 with scoring points.
vidqa makes no network calls: pass ``judge(record) -> float | None`` to score them (None: not
scorable), otherwise they are stored and counted as unscored.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

Judge = Callable[[dict], "float | None"]


def is_correct(choice_index: int | None, candidates: list[str] | None, answer: str) -> bool:
    """MLVU's rule: the chosen option is the last one whose text equals the answer."""
    if choice_index is None or not candidates:
        return False
    hits = [i for i, c in enumerate(candidates) if c == answer]
    return bool(hits) and choice_index == hits[-1]


def summarize(records: list[dict], judge: Judge | None = None) -> dict:
    """``records``: one row per question (the evaluator's JSONL rows; the keys used are ``task``,
    ``multiple_choice``, ``correct``, ``choice_index``, ``error`` and, for the judge, ``doc_id``
    plus whatever it reads). Accuracies are percentages, unrounded.

    Returns ``{"accuracy": {task: %}, "m_avg": %, "pooled_accuracy": %, "counts": {task: n},
    "correct": {task: n}, "unparsed": {task: n}, "errors": {task: n}, "open_ended": {task:
    mean score}, "g_avg": mean of those, "open_ended_counts", "open_ended_unscored": n,
    "judge_scores": {doc_id: score}, "questions": n, "multiple_choice": n}``.
    """
    counts: dict[str, int] = defaultdict(int)
    correct: dict[str, int] = defaultdict(int)
    unparsed: dict[str, int] = defaultdict(int)
    errors: dict[str, int] = defaultdict(int)
    open_counts: dict[str, int] = defaultdict(int)
    open_scores: dict[str, list[float]] = defaultdict(list)
    judge_scores: dict[str, float] = {}
    unscored = 0
    for r in records:
        task = r["task"]
        if r.get("error"):
            errors[task] += 1
        if r.get("multiple_choice", True):
            counts[task] += 1
            correct[task] += bool(r.get("correct"))
            unparsed[task] += r.get("choice_index") is None and not r.get("error")
            continue
        open_counts[task] += 1
        score = judge(r) if judge is not None and not r.get("error") else None
        if score is None:
            unscored += 1
        else:
            open_scores[task].append(float(score))
            if "doc_id" in r:
                judge_scores[r["doc_id"]] = float(score)
    accuracy = {t: 100.0 * correct[t] / counts[t] for t in sorted(counts)}
    open_mean = {t: sum(v) / len(v) for t, v in sorted(open_scores.items())}
    n_mc = sum(counts.values())
    return {
        "accuracy": accuracy,
        "m_avg": sum(accuracy.values()) / len(accuracy) if accuracy else None,
        "pooled_accuracy": 100.0 * sum(correct.values()) / n_mc if n_mc else None,
        "counts": dict(sorted(counts.items())),
        "correct": {t: correct[t] for t in sorted(counts)},
        "unparsed": {t: unparsed[t] for t in sorted(counts)},
        "errors": dict(sorted(errors.items())),
        "open_ended": open_mean,
        "g_avg": sum(open_mean.values()) / len(open_mean) if open_mean else None,
        "open_ended_counts": dict(sorted(open_counts.items())),
        "open_ended_unscored": unscored,
        "judge_scores": judge_scores,
        "questions": len(records),
        "multiple_choice": n_mc,
    }
