"""Streaming video memory: ingest once (KV blocks on the host), recall per question.

See :mod:`vidqa.memory.ingest` (chunks -> blocks), :mod:`vidqa.memory.recall` (question -> cache),
:mod:`vidqa.memory.persist` (save/load).
"""

from vidqa.memory.blocks import KVBlock, VideoMemory
from vidqa.memory.ingest import StreamingIngest
from vidqa.memory.recall import Recall, recall

__all__ = ["KVBlock", "VideoMemory", "StreamingIngest", "Recall", "recall"]
