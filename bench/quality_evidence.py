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
on the questions with and without it in view.
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


def frames_seen(frame_times: np.ndarray, spans) -> np.ndarray:
    """The times of ``frame_times`` ``[K]`` that lie in one of ``spans`` (``[[start, end), ...]`` s: a
    block ends one frame step after its last frame, where the next block's first frame is)."""
    times = np.asarray(frame_times, dtype=np.float64)
    inside = np.zeros(len(times), dtype=bool)
    for start, end in spans:
        inside |= (times >= start) & (times < end)
    return times[inside]


def needle_in_view(rows: list[dict], timelines: dict, frame_times_of) -> dict:
    """Evidence recall over the findNeedle rows of ``rows`` (the evaluator's sample rows, of one or
    more videos): ``timelines`` maps a row's ``video`` to its script, ``frame_times_of(video)`` gives
    the frame times ``[K]`` the variant sampled from it."""
    seen, hits_in, hits_out, times = [], [], [], {}
    for row in rows:
        if row.get("task") != "findNeedle" or row.get("video") not in timelines:
            continue
        interval = needle_interval(timelines[row["video"]], row["question"])
        if interval is None:
            continue
        if row["video"] not in times:
            times[row["video"]] = frame_times_of(row["video"])
        shown = frames_seen(times[row["video"]], row.get("spans") or [])
        in_view = bool(((shown >= interval[0]) & (shown < interval[1])).any())
        seen.append(in_view)
        (hits_in if in_view else hits_out).append(bool(row.get("correct")))

    def pct(values):
        return round(100 * sum(values) / len(values), 1) if values else None

    return {"needle_questions": len(seen), "needle_in_view": pct(seen),
            "needle_acc_in_view": pct(hits_in), "needle_acc_out_of_view": pct(hits_out)}
