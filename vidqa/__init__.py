"""vidqa: question answering over long videos with Hugging Face vision-language models.

Public API (imported lazily so that ``import vidqa`` stays cheap for the CLI's ``--help``):

* :class:`vidqa.pipeline.VideoQA` -- ``ingest(video) -> VideoMemory``, ``ask(video_or_memory, question)``
* :class:`vidqa.pipeline.Answer`
* :class:`vidqa.tokens.VisualTokens`
* the error types in :mod:`vidqa.errors`
"""

from vidqa.errors import (  # noqa: F401  (re-exported)
    CacheError,
    ConfigError,
    DataError,
    ModelError,
    QuestionError,
    ResourceError,
    VideoError,
    VidqaError,
)

__version__ = "0.1.0"

_LAZY = {
    "VideoQA": "vidqa.pipeline",
    "Answer": "vidqa.pipeline",
    "VisualTokens": "vidqa.tokens",
    "VidqaConfig": "vidqa.config",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vidqa' has no attribute {name!r}")
