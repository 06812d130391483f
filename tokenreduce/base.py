"""Reducer base class, registry and chains.

A reducer is a dataclass whose fields are its hyperparameters (validated in ``__post_init__``);
``reducer(tokens, context) -> tokens`` returns a subset (or size-weighted merge) of the input
:class:`~vidqa.tokens.VisualTokens`, in the original order, with metadata kept consistent.
Question-agnostic reducers run at ingest and must give the same result chunk by chunk as on the
whole video: ``reducer.stream()`` returns a stateful callable for that. Question-aware reducers
(``question_aware = True``) run at question time and read ``context`` (question embedding, scores).

Chains are written ``"temporal:keep_ratio=0.5,tome:keep_ratio=0.5"``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

from vidqa.errors import ConfigError
from vidqa.tokens import VisualTokens

REDUCERS: dict[str, type["Reducer"]] = {}


def register(name: str):
    def deco(cls):
        cls.name = name
        REDUCERS[name] = cls
        return cls

    return deco


@dataclass
class Reducer:
    """Base: identity. Subclasses implement ``reduce`` (and ``stream`` when stateful)."""

    name: ClassVar[str] = "identity"
    question_aware: ClassVar[bool] = False

    def __call__(self, tokens: VisualTokens, context: dict | None = None) -> VisualTokens:
        if len(tokens) == 0:
            return tokens
        return self.reduce(tokens, context or {})

    def reduce(self, tokens: VisualTokens, context: dict) -> VisualTokens:
        return tokens

    def stream(self):
        """A callable applying the reducer chunk by chunk; stateless reducers are their own stream."""
        return self


def check_ratio(value: float, name: str = "keep_ratio") -> None:
    if not 0 < value <= 1:
        raise ConfigError(f"{name} must be in (0, 1], got {value}")


class Chain:
    """Reducers applied in order (temporal -> spatial -> budget)."""

    def __init__(self, reducers: list[Reducer]):
        self.reducers = list(reducers)

    def __call__(self, tokens: VisualTokens, context: dict | None = None) -> VisualTokens:
        for r in self.reducers:
            tokens = r(tokens, context)
        return tokens

    def __len__(self) -> int:
        return len(self.reducers)

    def split(self) -> tuple["Chain | None", "Chain | None"]:
        """(question-agnostic part, question-aware part); ``None`` where empty."""
        agnostic = [r for r in self.reducers if not r.question_aware]
        aware = [r for r in self.reducers if r.question_aware]
        return (Chain(agnostic) if agnostic else None, Chain(aware) if aware else None)

    def stream(self) -> "Chain":
        return Chain([r.stream() for r in self.reducers])


def build_reducer(name: str, **params) -> Reducer:
    if name not in REDUCERS:
        raise ConfigError(f"unknown reducer {name!r}; valid: {', '.join(sorted(REDUCERS))}")
    cls = REDUCERS[name]
    known = {f.name: f for f in fields(cls)}
    unknown = set(params) - set(known)
    if unknown:
        raise ConfigError(f"reducer {name!r} has no parameter(s) {sorted(unknown)}; valid: {sorted(known)}")
    typed = {}
    for key, value in params.items():
        kind = type(known[key].default) if known[key].default is not None else str
        try:
            typed[key] = kind(value) if not isinstance(value, kind) else value
        except (TypeError, ValueError) as err:
            raise ConfigError(f"reducer {name!r}: {key}={value!r} is not a valid {kind.__name__}") from err
    return cls(**typed)


def build_chain(spec: str) -> Chain:
    """Parses ``"name:k=v:k=v,name2"`` into a :class:`Chain`."""
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
