"""The data of a synthetic video's script: ``Timeline`` and the events it holds.

All times are seconds from the start of the video; every interval is half open, ``[start, end)``.
Positions are fractions of the frame's width and height. A timeline is plain data: it survives a
JSON round trip unchanged (``Timeline.from_json(tl.to_json()).to_json() == tl.to_json()``) and is
treated as immutable once built (the time-lookup indexes are built lazily on first use).
"""

from __future__ import annotations

import bisect
import json
from dataclasses import asdict, dataclass, field, fields

from vidqa.errors import DataError


@dataclass
class Scene:
    """A stretch of one background. ``texture`` is the pattern kind (see ``textures.py``),
    ``scale`` stretches it and ``phase_x``/``phase_y`` shift it (in 224-pixel reference units)."""

    name: str
    start: float
    end: float
    texture: str = ""
    scale: float = 1.0
    phase_x: float = 0.0
    phase_y: float = 0.0


@dataclass
class Appearance:
    """An object crossing the frame in a straight line from (x0, y0) at ``start`` to (x1, y1) at ``end``."""

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

    def centre(self, t: float) -> tuple[float, float]:
        """(x, y) as fractions of width and height at time ``t``."""
        f = (t - self.start) / max(self.end - self.start, 1e-6)
        return self.x0 + (self.x1 - self.x0) * f, self.y0 + (self.y1 - self.y0) * f


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
    """The whole script. ``drift`` is the camera pan in reference pixels per second (x, y) of a
    224-pixel frame; ``noise`` is the amplitude of the per-pixel grey noise (uniform integers in
    ``[-noise, noise]``, drawn from ``(seed, frame time)``)."""

    seed: int
    duration: float
    scenes: list[Scene] = field(default_factory=list)
    objects: list[Appearance] = field(default_factory=list)
    cards: list[Card] = field(default_factory=list)
    anomalies: list[Anomaly] = field(default_factory=list)
    dominant_scene: str = ""
    drift: tuple[float, float] = (0.8, 0.0)
    noise: int = 7

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @staticmethod
    def from_json(text: str) -> "Timeline":
        """Parses ``to_json``'s output; anything else raises one-line :class:`DataError`."""
        try:
            d = json.loads(text)
            return Timeline(
                seed=int(d["seed"]), duration=float(d["duration"]), dominant_scene=d["dominant_scene"],
                drift=tuple(d.get("drift", (0.8, 0.0))), noise=int(d.get("noise", 7)),
                scenes=[_build(Scene, s) for s in d["scenes"]], objects=[_build(Appearance, o) for o in d["objects"]],
                cards=[_build(Card, c) for c in d["cards"]], anomalies=[_build(Anomaly, a) for a in d["anomalies"]])
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise DataError(f"not a synthetic timeline: {type(err).__name__}: {str(err)[:120]}") from None

    # Time lookups: events sorted by start; an index of (starts, longest length) per list makes each
    # lookup O(log n + hits) so rendering a frame of a 10-hour video costs what a short one does.
    def _lookup(self, name: str, t: float) -> list:
        events = getattr(self, name)
        cache = self.__dict__.setdefault("_index", {})
        index = cache.get(name)
        if index is None or index[0] != len(events):
            order = sorted(events, key=lambda e: e.start)
            index = (len(events), order, [e.start for e in order], max((e.end - e.start for e in events), default=0))
            cache[name] = index
        _, order, starts, longest = index
        hi = bisect.bisect_right(starts, t)
        lo = bisect.bisect_left(starts, t - longest)
        return [e for e in order[lo:hi] if e.start <= t < e.end]

    def scene_at(self, t: float) -> Scene:
        found = self._lookup("scenes", t)
        return found[0] if found else (self.scenes[-1] if t >= self.duration else self.scenes[0])

    def objects_at(self, t: float) -> list[Appearance]:
        return self._lookup("objects", t)

    def card_at(self, t: float) -> Card | None:
        found = self._lookup("cards", t)
        return found[0] if found else None

    def anomaly_at(self, t: float) -> Anomaly | None:
        found = self._lookup("anomalies", t)
        return found[0] if found else None


def _build(cls, d: dict):
    names = {f.name for f in fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"{cls.__name__} has no field {sorted(unknown)[0]!r}")
    return cls(**d)


def scene_totals(tl: Timeline) -> dict[str, float]:
    """Seconds on screen of each scene name."""
    totals: dict[str, float] = {}
    for s in tl.scenes:
        totals[s.name] = totals.get(s.name, 0.0) + (s.end - s.start)
    return totals
