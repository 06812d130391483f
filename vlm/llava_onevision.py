"""Adapter for LLaVA-OneVision (Li et al., 2024; llava-hf checkpoints).

Video path of the model: SigLIP on every frame, the projector, bilinear pooling of each frame's
patch grid to half size (27x27 -> 14x14 = 196 tokens at 384 px), and one learnt ``image_newline``
after the video. The language model is Qwen2 with 1-D RoPE (``P = 1``).

vidqa encodes chunk by chunk (frames are independent in SigLIP, so this is exact), appends the
newline after each chunk, and gives token ``(f, r, c)`` of an unreduced chunk placed at ``start`` the
position ``start + (f - f0) * tokens_per_frame + r * W + c``. Positions grow by 196 per frame, far
past the model's 32k range on long videos; retrieval therefore re-positions recalled blocks
(``positions="compact"``, see :mod:`vidqa.memory.recall`).

Prompt pieces are cut out of the model's own chat template around its ``<video>`` token, so real
checkpoints keep their exact wording.
"""

from __future__ import annotations

import numpy as np
import torch

from vidqa.tokens import VisualTokens
from vidqa.vlm.base import ChunkLayout, VLMAdapter
from vidqa.vlm.qwen2_5_vl import format_timestamp

QUESTION_MARK = "\x00QUESTION\x00"


class LlavaOnevisionAdapter(VLMAdapter):
    """LLaVA-OneVision: per-frame tokens, 1-D positions, newline after each chunk."""

    family = "llava_onevision"
    position_dims = 1

    def __init__(self, model, processor, name: str, timestamps_in_prompt: bool = True):
        super().__init__(model, processor, name)
        self.timestamps_in_prompt = timestamps_in_prompt
        video_token = getattr(processor, "video_token", "<video>")
        messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": QUESTION_MARK}]}]
        rendered = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        self._prefix, rest = rendered.split(video_token, 1)
        self._between, self._suffix = rest.split(QUESTION_MARK, 1)
        vc = model.config.vision_config
        side = vc.image_size // vc.patch_size
        self.frame_hw = (-(-side // 2), -(-side // 2))  # bilinear pooling to ceil(side / 2)

    @property
    def tokens_per_frame(self) -> int:
        return self.frame_hw[0] * self.frame_hw[1]

    # ------------------------------------------------------------------ vision
    def encode(self, frames: np.ndarray, times: np.ndarray, first_index: int = 0) -> VisualTokens:
        """SigLIP + projector + pooling on ``frames`` ``[T, H, W, 3]`` -> ``T * tokens_per_frame`` tokens."""
        # Resize and normalise where the model runs, as the Qwen adapter does: on the CPU the processor's
        # resize to 384x384 was 21 of the 58 s an hour of 1 fps video took to ingest on an H200.
        inputs = self.processor.video_processor(videos=[self.frames_for_processor(frames)], return_tensors="pt",
                                                device=str(self.device))
        pixels = inputs["pixel_values_videos"].to(self.device, self.dtype)
        cfg = self.model.config
        with torch.no_grad():
            # Positional: the argument is `pixel_values` in transformers 5.17, `pixel_values_videos` in 5.23.
            out = self.model.model.get_video_features(
                pixels, vision_feature_layer=cfg.vision_feature_layer,
                vision_feature_select_strategy=cfg.vision_feature_select_strategy)
        feats = getattr(out, "pooler_output", out)
        if isinstance(feats, (tuple, list)):
            feats = feats[0]
        t = len(times)
        h, w = self.frame_hw
        # transformers 5.23 appends the image_newline after the frames and 5.17 does not; keep the
        # frames' tokens only (vidqa appends one newline per chunk itself).
        embeds = feats.reshape(-1, feats.shape[-1])[: t * h * w]
        idx = torch.arange(t * h * w)
        f = idx // (h * w)
        return VisualTokens(
            embeds=embeds.reshape(t * h * w, -1),
            frame=first_index + f,
            time=torch.as_tensor(np.asarray(times, dtype=np.float64))[f],
            grid=torch.stack([first_index + f, (idx % (h * w)) // w, idx % w], dim=1),
            size=torch.ones(t * h * w),
            grid_hw=(h, w),
        )

    def chunk_close_embeds(self) -> torch.Tensor:
        return self.model.model.image_newline.detach()[None]

    # ------------------------------------------------------------------ positions
    def chunk_layout(self, tokens: VisualTokens) -> ChunkLayout:
        return ChunkLayout(t0=float(tokens.time.min()), grid_t0=int(tokens.grid[:, 0].min()),
                           extent=len(tokens), num_tokens=len(tokens))

    def visual_positions(self, tokens: VisualTokens, layout: ChunkLayout, start: int) -> torch.Tensor:
        h, w = tokens.grid_hw
        offset = (tokens.grid[:, 0] - layout.grid_t0) * (h * w) + tokens.grid[:, 1] * w + tokens.grid[:, 2]
        return (start + offset).long()[None]

    # ------------------------------------------------------------------ prompt
    def prompt_prefix(self) -> str:
        return self._prefix

    def chunk_open(self, t0: float) -> str:
        return format_timestamp(t0) if self.timestamps_in_prompt else ""

    def chunk_close(self) -> str:
        return ""

    def prompt_question(self, question: str, answer_prefix: str = "") -> str:
        return f"{self._between}{question}{self._suffix}{answer_prefix}"
