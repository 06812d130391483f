"""Stage timing of one vidqa ingest: where the wall time goes, and the shapes each stage ran on."""

from __future__ import annotations

import time

import numpy as np
from gpu_device import cuda_sync as _cuda_sync
from gpu_models import vision_module


class StageTimer:
    """Times the stages of one ingest and records the shapes they ran on (context manager).

    Inside the block: the adapter's ``encode`` (frames -> visual tokens: preprocessing + vision
    tower), the vision tower's forward (hooks), the language model's forward (hooks; every ingest
    prefill, including the prompt prefix) and ``StoredKV.pack`` (offload to host, quantizing first
    at 8/4 bits) are timed, the first three between device synchronisations so that asynchronous GPU
    work is charged to the stage that queued it. ``pack`` runs in the ingest's offload thread, in
    parallel with the others: its time is the thread's own, not part of the ingest's critical path.
    Restored on exit.

    With ``sync=False`` nothing is synchronised or hooked (the ingest overlaps its stages and replays
    the tower's CUDA graph as it does when not measured): only the frame and offload bytes are
    recorded, and ``seconds`` mean nothing. The synchronised timer's hooks keep the tower eager.

    ``seconds``: ``encode``, ``vision``, ``llm``, ``offload``; ``bytes``: ``frames`` (uint8 frames
    handed to ``encode``), ``offload`` (bytes stored on the host); ``vision_calls``: Qwen
    ``video_grid_thw`` rows per call, or SigLIP image counts; ``llm_calls``: ``(new, cached)`` tokens.
    """

    def __init__(self, adapter, family: str, sync: bool = True):
        self.adapter, self.family, self.sync = adapter, family, sync
        self.vision = vision_module(adapter.model, family)

    def __enter__(self) -> "StageTimer":
        from vidqa.memory.storage import StoredKV

        self.seconds = {"encode": 0.0, "vision": 0.0, "llm": 0.0, "offload": 0.0}
        self.bytes = {"frames": 0, "offload": 0}
        self.vision_calls: list = []
        self.llm_calls: list[tuple[int, int]] = []
        starts: dict[str, float] = {}
        cuda_sync = _cuda_sync if self.sync else (lambda: None)

        def vision_pre(module, args, kwargs):
            cuda_sync()
            if self.family == "qwen2_5_vl":
                grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
                self.vision_calls.append([tuple(int(v) for v in row) for row in grid.tolist()])
            else:
                self.vision_calls.append(int((kwargs.get("pixel_values", args[0] if args else None)).shape[0]))
            starts["vision"] = time.perf_counter()

        def vision_post(module, args, kwargs, output):
            cuda_sync()
            self.seconds["vision"] += time.perf_counter() - starts["vision"]

        def llm_pre(module, args, kwargs):
            cuda_sync()
            embeds, cache = kwargs.get("inputs_embeds"), kwargs.get("past_key_values")
            self.llm_calls.append((int(embeds.shape[1]), int(cache.get_seq_length()) if cache is not None else 0))
            starts["llm"] = time.perf_counter()

        def llm_post(module, args, kwargs, output):
            cuda_sync()
            self.seconds["llm"] += time.perf_counter() - starts["llm"]

        lm = self.adapter.language_model
        # Without synchronisation nothing hooks the tower or the decoder: a hook would keep the tower
        # off its CUDA graph (vlm/vision_graph.py) and the ingest would not run as it does for a user.
        self._handles = [self.vision.register_forward_pre_hook(vision_pre, with_kwargs=True),
                         self.vision.register_forward_hook(vision_post, with_kwargs=True),
                         lm.register_forward_pre_hook(llm_pre, with_kwargs=True),
                         lm.register_forward_hook(llm_post, with_kwargs=True)] if self.sync else []
        encode = self.adapter.encode

        def timed_encode(frames, times, first_index=0):
            cuda_sync()
            t0 = time.perf_counter()
            out = encode(frames, times, first_index=first_index)
            cuda_sync()
            self.seconds["encode"] += time.perf_counter() - t0
            self.bytes["frames"] += int(np.asarray(frames).nbytes)
            return out

        self.adapter.encode = timed_encode  # an instance attribute shadows the method until __exit__
        self._stored, self._pack = StoredKV, StoredKV.__dict__["pack"]
        pack = self._pack.__func__

        def timed_pack(x, bits=16, group_size=32, **kwargs):
            # Called in the ingest's offload thread, on its own stream; it returns with the copy done
            # (pageable host memory), so no device sync: one would wait for the main thread's work.
            t0 = time.perf_counter()
            out = pack(x, bits, group_size, **kwargs)
            self.seconds["offload"] += time.perf_counter() - t0
            self.bytes["offload"] += out.nbytes
            return out

        StoredKV.pack = staticmethod(timed_pack)
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.adapter.__dict__.pop("encode", None)
        self._stored.pack = self._pack
