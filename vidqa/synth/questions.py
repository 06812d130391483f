"""MLVU-format multiple-choice questions generated from a timeline, and an independent checker.

Each question has MLVU's fields (``video``, ``duration``, ``question``, ``candidates`` (4),
``answer`` as option text, ``question_type``) plus ``meta``: the parameters the checker needs to
recompute the answer from the timeline by its own code path. Task types mirror MLVU's
multiple-choice set, plus ``grounding``:

* ``findNeedle``  -- the colour of the rare shape that appears once;
* ``count``       -- how many times a colour/shape combination appeared;
* ``order``       -- the order of three text cards;
* ``topic_reasoning`` -- the scene that fills most of the video;
* ``anomaly_reco`` -- which unusual event happened;
* ``plotQA``      -- what appeared right after a text card;
* ``grounding``   -- when a text card appeared (time candidates).

Distractors come from the world (other colours, scenes, words, objects that exist), never noise.
"""

from __future__ import annotations

import itertools

import numpy as np

from vidqa.synth import vocab
from vidqa.synth.timeline import Timeline, scene_totals

TASKS = ["findNeedle", "count", "order", "topic_reasoning", "anomaly_reco", "plotQA", "grounding"]


def clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _pick(rng, items, k):
    idx = rng.permutation(len(items))[:k]
    return [items[i] for i in idx]


def _mc(rng, answer: str, distractors: list[str]) -> list[str]:
    pool = [d for d in dict.fromkeys(distractors) if d != answer]
    cands = [answer] + _pick(rng, pool, 3)
    if len(cands) < 4:
        return []
    return [cands[i] for i in rng.permutation(4)]


def _q(video, tl, question, candidates, answer, task, meta):
    return {"video": video, "duration": tl.duration, "question": question, "candidates": candidates,
            "answer": answer, "question_type": task, "meta": meta}


def make_questions(timeline: Timeline, seed: int, video: str = "video.mp4", per_task: int = 2) -> list[dict]:
    """Up to ``per_task`` questions of each task type (fewer when the world cannot support one)."""
    rng = np.random.default_rng([seed, 17])
    tl = timeline
    out: list[dict] = []
    colours = list(vocab.COLOURS)

    needles = [o for o in tl.objects if o.shape in vocab.RARE_SHAPES]
    for o in _pick(rng, needles, per_task):
        cands = _mc(rng, o.colour, colours)
        out.append(_q(video, tl, f"What colour was the {o.shape} that appeared in the video?", cands,
                      o.colour, "findNeedle", {"shape": o.shape}))

    combos: dict[tuple[str, str], int] = {}
    for o in tl.objects:
        if o.shape in vocab.COMMON_SHAPES:
            combos[(o.colour, o.shape)] = combos.get((o.colour, o.shape), 0) + 1
    countable = sorted(k for k, v in combos.items() if 1 <= v <= 9)
    for colour, shape in _pick(rng, countable, per_task):
        n = combos[(colour, shape)]
        distractors = [str(v) for v in range(max(0, n - 3), n + 5) if v != n]
        cands = _mc(rng, str(n), distractors)
        out.append(_q(video, tl, f"How many times did a {colour} {shape} appear in the video?", cands,
                      str(n), "count", {"colour": colour, "shape": shape}))

    if len(tl.cards) >= 3:
        for _ in range(per_task):
            chosen = sorted(_pick(rng, tl.cards, 3), key=lambda c: c.start)
            words = [c.word for c in chosen]
            perms = [", ".join(p) for p in itertools.permutations(words)]
            answer = ", ".join(words)
            cands = _mc(rng, answer, perms)
            out.append(_q(video, tl, "In which order did these words appear on cards in the video?",
                          cands, answer, "order", {"words": sorted(words)}))

    totals = sorted(scene_totals(tl).values(), reverse=True)
    if len(totals) == 1 or totals[0] >= 1.15 * totals[1]:  # only when the answer is clear-cut
        cands = _mc(rng, tl.dominant_scene, list(vocab.SCENES))
        out.append(_q(video, tl, "Which place is the video mostly set in?", cands, tl.dominant_scene,
                      "topic_reasoning", {}))

    for a in tl.anomalies[:per_task]:
        answer = vocab.ANOMALIES[a.kind]
        cands = _mc(rng, answer, list(vocab.ANOMALIES.values()))
        out.append(_q(video, tl, "Which unusual event happened in the video?", cands, answer,
                      "anomaly_reco", {}))

    plot_cards = []
    for c in tl.cards:
        after = sorted((o for o in tl.objects if o.start >= c.start), key=lambda o: o.start)
        if after and (len(after) == 1 or after[1].start - after[0].start >= 1.0):
            plot_cards.append((c, after[0]))
    labels = sorted({f"{o.colour} {o.shape}" for o in tl.objects})
    for c, o in _pick(rng, plot_cards, per_task):
        answer = f"{o.colour} {o.shape}"
        cands = _mc(rng, answer, labels)
        if cands:
            out.append(_q(video, tl, f"What appeared first after the word '{c.word}' was shown?", cands,
                          answer, "plotQA", {"word": c.word}))

    for c in _pick(rng, tl.cards, per_task):
        others = [clock(x.start) for x in tl.cards if x is not c] + \
                 [clock((c.start + d) % tl.duration) for d in (tl.duration / 3, 2 * tl.duration / 3, tl.duration / 2)]
        cands = _mc(rng, clock(c.start), others)
        if cands:
            out.append(_q(video, tl, f"At what time did the word '{c.word}' first appear?", cands,
                          clock(c.start), "grounding", {"word": c.word}))
    seen, unique = set(), []
    for q in out:
        key = (q["question"], q["answer"])
        if len(q["candidates"]) == 4 and key not in seen:
            seen.add(key)
            unique.append(q)
    return unique


def check_question(timeline: Timeline, q: dict) -> bool:
    """Recomputes the answer of ``q`` from ``timeline`` alone and compares it with ``q["answer"]``."""
    tl, meta, task = timeline, q["meta"], q["question_type"]
    if task == "findNeedle":
        found = [o.colour for o in tl.objects if o.shape == meta["shape"]]
        truth = found[0] if len(found) == 1 else None
    elif task == "count":
        truth = str(sum(o.colour == meta["colour"] and o.shape == meta["shape"] for o in tl.objects))
    elif task == "order":
        cards = [c for c in tl.cards if c.word in meta["words"]]
        truth = ", ".join(c.word for c in sorted(cards, key=lambda c: c.start))
    elif task == "topic_reasoning":
        totals: dict[str, float] = {}
        for s in tl.scenes:
            totals[s.name] = totals.get(s.name, 0.0) + (s.end - s.start)
        truth = max(totals, key=totals.get)
    elif task == "anomaly_reco":
        truth = vocab.ANOMALIES[tl.anomalies[0].kind] if tl.anomalies else None
    elif task == "plotQA":
        card = next(c for c in tl.cards if c.word == meta["word"])
        later = [o for o in tl.objects if o.start >= card.start]
        first = min(later, key=lambda o: o.start)
        truth = f"{first.colour} {first.shape}"
    elif task == "grounding":
        card = next(c for c in tl.cards if c.word == meta["word"])
        truth = clock(card.start)
    else:
        return False
    return truth == q["answer"] and q["answer"] in q["candidates"] and len(set(q["candidates"])) == 4
