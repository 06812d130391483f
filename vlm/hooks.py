"""Whether a module is watched by forward hooks: the fused and replayed forwards (``llm_fused.py``,
``vision_graph.py``) step aside for watched modules, whose hooks would not fire inside them."""

from __future__ import annotations

import torch


def is_watched(module: torch.nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks)
