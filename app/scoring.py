"""Scores of a batch run: per-task accuracy and MLVU's M-Avg.

M-Avg is the unweighted mean of the per-task accuracies of the multiple-choice tasks (MLVU, Zhou
et al. 2024), not the accuracy pooled over questions (which lmms-eval once reported by mistake).
Open-ended answers (``subPlot``, ``summary``) need a judge model: ``judge(record) -> float`` may be
passed; without one they are stored unscored.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable


def summarize(records: list[dict], judge: Callable[[dict], float] | None = None) -> dict:
    """``records``: the JSONL rows of a run. Returns per-task accuracy (in %), M-Avg and counts."""
    per_task: dict[str, list[float]] = defaultdict(list)
    open_scores: dict[str, list[float]] = defaultdict(list)
    errors = 0
    for r in records:
        errors += bool(r.get("error"))
        if r.get("multiple_choice", True):
            per_task[r["task"]].append(1.0 if r.get("correct") else 0.0)
        elif judge is not None and not r.get("error"):
            open_scores[r["task"]].append(float(judge(r)))
    accuracy = {t: 100.0 * sum(v) / len(v) for t, v in sorted(per_task.items())}
    return {
        "accuracy": {t: round(a, 2) for t, a in accuracy.items()},
        "m_avg": round(sum(accuracy.values()) / len(accuracy), 2) if accuracy else None,
        "pooled_accuracy": round(100.0 * sum(sum(v) for v in per_task.values()) /
                                 max(1, sum(len(v) for v in per_task.values())), 2),
        "counts": {t: len(v) for t, v in sorted(per_task.items())},
        "open_ended": {t: round(sum(v) / len(v), 3) for t, v in open_scores.items()},
        "open_ended_unscored": sum(1 for r in records if not r.get("multiple_choice", True)) if judge is None else 0,
        "errors": errors,
        "questions": len(records),
    }
