"""The script of a synthetic video: scenes, objects, text cards and anomalies with their times.

``make_timeline(seed, duration)`` is deterministic (one ``numpy.random.Generator`` seeded from the
arguments, no global state). Structure a person could describe:

* scenes cut one to the next; one *dominant* scene takes about half of the video (topic questions);
* common objects (circle/square x colour x size) enter at one edge and cross the frame, 3-12 s;
* text cards show a word for 3-5 s;
* each rare shape (the *needles*) appears exactly once, the needles spread over the thirds of the
  video; one anomaly (the picture flips, inverts, goes dark or mirrors) lasts 2-4 s.

Every event lasts at least 2 s. Events never overlap with a card or the anomaly in a way that hides
them (cards are drawn in a band that objects avoid).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np

from vidqa.synth import vocab

MIN_EVENT_S = 2.0


@dataclass
class Scene:
    name: str
    start: float
    end: float


@dataclass
class Appearance:
    """An object crossing the frame from (x0, y0) to (x1, y1) (fractions of width/height)."""

    shape: str
    colour: str
    size: str
    start: float
    end: float
    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def label(self) -> str:
        return f"{self.size} {self.colour} {self.shape}"


@dataclass
class Card:
    word: str
    start: float
    end: float


@dataclass
class Anomaly:
    kind: str
    start: float
    end: float


@dataclass
class Timeline:
    seed: int
    duration: float
    scenes: list[Scene] = field(default_factory=list)
    objects: list[Appearance] = field(default_factory=list)
    cards: list[Card] = field(default_factory=list)
    anomalies: list[Anomaly] = field(default_factory=list)
    dominant_scene: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @staticmethod
    def from_json(text: str) -> "Timeline":
        d = json.loads(text)
        return Timeline(
            seed=d["seed"], duration=d["duration"], dominant_scene=d["dominant_scene"],
            scenes=[Scene(**s) for s in d["scenes"]], objects=[Appearance(**o) for o in d["objects"]],
            cards=[Card(**c) for c in d["cards"]], anomalies=[Anomaly(**a) for a in d["anomalies"]])

    def scene_at(self, t: float) -> Scene:
        for s in self.scenes:
            if s.start <= t < s.end:
                return s
        return self.scenes[-1]

    def objects_at(self, t: float) -> list[Appearance]:
        return [o for o in self.objects if o.start <= t < o.end]

    def card_at(self, t: float) -> Card | None:
        return next((c for c in self.cards if c.start <= t < c.end), None)

    def anomaly_at(self, t: float) -> Anomaly | None:
        return next((a for a in self.anomalies if a.start <= t < a.end), None)


def _r(x: float) -> float:
    return round(float(x), 2)


def make_timeline(seed: int, duration: float, object_every: float = 9.0, card_every: float = 40.0,
                  scene_every: float = 60.0) -> Timeline:
    """The timeline of a ``duration``-second video; densities are mean gaps in seconds."""
    if duration < 8:
        raise ValueError("synthetic videos need at least 8 seconds")
    rng = np.random.default_rng([seed, int(duration * 1000)])
    tl = Timeline(seed=seed, duration=float(duration))
    names = list(vocab.SCENES)
    tl.dominant_scene = names[int(rng.integers(len(names)))]
    # Scenes: alternate the dominant one with others so that it fills about half of the video.
    t, previous = 0.0, None
    n_scenes = max(2, int(round(duration / scene_every)))
    mean = duration / n_scenes
    while t < duration - 1e-6:
        length = float(rng.uniform(0.6, 1.4) * mean)
        length = max(length, min(8.0, duration - t))
        end = min(duration, t + length)
        if duration - end < 4.0:
            end = duration
        if previous != tl.dominant_scene and rng.random() < 0.75:
            name = tl.dominant_scene
        else:
            others = [n for n in names if n not in (tl.dominant_scene, previous)]
            name = others[int(rng.integers(len(others)))]
        tl.scenes.append(Scene(name, _r(t), _r(end)))
        previous, t = name, end
    tl.dominant_scene = max(scene_totals(tl).items(), key=lambda kv: kv[1])[0]
    # Text cards: a word each, 3-5 s, spaced at least 6 s apart.
    t = float(rng.uniform(2, min(card_every, duration / 4)))
    words = list(vocab.CARD_WORDS)
    rng.shuffle(words)
    while t + 5 < duration and words:
        length = float(rng.uniform(3, 5))
        tl.cards.append(Card(words.pop(), _r(t), _r(t + length)))
        t += length + max(6.0, float(rng.exponential(card_every)))
    # Needles: each rare shape once, one per part of the video.
    parts = len(vocab.RARE_SHAPES)
    for i, shape in enumerate(vocab.RARE_SHAPES):
        lo, hi = duration * i / parts, duration * (i + 1) / parts
        length = float(rng.uniform(3, 6))
        start = float(rng.uniform(lo, max(lo, hi - length - 0.5)))
        tl.objects.append(_appearance(rng, shape, start, min(duration, start + length)))
    # Common objects: one every ~object_every seconds.
    t = float(rng.uniform(1, object_every))
    while t + MIN_EVENT_S < duration:
        length = float(rng.uniform(3, 12))
        shape = vocab.COMMON_SHAPES[int(rng.integers(len(vocab.COMMON_SHAPES)))]
        tl.objects.append(_appearance(rng, shape, t, min(duration, t + length)))
        t += max(MIN_EVENT_S, float(rng.exponential(object_every)))
    tl.objects.sort(key=lambda o: (o.start, o.shape))
    # One anomaly, away from the very start and end.
    kinds = list(vocab.ANOMALIES)
    kind = kinds[int(rng.integers(len(kinds)))]
    length = float(rng.uniform(2, 4))
    start = float(rng.uniform(0.1 * duration, 0.9 * duration - length))
    tl.anomalies.append(Anomaly(kind, _r(start), _r(start + length)))
    return tl


def scene_totals(tl: Timeline) -> dict[str, float]:
    """Seconds on screen of each scene name."""
    totals: dict[str, float] = {}
    for s in tl.scenes:
        totals[s.name] = totals.get(s.name, 0.0) + (s.end - s.start)
    return totals


def _appearance(rng, shape: str, start: float, end: float) -> Appearance:
    colours = list(vocab.COLOURS)
    colour = colours[int(rng.integers(len(colours)))]
    size = list(vocab.SIZES)[int(rng.integers(len(vocab.SIZES)))]
    # Enter from the left or right edge, cross to the other side, in the band below the card.
    left = bool(rng.random() < 0.5)
    x0, x1 = (0.1, 0.9) if left else (0.9, 0.1)
    y0, y1 = float(rng.uniform(0.45, 0.8)), float(rng.uniform(0.45, 0.8))
    return Appearance(shape, colour, size, _r(start), _r(max(end, start + MIN_EVENT_S)),
                      x0, _r(y0), x1, _r(y1))
