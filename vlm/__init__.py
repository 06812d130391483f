"""VLM adapters: one file per model family over the native transformers classes.

``load_adapter(name)`` is the entry point; see :mod:`vidqa.vlm.loading` for the names it takes.
"""

from vidqa.vlm.base import ChunkLayout, VLMAdapter
from vidqa.vlm.loading import DEFAULT_MODEL, load_adapter

__all__ = ["ChunkLayout", "VLMAdapter", "DEFAULT_MODEL", "load_adapter"]
