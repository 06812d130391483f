"""MLVU-format multiple-choice questions generated from a timeline.

Each question has exactly the fields of the MLVU dev set's multiple-choice files (Zhou et al., 2024,
"MLVU: A Comprehensive Benchmark for Multi-Task Long Video Understanding"): ``video``,
``duration``, ``question``, ``candidates`` (4, unique, shuffled), ``answer`` (the option *text*) and
``question_type``. Task types mirror MLVU's multiple-choice set, plus ``grounding``:

* ``findNeedle``  -- the colour of a rare shape shown once, or the place where it was shown;
* ``count``       -- how many times a (colour, shape) pair appeared (in long videos: a held-back
  pair shown 1-6 times across the whole video); the options are four consecutive counts
  (:func:`count_options`);
* ``order``       -- the order of 3-4 once-shown card words, or of the needles;
* ``topic_reasoning`` -- the scene that fills most of the video (asked only when clear-cut);
* ``anomaly_reco`` -- which unusual event happened;
* ``plotQA``      -- the object that appeared first after a card (within 20 s of it);
* ``grounding``   -- when a once-shown word or a needle appeared (``HH:MM:SS`` candidates at least
  a few seconds apart from the event and from each other).

Distractors come from the world: colours, places, words and objects that the video (or failing
that the vocabulary) has, times of other events. ``vidqa.synth.check`` recomputes every answer by
its own code path.
"""

from __future__ import annotations

import itertools

import numpy as np

from vidqa.synth import vocab
from vidqa.synth.world import Timeline, scene_totals

TASKS = ["findNeedle", "count", "order", "topic_reasoning", "anomaly_reco", "plotQA", "grounding"]
PLOT_WINDOW_S = 20.0  # "right after": the next object starts within this many seconds of the card
TOPIC_MARGIN = 1.15  # the dominant scene must fill 15% more time than the runner-up


def clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def grounding_margin(duration: float) -> float:
    """Seconds that separate time candidates from the event and from each other."""
    return max(2.0, min(30.0, duration / 20))


def _a(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _pick(rng, items: list, k: int) -> list:
    return [items[i] for i in rng.permutation(len(items))[:k]]


def _mc(rng, answer: str, preferred: list[str], fallback: list[str] = ()) -> list[str] | None:
    """The answer and three distractors (from ``preferred`` first), shuffled; None if too few."""
    pool = [d for d in dict.fromkeys(preferred) if d != answer]
    chosen = _pick(rng, pool, 3)
    if len(chosen) < 3:
        extra = [d for d in dict.fromkeys(fallback) if d != answer and d not in chosen]
        chosen += _pick(rng, extra, 3 - len(chosen))
    if len(chosen) < 3:
        return None
    cands = [answer] + chosen
    return [cands[i] for i in rng.permutation(4)]


def make_questions(timeline: Timeline, seed: int, video: str = "video.mp4", per_task: int = 2) -> list[dict]:
    """Up to ``per_task`` questions of each task type, in ``TASKS`` order (fewer when the world
    cannot support one); deterministic in (timeline, seed)."""
    rng = np.random.default_rng([int(seed), 17])
    tl, out = timeline, []

    def add(task, question, candidates, answer):
        if candidates is not None:
            out.append({"video": video, "duration": tl.duration, "question": question, "candidates": candidates,
                        "answer": answer, "question_type": task})

    for make in (_find_needle, _count, _order, _topic, _anomaly, _plot, _grounding):
        for q in make(rng, tl, per_task):
            add(*q)
    seen, unique = set(), []
    for q in out:
        if q["question"] not in seen:
            seen.add(q["question"])
            unique.append(q)
    return unique


def _once(items, key):
    counts: dict = {}
    for x in items:
        counts[key(x)] = counts.get(key(x), 0) + 1
    return [x for x in items if counts[key(x)] == 1]


def _needles(tl: Timeline):
    return _once([o for o in tl.objects if o.shape in vocab.RARE_SHAPES], lambda o: o.shape)


def _present_colours(tl: Timeline) -> list[str]:
    return sorted({o.colour for o in tl.objects})


def _present_scenes(tl: Timeline) -> list[str]:
    return sorted({s.name for s in tl.scenes})


def _find_needle(rng, tl, k):
    pairs = [(o, variant) for o in _needles(tl) for variant in ("colour", "place")]
    for o, variant in _pick(rng, pairs, k):
        if variant == "colour":
            yield ("findNeedle", f"What colour was the {o.shape} that appeared in the video?",
                   _mc(rng, o.colour, _present_colours(tl), list(vocab.COLOURS)), o.colour)
        else:
            place = tl.scene_at((o.start + o.end) / 2).name
            yield ("findNeedle", f"In which place did the {o.shape} appear?",
                   _mc(rng, place, _present_scenes(tl), list(vocab.SCENES)), place)


def count_options(rng, n: int) -> list[str]:
    """Four consecutive counts that hold ``n``, the window's start drawn uniformly from those that
    keep every option >= 1, shuffled.

    Earlier the distractors were three of the six counts within 3 of the answer, so the answer sat
    in the middle of the options: on six held-out hours the second-smallest option was right for 14
    of 24 count questions, and a model could score 58% without seeing the video (the bundled model's
    stage 14 did, answering 5 for a pair it was shown none of the 5 times). With a uniform window
    the answer is equally likely at each rank once ``n`` >= 4; below that the window cannot go
    under 1, which small counts cannot avoid."""
    start = int(rng.integers(max(1, n - 3), n + 1))
    values = [str(v) for v in range(start, start + 4)]
    return [values[i] for i in rng.permutation(4)]


def _count(rng, tl, k):
    combos: dict[tuple[str, str], int] = {}
    for o in tl.objects:
        if o.shape in vocab.COMMON_SHAPES:
            combos[(o.colour, o.shape)] = combos.get((o.colour, o.shape), 0) + 1
    for colour, shape in _pick(rng, sorted(c for c, n in combos.items() if n <= 9), k):
        n = combos[(colour, shape)]
        yield ("count", f"How many times did {_a(colour)} {colour} {shape} appear in the video?",
               count_options(rng, n), str(n))


def _order(rng, tl, k):
    words = sorted(_once(tl.cards, lambda c: c.word), key=lambda c: c.start)
    needles = sorted(_needles(tl), key=lambda o: o.start)
    options = []
    if len(words) >= 3:
        options += ["words"] * k
    if len(needles) >= 3:
        options.append("shapes")
    for kind in _pick(rng, options, k):
        if kind == "words":
            n = 4 if len(words) >= 4 and rng.random() < 0.5 else 3
            names = [c.word for c in sorted(_pick(rng, words, n), key=lambda c: c.start)]
            # The words are named in the question (alphabetically), as MLVU lists the events.
            question = f"In which order did the words {', '.join(sorted(names))} appear on cards in the video?"
        else:
            names = [o.shape for o in needles[:3]]
            question = f"In which order did the {', '.join(sorted(names))} appear in the video?"
        answer = ", ".join(names)
        wrong = [", ".join(p) for p in itertools.permutations(names)]
        yield ("order", question, _mc(rng, answer, wrong), answer)


def _topic(rng, tl, k):
    totals = scene_totals(tl)
    ranked = sorted(totals.values(), reverse=True)
    if len(ranked) > 1 and ranked[0] < TOPIC_MARGIN * ranked[1]:
        return
    answer = max(totals, key=totals.get)
    phrasings = ["Which place is the video mostly set in?", "What is the main background of the video?"]
    for question in phrasings[:k]:
        yield ("topic_reasoning", question, _mc(rng, answer, _present_scenes(tl), list(vocab.SCENES)), answer)


def _anomaly(rng, tl, k):
    kinds = {a.kind for a in tl.anomalies}
    if len(kinds) != 1:
        return
    answer = vocab.ANOMALIES[kinds.pop()]
    phrasings = ["Which unusual event happened in the video?",
                 "Does this video contain any anomalies? If yes, which kind of anomaly?"]
    for question in phrasings[:k]:
        yield ("anomaly_reco", question, _mc(rng, answer, list(vocab.ANOMALIES.values())), answer)


def _plot(rng, tl, k):
    objects = sorted(tl.objects, key=lambda o: o.start)
    starts = [o.start for o in objects]
    found = []
    for c in _once(tl.cards, lambda c: c.word):
        i = int(np.searchsorted(starts, c.start, side="left"))
        if i < len(objects) and objects[i].start - c.start <= PLOT_WINDOW_S and \
                (i + 1 == len(objects) or objects[i + 1].start - objects[i].start >= 1.0):
            found.append((c, objects[i], objects[max(0, i - 2):i + 4]))
    labels = sorted({f"{o.colour} {o.shape}" for o in tl.objects})
    for c, o, near in _pick(rng, found, k):
        answer = f"{o.colour} {o.shape}"
        # The objects just before and after are the most tempting wrong answers.
        yield ("plotQA", f"What appeared first after the word '{c.word}' was shown?",
               _mc(rng, answer, [f"{p.colour} {p.shape}" for p in near], labels), answer)


def _grounding(rng, tl, k):
    events = [(f"the word '{c.word}'", c.start, c.end) for c in _once(tl.cards, lambda c: c.word)]
    events += [(f"the {o.shape}", o.start, o.end) for o in _needles(tl)]
    margin = grounding_margin(tl.duration)
    others = sorted({c.start for c in tl.cards} | {o.start for o in tl.objects})
    for name, start, end in _pick(rng, events, k):
        answer = clock(start)
        times = _spaced_times(rng, start, end, others, tl.duration, margin)
        if times is not None:
            yield ("grounding", f"At what time did {name} appear?", [clock(x) for x in times],
                   answer)


def _spaced_times(rng, start, end, others, duration, margin):
    """The event's start and three other times (other events' starts first, else any second),
    all at least ``margin`` from the event and from each other, shuffled; None if impossible."""
    chosen = [float(start)]

    def ok(x):
        return not (start - margin < x < end + margin) and all(abs(x - c) >= margin for c in chosen[1:])

    for pool in (list(others), list(np.arange(0.0, duration, 1.0))):
        for i in rng.permutation(len(pool)):
            if len(chosen) == 4:
                break
            x = float(int(pool[i]))
            if 0 <= x < duration and ok(x):
                chosen.append(x)
    if len(chosen) < 4:
        return None
    return [chosen[i] for i in rng.permutation(4)]
