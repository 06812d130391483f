"""``make_timeline``: the deterministic script of a synthetic video of any length.

One ``numpy.random.Generator`` seeded from ``(seed, duration)`` drives every choice (no global
state), so the same arguments give a byte-identical ``to_json()``. The script has structure a person
could describe, and every event lasts at least 2 s:

* scenes cut one to the next; one *dominant* scene takes about half of the video (topic questions);
* one object at a time crosses the lower part of the frame (so nothing hides anything): common
  objects (circle/square x colour x size), 3-8 s each. In long videos four (colour, shape) pairs are
  held back and shown 1-6 times each, spread over the whole video, so that counting them is a
  long-range question with a small answer;
* each rare shape (a *needle*) appears exactly once, inside one scene, one needle per equal part of
  the video, in a random order of shapes;
* text cards show one word for 3-5 s in the upper band. When there are more cards than words, six
  words are shown exactly once (spread over the video, for order/plot/grounding questions) and the
  other ten repeat;
* anomalies of one kind per video (1 to 4 occurrences, one per equal part), 2-4 s each, never over a
  needle or an object; non-flip anomalies avoid cards too, while an upside-down picture always comes
  with a card on screen so that the flip is visible;
* a slow camera pan (``drift``) and per-pixel noise (``noise``) that the renderer applies.
"""

from __future__ import annotations

import math

import numpy as np

from vidqa.errors import ConfigError
from vidqa.synth import vocab
from vidqa.synth.world import Anomaly, Appearance, Card, Scene, Timeline, scene_totals

__all__ = ["Anomaly", "Appearance", "Card", "Scene", "Timeline", "make_timeline", "scene_totals"]

MIN_EVENT_S = 2.0
MIN_DURATION_S = 8.0
ONCE_WORDS = 6  # words shown exactly once when cards outnumber words
COUNT_TARGETS = 4  # (colour, shape) pairs held back for counting in long videos
MARGIN_S = 0.5  # free time kept between events that share the object track


def _r(x: float) -> float:
    return round(float(x), 2)


def make_timeline(seed: int, duration: float, object_every: float = 9.0, card_every: float = 40.0,
                  scene_every: float = 60.0, needles: int | None = None,
                  anomalies: int | None = None, count_targets: int | None = None) -> Timeline:
    """The script of a ``duration``-second video.

    ``object_every``, ``card_every`` and ``scene_every`` are mean seconds between starts of objects,
    cards and scenes. ``needles`` (default: 3, fewer below 24 s) and ``anomalies`` (default: one per
    half hour, 1 to 4) override the counts of rare events. ``count_targets``: (colour, shape) pairs
    held back from the random objects and shown 1-6 times each, one per equal part of the video
    (default: :data:`COUNT_TARGETS` in long videos, none in short ones; training clips ask for them
    so that the model meets the counts an hour gives).
    """
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    if not duration >= MIN_DURATION_S or not math.isfinite(duration):
        raise ConfigError(f"synthetic videos need at least {MIN_DURATION_S:g} seconds, got {duration!r}")
    for name, value in (("object_every", object_every), ("card_every", card_every), ("scene_every", scene_every)):
        if not value > 0:
            raise ConfigError(f"{name} must be positive, got {value!r}")
    duration = _r(duration)  # every time in the script has two decimals, the end included
    rng = np.random.default_rng([int(seed), int(round(duration * 1000))])
    angle, speed = rng.uniform(0, 2 * math.pi), rng.uniform(0.5, 1.0)
    tl = Timeline(seed=int(seed), duration=duration, drift=(_r(speed * math.cos(angle)), _r(speed * math.sin(angle))))
    tl.scenes = _scenes(rng, duration, scene_every)
    tl.dominant_scene = max(scene_totals(tl).items(), key=lambda kv: kv[1])[0]

    n_needles = min(len(vocab.RARE_SHAPES), int(duration // 8)) if needles is None else needles
    n_anomalies = int(np.clip(round(duration / 1800), 1, 4)) if anomalies is None else anomalies
    if not 0 <= n_needles <= len(vocab.RARE_SHAPES) or n_anomalies < 0:
        raise ConfigError(f"needles must be in 0..{len(vocab.RARE_SHAPES)} and anomalies >= 0")
    # Rare events first, on the object track (one thing at a time). Short videos may not fit them
    # all at the first draw; redraw (from the same generator, so still deterministic) a few times.
    longest = max(MIN_EVENT_S, duration / 4)
    for _ in range(20):
        busy: list[tuple[float, float]] = []
        needle_objs = _needles(rng, tl, n_needles, busy, longest)
        tl.anomalies = _anomalies(rng, duration, n_anomalies, busy, longest)
        if len(needle_objs) == n_needles and len(tl.anomalies) == n_anomalies:
            break
    tl.cards = _cards(rng, duration, card_every, tl.anomalies)
    common = _common_objects(rng, duration, object_every, busy, count_targets)
    tl.objects = sorted(needle_objs + common, key=lambda o: (o.start, o.shape))
    return tl


def _scenes(rng, duration: float, scene_every: float) -> list[Scene]:
    names = list(vocab.SCENES)
    dominant = names[int(rng.integers(len(names)))]
    scenes, t, previous = [], 0.0, None
    mean = duration / max(2, int(round(duration / scene_every)))
    while t < duration - 1e-6:
        length = max(float(rng.uniform(0.6, 1.4) * mean), min(8.0, duration - t))
        end = min(duration, t + length)
        if duration - end < 4.0:  # no sliver of a scene at the end
            end = duration
        # Alternate the dominant scene with others so that it fills about half of the video.
        if previous != dominant and rng.random() < 0.75:
            name = dominant
        else:
            others = [n for n in names if n not in (dominant, previous)]
            name = others[int(rng.integers(len(others)))]
        scenes.append(Scene(name, _r(t), _r(end), texture=vocab.SCENES[name][2], scale=_r(rng.uniform(0.8, 1.25)),
                            phase_x=_r(rng.uniform(0, 200)), phase_y=_r(rng.uniform(0, 200))))
        previous, t = name, end
    return scenes


def _free(lo: float, hi: float, busy: list[tuple[float, float]], margin: float) -> list[tuple[float, float]]:
    """The parts of [lo, hi] at least ``margin`` away from every busy interval."""
    free, t = [], lo
    for a, b in sorted(busy):
        a, b = a - margin, b + margin
        if a > t:
            free.append((t, min(a, hi)))
        t = max(t, b)
        if t >= hi:
            break
    if t < hi:
        free.append((t, hi))
    return [(a, b) for a, b in free if b > a]


def _place(rng, length: float, gaps: list[tuple[float, float]]) -> float | None:
    """A uniformly random start such that [start, start + length] fits in one gap; None if none fits."""
    fits = [(a, b) for a, b in gaps if b - a >= length]
    if not fits:
        return None
    room = np.array([b - a - length for a, b in fits]) + 1e-3
    a, b = fits[int(rng.choice(len(fits), p=room / room.sum()))]
    return float(rng.uniform(a, b - length))


def _appearance(rng, shape: str, colour: str, start: float, end: float) -> Appearance:
    size = list(vocab.SIZES)[int(rng.integers(len(vocab.SIZES)))]
    rf = vocab.SIZES[size]
    # Enter at one edge and cross to the other, below the card band (which ends at 35% of the height).
    left = bool(rng.random() < 0.5)
    x0, x1 = (0.1, 0.9) if left else (0.9, 0.1)
    y0, y1 = rng.uniform(0.37 + rf, 0.98 - rf, size=2)
    return Appearance(shape, colour, size, _r(start), _r(end), x0, _r(y0), x1, _r(y1))


def _random_colour(rng) -> str:
    colours = list(vocab.COLOURS)
    return colours[int(rng.integers(len(colours)))]


def _needles(rng, tl: Timeline, n: int, busy: list, longest: float) -> list[Appearance]:
    """One rare shape per equal part of the video, inside a single scene."""
    shapes = [vocab.RARE_SHAPES[i] for i in rng.permutation(len(vocab.RARE_SHAPES))[:n]]
    out = []
    for i, shape in enumerate(shapes):
        lo, hi = tl.duration * i / n, tl.duration * (i + 1) / n
        gaps = []
        for s in tl.scenes:  # a needle never straddles a cut: its scene is a question
            a, b = max(lo, s.start) + 0.25, min(hi, s.end) - 0.25
            gaps.extend(_free(a, b, busy, MARGIN_S) if b > a else [])
        length = min(float(rng.uniform(3, 6)), longest, max((b - a for a, b in gaps), default=0.0))
        start = _place(rng, length, gaps) if length >= MIN_EVENT_S else None
        if start is None:
            continue
        out.append(_appearance(rng, shape, _random_colour(rng), start, start + length))
        busy.append((start, start + length))
    return out


def _anomalies(rng, duration: float, n: int, busy: list, longest: float) -> list[Anomaly]:
    kinds = list(vocab.ANOMALIES)
    kind = kinds[int(rng.integers(len(kinds)))]  # one kind per video: "which anomaly" has one answer
    out = []
    for i in range(n):
        lo, hi = duration * i / n, duration * (i + 1) / n
        edge = 0.1 * (hi - lo)
        length = min(float(rng.uniform(2, 4)), longest)
        start = _place(rng, length, _free(max(0.5, lo + edge), min(duration - 0.5, hi - edge), busy, MARGIN_S))
        if start is None:
            start = _place(rng, MIN_EVENT_S, _free(0.5, duration - 0.5, busy, MARGIN_S))
            length = MIN_EVENT_S
        if start is None:
            continue
        out.append(Anomaly(kind, _r(start), _r(start + length)))
        busy.append((start, start + length))
    return sorted(out, key=lambda a: a.start)


def _cards(rng, duration: float, card_every: float, anomalies: list[Anomaly]) -> list[Card]:
    # A flip is only visible when something asymmetric is on screen: give each one its own card.
    flips = [(a.start - 0.5, a.end + 0.5) for a in anomalies if a.kind == "upside_down"]
    avoid = [(a.start, a.end) for a in anomalies if a.kind != "upside_down"] + flips
    slots = list(flips)
    t = float(rng.uniform(2, max(2.5, min(card_every, duration / 4))))
    while t + 5 < duration:
        length = float(rng.uniform(3, 5))
        clash = [b for a, b in avoid if a - 1.0 < t + length and t < b + 1.0]
        if clash:
            t = max(clash) + 1.0
            continue
        slots.append((t, t + length))
        t += length + max(6.0, float(rng.exponential(card_every)))
    slots.sort()
    words = [vocab.CARD_WORDS[i] for i in rng.permutation(len(vocab.CARD_WORDS))]
    if len(slots) <= len(words):
        chosen = words[:len(slots)]
    else:
        once, rest = words[:ONCE_WORDS], words[ONCE_WORDS:]
        chosen = [""] * len(slots)
        for i, w in enumerate(once):  # spread over the video
            chosen[int((i + 0.5) * len(slots) / len(once))] = w
        for i, w in enumerate(chosen):
            if not w:
                options = [x for x in rest if i == 0 or x != chosen[i - 1]]
                chosen[i] = options[int(rng.integers(len(options)))]
    return [Card(w, _r(a), _r(b)) for w, (a, b) in zip(chosen, slots)]


def _common_objects(rng, duration: float, object_every: float, busy: list,
                    count_targets: int | None = None) -> list[Appearance]:
    slots, t = [], float(rng.uniform(1, max(1.5, object_every)))
    mean_gap = max(0.5, object_every - 5.5)  # 5.5 s: the mean crossing time
    while t + MIN_EVENT_S < duration:
        length = float(rng.uniform(3, 8))
        end = min(duration, t + length)
        clash = [b for a, b in busy if a - MARGIN_S < end and t < b + MARGIN_S]
        if clash:
            t = max(clash) + MARGIN_S + 0.01
            continue
        if end - t >= MIN_EVENT_S:
            slots.append((t, end))
        t = end + max(1.0, float(rng.exponential(mean_gap)))
    combos = [(c, s) for s in vocab.COMMON_SHAPES for c in vocab.COLOURS]
    assigned: list[tuple[str, str] | None] = [None] * len(slots)
    if count_targets is None:
        count_targets = COUNT_TARGETS if len(slots) > 3 * len(combos) else 0
    if count_targets and len(slots) >= 6:
        # Hold some pairs back and show each 1-6 times, one per equal part of the video.
        targets = [combos[i] for i in rng.permutation(len(combos))[:count_targets]]
        for combo in targets:
            k = int(rng.integers(1, 7))
            for part in np.array_split(np.arange(len(slots)), k):
                free = [j for j in part if assigned[j] is None]
                if free:
                    assigned[free[int(rng.integers(len(free)))]] = combo
        combos = [c for c in combos if c not in targets]
    out = []
    for (start, end), combo in zip(slots, assigned):
        colour, shape = combo if combo is not None else combos[int(rng.integers(len(combos)))]
        out.append(_appearance(rng, shape, colour, start, end))
    return out
