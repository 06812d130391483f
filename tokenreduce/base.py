"""Reducer base class, registry, chains and the spec parser.

A reducer is a dataclass whose fields are its hyperparameters, validated in ``__post_init__``
(:class:`~vidqa.errors.ConfigError`). ``reducer(tokens, context) -> tokens`` returns a subset, or a
size-weighted merge, of the input :class:`~vidqa.tokens.VisualTokens`:

* survivors are in the original order and keep the ``frame``/``time``/``grid`` of the input token
  they come from (a merged token: of its destination), so the adapter can give each survivor the
  position of its (t, h, w);
* ``size`` adds up: a merged token carries the sizes of everything folded into it, and its
  embedding is the size-weighted mean, so ``sum(size * embeds)`` over what merged is unchanged;
* embeddings keep their dtype and device.

Streaming. Ingest reduces a video chunk by chunk. ``reducer.stream()`` returns a
:class:`ReducerStream` that carries the reducer's small state (e.g. the last kept token of every grid
location) from one call to the next; a stream fed the chunks of a video returns the same tokens as
``reducer(whole_video)`` for every question-agnostic reducer (see each reducer for the exact claim).
Calling the reducer itself starts from a fresh state each time. Streams deep-copy cleanly, so a
caller can save one and retry a chunk.

Question-aware reducers (``question_aware = True``) run at question time and read ``context``
(``question_embeds [Lq, D]``, ``frames``, ``question``, a ``scorer``). ``Chain.split()`` separates the
two kinds: the agnostic part runs at ingest, the aware part per question.

Chains are written ``"temporal:keep_ratio=0.5,tome:keep_ratio=0.5"`` (``name:key=value:key=value``,
reducers separated by commas) in configs and on the command line; :func:`agnostic_spec` is the part of
a spec that ingest runs, so the question-aware knobs never invalidate a saved memory.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from typing import ClassVar

from vidqa.errors import ConfigError
from vidqa.tokens import VisualTokens

REDUCERS: dict[str, type["Reducer"]] = {}


def register(name: str):
    """Class decorator: makes a reducer available to :func:`build_reducer` under ``name``."""

    def deco(cls):
        cls.name = name
        REDUCERS[name] = cls
        return cls

    return deco


@dataclass
class Reducer:
    """Base class. Subclasses implement :meth:`reduce` and, when they keep state across chunks,
    :meth:`initial_state`."""

    name: ClassVar[str] = "identity"
    question_aware: ClassVar[bool] = False

    def __call__(self, tokens: VisualTokens, context: dict | None = None) -> VisualTokens:
        return self.stream()(tokens, context)

    def stream(self) -> "ReducerStream":
        return ReducerStream(self)

    def initial_state(self) -> dict:
        return {}

    def reduce(self, tokens: VisualTokens, context: dict, state: dict) -> VisualTokens:
        """Reduces non-empty ``tokens``; ``state`` persists between the calls of one stream."""
        raise NotImplementedError


class ReducerStream:
    """A reducer plus the state it carries between chunks of one video."""

    def __init__(self, reducer: Reducer):
        self.reducer = reducer
        self.state = reducer.initial_state()

    @property
    def question_aware(self) -> bool:
        return self.reducer.question_aware

    def __call__(self, tokens: VisualTokens, context: dict | None = None) -> VisualTokens:
        if len(tokens) == 0:
            return tokens
        return self.reducer.reduce(tokens, context or {}, self.state)


def check_ratio(value: float, name: str = "keep_ratio") -> None:
    if not 0 < value <= 1:
        raise ConfigError(f"{name} must be in (0, 1], got {value}")


class Chain:
    """Reducers (or their streams) applied in order: temporal -> spatial -> budget."""

    def __init__(self, reducers: list):
        self.reducers = list(reducers)

    def __call__(self, tokens: VisualTokens, context: dict | None = None) -> VisualTokens:
        for r in self.reducers:
            tokens = r(tokens, context)
        return tokens

    def __len__(self) -> int:
        return len(self.reducers)

    def split(self) -> tuple["Chain | None", "Chain | None"]:
        """(question-agnostic part, question-aware part), each in chain order; ``None`` where empty."""
        agnostic = [r for r in self.reducers if not r.question_aware]
        aware = [r for r in self.reducers if r.question_aware]
        return (Chain(agnostic) if agnostic else None, Chain(aware) if aware else None)

    def stream(self) -> "Chain":
        """A chain of fresh streams (one state per reducer) for one video."""
        return Chain([r.stream() for r in self.reducers])


_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def _convert(reducer: str, key: str, value, default):
    """Spec strings carry text; the field's default says which type it wants."""
    kind = type(default)
    if default is None or type(value) is kind:
        return value
    try:
        if kind is bool:
            text = str(value).strip().lower()
            if text not in _TRUE | _FALSE:
                raise ValueError(value)
            return text in _TRUE
        if kind is int:
            number = float(value)
            if number != int(number):
                raise ValueError(value)
            return int(number)
        return kind(value)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"reducer {reducer!r}: {key}={value!r} is not a valid {kind.__name__}") from err


def build_reducer(name: str, **params) -> Reducer:
    """The reducer registered as ``name`` with ``params`` (strings are converted to the field types)."""
    if name not in REDUCERS:
        raise ConfigError(f"unknown reducer {name!r}; valid: {', '.join(sorted(REDUCERS))}")
    cls = REDUCERS[name]
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ConfigError(f"reducer {name!r} has no parameter(s) {', '.join(unknown)}; "
                          f"valid: {', '.join(sorted(known))}")
    typed = {k: _convert(name, k, v, known[k].default if known[k].default is not MISSING else None)
             for k, v in params.items()}
    return cls(**typed)


def build_chain(spec: str) -> Chain:
    """Parses ``"name:k=v:k=v,name2"`` into a :class:`Chain` (an empty spec is an empty chain)."""
    reducers = []
    for part in filter(None, (p.strip() for p in (spec or "").split(","))):
        name, *kvs = part.split(":")
        params = {}
        for kv in kvs:
            if "=" not in kv:
                raise ConfigError(f"reducer parameter {kv!r} in {part!r} must be key=value")
            k, v = kv.split("=", 1)
            params[k.strip()] = v.strip()
        reducers.append(build_reducer(name.strip(), **params))
    return Chain(reducers)


def agnostic_spec(spec: str) -> str:
    """The question-agnostic reducers of ``spec`` (validated), in order, as a spec: what ingest runs."""
    build_chain(spec)
    parts = [p.strip() for p in (spec or "").split(",") if p.strip()]
    return ",".join(p for p in parts if not REDUCERS[p.split(":")[0].strip()].question_aware)
