"""Was the needle in view? Evidence recall of a variant, apart from whether its answer was right.

A findNeedle answer needs two things: the frames that show the needle must reach the model, and
the model must read them. Accuracy alone mixes the two; with a weak model it hides whether
retrieval (vidqa) or sampling (uniform) found the evidence. The synthetic world knows where each
needle is (``timeline.json``), and each answer says which spans of the video the model was given
(``Answer.spans``), so the first half can be measured on its own:

* the frames the model saw: the variant's sampled frame times that lie inside its answer's spans
  (a uniform variant's spans cover whole chunks of sparse frames, so the span alone would
  overstate what it saw);
* a question's needle is *in view* if one of those frames lies inside the needle's interval.

Reported per variant: the share of findNeedle questions with the needle in view, and the accuracy
on the questions with and without it in view. A count question needs every appearance of the
(colour, shape) it names in view: :func:`count_in_view` reports the share of count questions that
had all of them, the share of appearances in view over all count questions, and the accuracy with
all of them in view and without.
"""

from __future__ import annotations

import numpy as np

from vidqa.synth import vocab


def needle_interval(timeline, question: str) -> tuple[float, float] | None:
    """``[start, end)`` (s) of the rare shape that ``question`` names (each is shown once), or None."""
    for o in timeline.objects:
        if o.shape in vocab.RARE_SHAPES and f" {o.shape} " in f" {question} ":
            return o.start, o.end
    return None


def count_intervals(timeline, question: str) -> list[tuple[float, float]]:
    """``[start, end)`` (s) of every appearance of the (colour, shape) a count question names."""
    padded = f" {question.rstrip('?')} "
    return [(o.start, o.end) for o in timeline.objects
            if o.shape in vocab.COMMON_SHAPES and f" {o.colour} {o.shape} " in padded]


def frames_seen(frame_times: np.ndarray, spans) -> np.ndarray:
    """The times of ``frame_times`` ``[K]`` that lie in one of ``spans`` (``[[start, end), ...]`` s: a
    block ends one frame step after its last frame, where the next block's first frame is)."""
    times = np.asarray(frame_times, dtype=np.float64)
    inside = np.zeros(len(times), dtype=bool)
    for start, end in spans:
        inside |= (times >= start) & (times < end)
    return times[inside]


def evidence_intervals(task: str, timeline, question: str) -> list[tuple[float, float]]:
    """``[start, end)`` (s) of what a ``task`` question needs seen: its needle, or each counted
    appearance; empty for the other tasks."""
    if task == "findNeedle":
        interval = needle_interval(timeline, question)
        return [interval] if interval is not None else []
    return count_intervals(timeline, question) if task == "count" else []


def _evidence_rows(rows: list[dict], task: str, timelines: dict, frame_times_of):
    """``(row, its evidence intervals, the frame times it was shown)`` for each ``task`` row with evidence."""
    times = {}
    for row in rows:
        if row.get("task") != task or row.get("video") not in timelines:
            continue
        intervals = evidence_intervals(task, timelines[row["video"]], row["question"])
        if not intervals:
            continue
        if row["video"] not in times:
            times[row["video"]] = frame_times_of(row["video"])
        yield row, intervals, frames_seen(times[row["video"]], row.get("spans") or [])


def needle_in_view(rows: list[dict], timelines: dict, frame_times_of) -> dict:
    """Evidence recall over the findNeedle rows of ``rows`` (the evaluator's sample rows, of one or
    more videos): ``timelines`` maps a row's ``video`` to its script, ``frame_times_of(video)`` gives
    the frame times ``[K]`` the variant sampled from it."""
    seen, hits_in, hits_out = [], [], []
    for row, (interval,), shown in _evidence_rows(rows, "findNeedle", timelines, frame_times_of):
        in_view = _in_view(shown, interval)
        seen.append(in_view)
        (hits_in if in_view else hits_out).append(bool(row.get("correct")))
    return {"needle_questions": len(seen), "needle_in_view": _pct(seen),
            "needle_acc_in_view": _pct(hits_in), "needle_acc_out_of_view": _pct(hits_out)}


def _pct(values: list[bool]) -> float | None:
    return round(100 * sum(values) / len(values), 1) if values else None


def _in_view(shown: np.ndarray, interval: tuple[float, float]) -> bool:
    return bool(((shown >= interval[0]) & (shown < interval[1])).any())


def count_in_view(rows: list[dict], timelines: dict, frame_times_of) -> dict:
    """Evidence recall over the count rows of ``rows`` (arguments as :func:`needle_in_view`), and
    accuracy by the true count (``count_acc_by_true``: ``{"1-2" | "3-4" | "5+": {"acc": %, "n": n}}``):
    a minute's counts are mostly 1 and an hour's 1-9, so only this compares counting across lengths."""
    complete, share, hits_all, hits_missing = [], [], [], []
    by_true: dict[str, list[bool]] = {}
    for row, intervals, shown in _evidence_rows(rows, "count", timelines, frame_times_of):
        bucket = "1-2" if len(intervals) <= 2 else "3-4" if len(intervals) <= 4 else "5+"
        by_true.setdefault(bucket, []).append(bool(row.get("correct")))
        seen = [_in_view(shown, iv) for iv in intervals]
        complete.append(all(seen))
        share.append(sum(seen) / len(seen))
        (hits_all if all(seen) else hits_missing).append(bool(row.get("correct")))
    if not complete:
        return {}
    return {"count_questions": len(complete), "count_all_in_view": _pct(complete),
            "count_appearances_in_view": round(100 * sum(share) / len(share), 1),
            "count_acc_all_in_view": _pct(hits_all), "count_acc_some_missing": _pct(hits_missing),
            "count_acc_by_true": {b: {"acc": _pct(by_true[b]), "n": len(by_true[b])} for b in sorted(by_true)}}
