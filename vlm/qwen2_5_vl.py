"""Adapter for the Qwen2.5-VL family (and Qwen2-VL, whose video path is the same).

Positions follow the reference M-RoPE recipe of the Qwen2.5-VL paper (Bai et al., 2025), built here
rather than taken from ``get_rope_index`` because transformers >= 5.3 starts the text after a video
at ``start + max(H, W) / merge`` instead of ``max(video positions) + 1`` (shared TRANSFORMERS_NOTES):

* a chunk placed at sequence position ``st``: token of temporal grid time ``t_g`` and merged patch
  ``(r, c)`` gets ``(st + floor((t_g - t0) * tokens_per_second), st + r, st + c)``;
* the next text token starts at ``max(all of the unreduced chunk's positions) + 1``.

Temporal positions therefore follow absolute time inside a chunk (Qwen2.5-VL's "absolute time
encoding"), and every chunk is its own vision block preceded by a ``<mm:ss>`` timestamp in text so
the model can answer "when".
"""

from __future__ import annotations

import numpy as np
import torch

from vidqa.tokens import VisualTokens
from vidqa.vlm.base import ChunkLayout, VLMAdapter
from vidqa.vlm.vision_attention import is_packed, packed_vision_attention
from vidqa.vlm.vision_fast import speed_up_vision
from vidqa.vlm.vision_graph import VisionGraphs
from vidqa.vlm.vision_plan import VisionPlans


def format_timestamp(seconds: float) -> str:
    """``<mm:ss>`` below an hour, ``<h:mm:ss>`` above."""
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"<{h}:{m:02d}:{s:02d}>" if h else f"<{m:02d}:{s:02d}>"


class Qwen2_5_VLAdapter(VLMAdapter):
    """Qwen2.5-VL / Qwen2-VL: 2-frame temporal patches, 2x2 spatial merge, M-RoPE (``P = 3``)."""

    family = "qwen2_5_vl"
    position_dims = 3
    system_prompt = "You are a helpful assistant."

    def __init__(self, model, processor, name: str, timestamps_in_prompt: bool = True):
        super().__init__(model, processor, name)
        vc = model.config.vision_config
        self.merge = vc.spatial_merge_size
        self.temporal_patch = vc.temporal_patch_size
        # Qwen2-VL has no absolute-time positions: one temporal position per grid.
        self.tokens_per_second = getattr(vc, "tokens_per_second", None)
        self.timestamps_in_prompt = timestamps_in_prompt
        self._vision_plans = VisionPlans(model.model.visual)
        self._vision_graphs = VisionGraphs(model.model.visual)

    # ------------------------------------------------------------------ vision
    def encode(self, frames: np.ndarray, times: np.ndarray, first_index: int = 0) -> VisualTokens:
        """Runs the processor + vision tower + merger on ``frames`` ``[T, H, W, 3]``.

        Odd ``T`` is padded by the processor (repeating the last frame), as in the native path.
        ``first_index`` must be even so that temporal grids line up with the whole video's.
        """
        if first_index % self.temporal_patch:
            raise ValueError(f"chunks must start at a multiple of {self.temporal_patch} frames")
        vp = self.processor.video_processor
        # Resizing and normalising run where the model runs (the processor is torchvision-based):
        # on a GPU this removes the largest CPU cost of ingest.
        inputs = vp(videos=[self.frames_for_processor(frames)], return_tensors="pt", do_sample_frames=False,
                    cap_pixels_per_frame=False, device=str(self.device))
        pixels = inputs["pixel_values_videos"].to(self.device)
        grid_thw = inputs["video_grid_thw"].cpu()  # built from shapes on the host: no device sync to read
        visual = self.model.model.visual
        # Exact rewrites of the tower's slow products (vision_fast.py), once, at the first encode so that
        # training the same tower (synth/train.py) keeps its architecture.
        speed_up_vision(visual, pad=self.device.type == "cuda")
        # Packed window attention: one SDPA call per window size instead of one per window.
        with torch.no_grad(), packed_vision_attention(visual):
            # The grid's positions, windows and segments, computed once per frame size (vision_plan.py).
            plan = self._vision_plans.kwargs(grid_thw, pixels.shape[0], self.device) if is_packed(visual.config) else {}
            if plan:
                embeds = self._vision_graphs(pixels.to(visual.dtype), grid_thw, plan)  # a CUDA graph on a GPU
            else:
                out = self.model.model.get_video_features(pixel_values_videos=pixels,
                                                          video_grid_thw=grid_thw.to(self.device))
                embeds = out.pooler_output[0] if hasattr(out, "pooler_output") else out[0]
        return self.token_metadata(embeds, grid_thw[0], times, first_index)

    def token_metadata(self, embeds: torch.Tensor, grid_thw, times, first_index: int = 0) -> VisualTokens:
        """Wraps merged embeddings ``[N, D]`` of one video chunk (``grid_thw`` in patches) with their
        metadata: tokens come grid-major, then row-major over the 2x2-merged patches."""
        g_t, g_h, g_w = (int(v) for v in grid_thw)
        hm, wm = g_h // self.merge, g_w // self.merge
        n = g_t * hm * wm
        idx = torch.arange(n)
        g = idx // (hm * wm)
        r = (idx % (hm * wm)) // wm
        c = idx % wm
        first_frame_of_grid = (g * self.temporal_patch).clamp(max=len(times) - 1)
        times_t = torch.as_tensor(np.asarray(times, dtype=np.float64))
        return VisualTokens(
            embeds=embeds.reshape(n, -1),
            frame=first_index + first_frame_of_grid,
            time=times_t[first_frame_of_grid],
            grid=torch.stack([first_index // self.temporal_patch + g, r, c], dim=1),
            size=torch.ones(n),
            grid_hw=(hm, wm),
        )

    # ------------------------------------------------------------------ positions
    def _temporal_offsets(self, time: torch.Tensor, grid_t: torch.Tensor, t0: float, grid_t0: int) -> torch.Tensor:
        if self.tokens_per_second is None:
            return grid_t - grid_t0
        # The epsilon absorbs container timestamps such as 1.9999999 s for a frame meant at 2 s.
        return torch.floor((time.double() - t0) * self.tokens_per_second + 1e-6).long()

    def chunk_layout(self, tokens: VisualTokens) -> ChunkLayout:
        t0, grid_t0 = float(tokens.time.min()), int(tokens.grid[:, 0].min())
        dt = self._temporal_offsets(tokens.time, tokens.grid[:, 0], t0, grid_t0)
        extent = max(int(dt.max()), tokens.grid_hw[0] - 1, tokens.grid_hw[1] - 1) + 1
        return ChunkLayout(t0=t0, grid_t0=grid_t0, extent=extent, num_tokens=len(tokens))

    def visual_positions(self, tokens: VisualTokens, layout: ChunkLayout, start: int) -> torch.Tensor:
        dt = self._temporal_offsets(tokens.time, tokens.grid[:, 0], layout.t0, layout.grid_t0)
        return torch.stack([start + dt, start + tokens.grid[:, 1], start + tokens.grid[:, 2]]).long()

    # ------------------------------------------------------------------ prompt
    def prompt_prefix(self) -> str:
        return f"<|im_start|>system\n{self.system_prompt}<|im_end|>\n<|im_start|>user\n"

    def chunk_open(self, t0: float) -> str:
        stamp = format_timestamp(t0) if self.timestamps_in_prompt else ""
        return f"{stamp}<|vision_start|>"

    def chunk_close(self) -> str:
        return "<|vision_end|>"

    def prompt_question(self, question: str, answer_prefix: str = "") -> str:
        return f"{question}<|im_end|>\n<|im_start|>assistant\n{answer_prefix}"

