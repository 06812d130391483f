"""The Qwen2.5-VL vision tower replayed as a CUDA graph, one per frame size.

With the fused blocks (``vision_fused.py``) the 7B tower's GPU work on a 16-frame chunk is ~25 ms,
and the host needs about as long to launch its ~640 kernels one by one from Python
(``bench/results/ingest_profile_NVIDIA_H200.txt``): the tower is bound by the host, and while the
host launches, the decoder threads wait for the interpreter lock. Every chunk of a video has the
same shapes, and with its grid-dependent inputs planned ahead (``vision_plan.py``) the forward no
longer reads anything back from the device, so it can be captured once as a CUDA graph and replayed
for each chunk: one launch instead of hundreds.

:class:`VisionGraphs` captures a frame size the second time it is seen (a video's first and last
chunks, of their own sizes, run eagerly) and keeps the ``capacity`` most recent graphs; a graph
lives as long as the adapter, so later videos of the same size replay it from their first chunk.
The replay's output is copied out of the graph's buffer (the next replay overwrites it). A graph
replays the addresses it was captured with, so one whose tower's weights have moved since is
dropped and captured again (the benchmark swaps the stock MLPs in and out for its native baseline;
replaying the old addresses read freed memory). Graphs are
used only on CUDA, without autograd, when no hook watches the tower (the benchmark's stage timers
run it eagerly), and unless ``VIDQA_VISION_GRAPHS=0``; a capture that fails (a kernel that cannot be
captured, out of memory) leaves that frame size eager, with a warning.
"""

from __future__ import annotations

import logging
import os
from collections import Counter, OrderedDict
from dataclasses import dataclass

import torch

from vidqa.vlm.hooks import is_watched
from vidqa.vlm.vision_attention import remembered_segments
from vidqa.vlm.vision_plan import grid_key

log = logging.getLogger(__name__)

WARMUPS = 2  # eager runs on a side stream before capture: cuDNN plans, Triton compilation, allocator


@dataclass
class _Graph:
    graph: "torch.cuda.CUDAGraph"
    pixels: torch.Tensor  # the graph's input buffer [n_patches, C * T * P * P]
    out: torch.Tensor  # its output buffer [n_tokens, D]
    inputs: tuple  # what the graph reads besides ``pixels`` (the plan, its segment plans): kept alive
    weights: tuple  # where the tower's parameters and buffers were at capture (data pointers)


def _weights(module: torch.nn.Module) -> tuple:
    """Where ``module``'s parameters and buffers live: a graph replays these addresses, so weights
    moved or swapped since its capture (``model.to``, the benchmark's stock tower) invalidate it."""
    return tuple(t.data_ptr() for t in (*module.parameters(), *module.buffers()))


class VisionGraphs:
    """Runs ``visual(pixels, grid_thw=..., **plan).pooler_output``, as a replayed CUDA graph where it can."""

    def __init__(self, visual: torch.nn.Module, capacity: int = 2):
        self.visual = visual
        self.capacity = capacity
        self._graphs: OrderedDict[tuple, _Graph] = OrderedDict()
        self._seen: Counter = Counter()
        self._failed: set[tuple] = set()
        self.replays = 0  # how many forwards were replays (for tests and profiles)

    def _usable(self, pixels: torch.Tensor) -> bool:
        return (pixels.is_cuda and not torch.is_grad_enabled() and not is_watched(self.visual)
                and os.environ.get("VIDQA_VISION_GRAPHS", "1") != "0")

    def eager(self, pixels: torch.Tensor, grid_thw: torch.Tensor, plan: dict) -> torch.Tensor:
        return self.visual(pixels, grid_thw=grid_thw, **plan).pooler_output

    def __call__(self, pixels: torch.Tensor, grid_thw: torch.Tensor, plan: dict) -> torch.Tensor:
        """Merged visual tokens ``[N, D]`` of ``pixels`` ``[n_patches, C * T * P * P]`` with ``grid_thw``
        ``[V, 3]`` (host) and ``plan`` (:meth:`VisionPlans.kwargs` for that grid)."""
        if not self._usable(pixels):
            return self.eager(pixels, grid_thw, plan)
        key = (grid_key(grid_thw), tuple(pixels.shape), pixels.dtype,
               str(pixels.device))
        entry = self._graphs.get(key)
        if entry is not None and entry.weights != _weights(self.visual):
            self._graphs.clear()  # every graph of this tower read the old addresses: captured again later
            self._seen.clear()
            entry = None
        if entry is None:
            self._seen[key] += 1
            if key in self._failed or self._seen[key] < 2:
                return self.eager(pixels, grid_thw, plan)
            entry = self._capture(key, pixels, grid_thw, plan)
            if entry is None:
                return self.eager(pixels, grid_thw, plan)
        self._graphs.move_to_end(key)
        entry.pixels.copy_(pixels)
        entry.graph.replay()
        self.replays += 1
        return entry.out.clone()

    def _capture(self, key: tuple, pixels: torch.Tensor, grid_thw: torch.Tensor, plan: dict) -> _Graph | None:
        static = pixels.clone()
        try:
            side = torch.cuda.Stream(pixels.device)
            side.wait_stream(torch.cuda.current_stream(pixels.device))
            with torch.cuda.stream(side):
                for _ in range(WARMUPS):
                    self.eager(static, grid_thw, dict(plan))
            torch.cuda.current_stream(pixels.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            # thread_local: the ingest's offload thread keeps using CUDA on its own stream meanwhile
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                out = self.eager(static, grid_thw, dict(plan))
        except Exception as err:  # noqa: BLE001 - any failure leaves this size eager; it must not end an ingest
            self._failed.add(key)
            log.warning("vision tower stays eager for grid %s: CUDA graph capture failed (%s)", key[0],
                        str(err).splitlines()[0][:200] if str(err) else type(err).__name__)
            torch.cuda.synchronize(pixels.device)
            return None
        segments = tuple(remembered_segments(v) for v in plan.values() if torch.is_tensor(v))
        entry = _Graph(graph=graph, pixels=static, out=out, inputs=(dict(plan), segments),
                       weights=_weights(self.visual))
        self._graphs[key] = entry
        while len(self._graphs) > self.capacity:
            self._graphs.popitem(last=False)
        return entry
