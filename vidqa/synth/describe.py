"""``describe``: a caption of what a stretch of a synthetic video shows, in the world's vocabulary.

Used to pair frames or segments with text (e.g. to train a tiny CLIP contrastively, or as a
reference for open-ended answers). Only words of ``vocab.all_words()`` appear, lower case, one
sentence per event in order of appearance, e.g.::

    a beach scene. a large red circle moves from left to right. a card shows the word piano.
    then a night scene. the screen went dark.
"""

from __future__ import annotations

from vidqa.synth import vocab
from vidqa.synth.world import Timeline


def _overlaps(e, t0: float, t1: float) -> bool:
    if t1 <= t0:  # an instant
        return e.start <= t0 < e.end
    return e.start < t1 and e.end > t0


def describe(timeline: Timeline, t0: float, t1: float | None = None) -> str:
    """The caption of ``[t0, t1)`` (or of the instant ``t0`` when ``t1`` is None or <= ``t0``)."""
    t1 = t0 if t1 is None else t1
    events = []  # (start, order within a start, sentence)
    scenes = [s for s in timeline.scenes if _overlaps(s, t0, t1)]
    for i, s in enumerate(scenes):
        events.append((max(s.start, t0), 0, f"{'then ' if i else ''}a {s.name} scene"))
    for o in timeline.objects:
        if _overlaps(o, t0, t1):
            way = "from left to right" if o.x1 > o.x0 else "from right to left"
            events.append((max(o.start, t0), 1, f"a {o.size} {o.colour} {o.shape} moves {way}"))
    for c in timeline.cards:
        if _overlaps(c, t0, t1):
            events.append((max(c.start, t0), 2, f"a card shows the word {c.word}"))
    for a in timeline.anomalies:
        if _overlaps(a, t0, t1):
            events.append((max(a.start, t0), 3, vocab.ANOMALIES[a.kind]))
    events.sort(key=lambda e: (e[0], e[1]))
    return " ".join(f"{text}." for _, _, text in events)
