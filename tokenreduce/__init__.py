"""Training-free visual token reducers on :class:`~vidqa.tokens.VisualTokens`.

``build_chain("temporal:keep_ratio=0.5,tome:keep_ratio=0.5")`` builds a chain from a spec;
:data:`REDUCERS` maps the names (``temporal``, ``tome``, ``pool``, ``budget``) to classes;
:data:`DEFAULT_CHAIN` is the chain the benchmarks report (temporal -> spatial at ingest, the
query-aware budget per question: 1/8 of the tokens stored, 1/16 attended).
"""

from vidqa.tokenreduce.base import (REDUCERS, Chain, Reducer, ReducerStream, agnostic_spec, build_chain,
                                    build_reducer)
from vidqa.tokenreduce.budget import BudgetReducer
from vidqa.tokenreduce.pool import PoolReducer
from vidqa.tokenreduce.scorers import ClipFrameScorer, EmbeddingFrameScorer, FrameScorer
from vidqa.tokenreduce.temporal import TemporalReducer
from vidqa.tokenreduce.tome import ToMeReducer

DEFAULT_CHAIN = "temporal:keep_ratio=0.25,tome:keep_ratio=0.5,budget:keep_ratio=0.5"

__all__ = ["DEFAULT_CHAIN", "REDUCERS", "BudgetReducer", "Chain", "ClipFrameScorer", "EmbeddingFrameScorer",
           "FrameScorer", "PoolReducer", "Reducer", "ReducerStream", "TemporalReducer", "ToMeReducer",
           "agnostic_spec", "build_chain", "build_reducer"]
