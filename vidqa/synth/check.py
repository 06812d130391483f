"""``check_question``: recompute a synthetic question's answer from the timeline alone.

Independent of the generator's code path on purpose: the question is read back from its *text*
(the patterns below), the fact is recomputed from the raw timeline by the most direct means (scan,
count, sort), and the question is also checked to be well posed: the thing it names is unique in
the video, the answer is one of four distinct candidates, and every other candidate is wrong.
"""

from __future__ import annotations

import re

from vidqa.synth import vocab
from vidqa.synth.world import Timeline

MLVU_FIELDS = {"video", "duration", "question", "candidates", "answer", "question_type"}

_NEEDLE_COLOUR = re.compile(r"What colour was the (\w+) that appeared in the video\?")
_NEEDLE_PLACE = re.compile(r"In which place did the (\w+) appear\?")
_COUNT = re.compile(r"How many times did an? (\w+) (\w+) appear in the video\?")
_ORDER_WORDS = re.compile(r"In which order did the words ([\w, ]+) appear on cards in the video\?")
_ORDER_SHAPES = re.compile(r"In which order did the ([\w, ]+) appear in the video\?")
_PLOT = re.compile(r"What appeared first after the word '(\w+)' was shown\?")
_GROUND_WORD = re.compile(r"At what time did the word '(\w+)' appear\?")
_GROUND_SHAPE = re.compile(r"At what time did the (\w+) appear\?")
_TOPIC = {"Which place is the video mostly set in?", "What is the main background of the video?"}
_ANOMALY = {"Which unusual event happened in the video?",
            "Does this video contain any anomalies? If yes, which kind of anomaly?"}


def _seconds(text: str) -> int:
    h, m, s = (int(x) for x in text.split(":"))
    return h * 3600 + m * 60 + s


def _only(items: list):
    return items[0] if len(items) == 1 else None


def _needle(tl: Timeline, shape: str):
    return _only([o for o in tl.objects if o.shape == shape]) if shape in vocab.RARE_SHAPES else None


def _card(tl: Timeline, word: str):
    return _only([c for c in tl.cards if c.word == word])


def _truth(tl: Timeline, q: dict):
    """(answer, is_wrong(candidate)) for the question, or None when it is not well posed."""
    text, task = q["question"], q["question_type"]
    if task == "findNeedle":
        if m := _NEEDLE_COLOUR.fullmatch(text):
            o = _needle(tl, m[1])
            return (o.colour, lambda c: c != o.colour) if o else None
        if m := _NEEDLE_PLACE.fullmatch(text):
            o = _needle(tl, m[1])
            if o is None:
                return None
            places = {s.name for s in tl.scenes if s.start < o.end and s.end > o.start}
            return (places.pop(), lambda c: c not in places) if len(places) == 1 else None
    if task == "count" and (m := _COUNT.fullmatch(text)):
        n = len([o for o in tl.objects if o.colour == m[1] and o.shape == m[2]])
        return str(n), lambda c: c != str(n)
    if task == "order":
        if m := _ORDER_WORDS.fullmatch(text):
            cards = [_card(tl, w) for w in m[1].split(", ")]
            if None in cards:
                return None
        elif m := _ORDER_SHAPES.fullmatch(text):
            cards = [_needle(tl, s) for s in m[1].split(", ")]
            if None in cards:
                return None
        else:
            return None
        starts = [c.start for c in cards]
        if len(set(starts)) != len(starts):
            return None
        names = [getattr(c, "word", None) or c.shape for c in sorted(cards, key=lambda c: c.start)]
        truth = ", ".join(names)
        return truth, lambda c: c != truth and sorted(c.split(", ")) == sorted(names)
    if task == "topic_reasoning" and text in _TOPIC:
        seconds: dict[str, float] = {}
        for s in tl.scenes:
            seconds[s.name] = seconds.get(s.name, 0.0) + s.end - s.start
        best = max(seconds, key=seconds.get)
        runner_up = max((v for k, v in seconds.items() if k != best), default=0.0)
        return (best, lambda c: c != best) if seconds[best] > 1.1 * runner_up else None
    if task == "anomaly_reco" and text in _ANOMALY:
        kinds = {a.kind for a in tl.anomalies}
        if len(kinds) != 1:
            return None
        sentence = vocab.ANOMALIES[kinds.pop()]
        return sentence, lambda c: c != sentence
    if task == "plotQA" and (m := _PLOT.fullmatch(text)):
        card = _card(tl, m[1])
        if card is None:
            return None
        later = sorted((o for o in tl.objects if o.start >= card.start), key=lambda o: o.start)
        if not later or (len(later) > 1 and later[1].start == later[0].start):
            return None
        truth = f"{later[0].colour} {later[0].shape}"
        return truth, lambda c: c != truth
    if task == "grounding":
        if m := _GROUND_WORD.fullmatch(text):
            event = _card(tl, m[1])
        elif m := _GROUND_SHAPE.fullmatch(text):
            event = _needle(tl, m[1])
        else:
            return None
        if event is None:
            return None
        h, rest = divmod(int(event.start), 3600)
        truth = f"{h:02d}:{rest // 60:02d}:{rest % 60:02d}"
        # A wrong time names a second in which the event is nowhere near the screen.
        return truth, lambda c: not (event.start - 1 < _seconds(c) < event.end + 1)
    return None


def check_question(timeline: Timeline, q: dict) -> bool:
    """True when ``q`` is in MLVU's format, well posed, and its answer follows from ``timeline``."""
    if set(q) != MLVU_FIELDS or q["duration"] != timeline.duration:
        return False
    cands = q["candidates"]
    if not isinstance(cands, list) or len(cands) != 4 or len(set(cands)) != 4 or q["answer"] not in cands:
        return False
    truth = _truth(timeline, q)
    if truth is None:
        return False
    answer, is_wrong = truth
    return q["answer"] == answer and all(is_wrong(c) for c in cands if c != answer)
