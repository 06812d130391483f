"""The grid-dependent inputs of a Qwen2-VL / Qwen2.5-VL vision tower, computed once per frame size.

Every forward of the tower first derives, from ``grid_thw`` alone, the patches' rotary positions,
the attention segments (``cu_seqlens``) and, for Qwen2.5-VL (Bai et al., 2025), the window order
(``window_index``) and window segments. transformers computes them with ``tolist()``,
``repeat_interleave`` and ``unique_consecutive`` on the device, so each forward waits for the GPU to
finish everything queued before it: in a streaming ingest, the previous chunk's prefill. Every chunk
of a video has the same grid, so :class:`VisionPlans` computes them once per grid with transformers'
own helpers (``transformers.vision_utils``, whose functions accept them precomputed as keyword
arguments for exactly this purpose), keeps the position and window indices on the device and the
segment boundaries on the host (where :func:`~vidqa.vlm.vision_attention.segment_sdpa` reads them,
with its segment plan built once: :func:`~vidqa.vlm.vision_attention.remember_segments`). A chunk's
tower forward then queues its kernels without waiting for anything.

Only towers inside :func:`~vidqa.vlm.vision_attention.packed_vision_attention` get plans (a tower on
real FlashAttention wants its boundaries on the device); :meth:`VisionPlans.kwargs` returns ``{}``
otherwise, and the tower computes its inputs itself.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from vidqa.vlm.vision_attention import forget_segments, remember_segments


def grid_key(grid_thw: torch.Tensor) -> tuple:
    """``grid_thw`` ``[V, 3]`` (host) as a hashable key: one per frame size and frame count."""
    return tuple(tuple(int(v) for v in row) for row in grid_thw.tolist())


def _max_length(cu: torch.Tensor) -> int:
    return int((cu[1:] - cu[:-1]).max()) if cu.numel() > 1 else 0


class VisionPlans:
    """Per-grid keyword arguments of ``visual``'s forward, the ``capacity`` most recent grids kept."""

    def __init__(self, visual: torch.nn.Module, capacity: int = 4):
        self.visual = visual
        self.capacity = capacity
        self._plans: OrderedDict[tuple, dict] = OrderedDict()

    @property
    def windowed(self) -> bool:
        """Qwen2.5-VL's tower (window attention in most blocks); Qwen2-VL's attends whole grids."""
        return all(hasattr(self.visual, n) for n in ("window_size", "fullatt_block_indexes"))

    def kwargs(self, grid_thw: torch.Tensor, n_patches: int, device: torch.device) -> dict:
        """Keyword arguments for ``visual(pixels, grid_thw=grid_thw, **kwargs)``; ``grid_thw`` ``[V, 3]``
        on the host, ``n_patches`` the rows of ``pixels``."""
        try:
            from transformers import vision_utils
        except ImportError:  # a transformers without precomputable vision inputs
            return {}
        key = (grid_key(grid_thw), str(device))
        plan = self._plans.get(key)
        if plan is not None:
            self._plans.move_to_end(key)
            return dict(plan)
        visual = self.visual
        grid = grid_thw.cpu()
        cu = vision_utils.get_vision_cu_seqlens(grid)
        plan = {"position_ids": vision_utils.get_vision_position_ids(grid, visual.spatial_merge_size).to(device),
                "cu_seqlens": cu, "max_seqlen": _max_length(cu)}
        segments = [cu]
        if self.windowed:
            index, cu_window = vision_utils.get_vision_window_index(
                grid, spatial_merge_size=visual.spatial_merge_size, window_size=visual.window_size,
                patch_size=visual.patch_size)
            plan.update(window_index=index.to(device), cu_window_seqlens=cu_window,
                        max_window_seqlen=_max_length(cu_window))
            segments.append(cu_window)
        for s in segments:
            remember_segments(s, n_patches, device)
        self._plans[key] = plan
        while len(self._plans) > self.capacity:
            _, old = self._plans.popitem(last=False)
            for name in ("cu_seqlens", "cu_window_seqlens"):
                if name in old:
                    forget_segments(old[name])
        return dict(plan)
