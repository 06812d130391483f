"""Training-free visual token reducers on :class:`~vidqa.tokens.VisualTokens`.

``build_chain("temporal:keep_ratio=0.5,tome:keep_ratio=0.5")``; see :data:`REDUCERS` for names.
"""

from vidqa.tokenreduce.base import REDUCERS, Chain, Reducer, build_chain, build_reducer
from vidqa.tokenreduce.budget import BudgetReducer, ClipFrameScorer, EmbeddingFrameScorer
from vidqa.tokenreduce.pool import PoolReducer
from vidqa.tokenreduce.temporal import TemporalReducer
from vidqa.tokenreduce.tome import ToMeReducer

__all__ = ["REDUCERS", "Chain", "Reducer", "build_chain", "build_reducer", "BudgetReducer",
           "ClipFrameScorer", "EmbeddingFrameScorer", "PoolReducer", "TemporalReducer", "ToMeReducer"]
