"""Frame relevance scorers for the query-aware budget (:mod:`vidqa.tokenreduce.budget`).

A :class:`FrameScorer` rates how relevant each group of tokens (a temporal grid or a segment) is to
the question: ``scores(tokens, groups, context) -> [G]`` float, higher is more relevant, where
``groups`` is a list of ``G`` index tensors into ``tokens``.

* :class:`EmbeddingFrameScorer` -- the VLM's own space: cosine between the mean question embedding
  (the LLM's input embeddings of the question tokens, ``context["question_embeds"] [Lq, D]``) and
  each group's mean visual token.
* :class:`ClipFrameScorer` -- open_clip text-image similarity (Radford et al. 2021; as the relevance
  scorer of QuoTA, Luo et al. 2025, and of frame selection in BOLT, Liu et al. 2025) between the
  question (``context["question"]``) and the group's frames (``context["frames"]``: a mapping or
  sequence indexed by frame index, or a callable ``frame_index -> uint8 [H, W, 3]``). A group scores
  its best frame (at most ``frames_per_group`` frames, spread evenly, are looked at).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from vidqa.errors import ConfigError
from vidqa.tokens import VisualTokens

log = logging.getLogger(__name__)


class FrameScorer:
    """Interface: ``scores(tokens, groups, context) -> [G]`` relevance of each group."""

    def scores(self, tokens: VisualTokens, groups: list[torch.Tensor], context: dict) -> torch.Tensor:
        raise NotImplementedError


def question_vector(context: dict, device) -> torch.Tensor | None:
    """Unit mean of ``context["question_embeds"] [Lq, D]`` as float32 ``[D]``, or ``None``."""
    q = context.get("question_embeds")
    if q is None:
        return None
    if q.dim() != 2 or q.shape[0] == 0:
        raise ValueError(f"question_embeds must be [Lq, D] with Lq > 0, got {tuple(q.shape)}")
    return torch.nn.functional.normalize(q.float().mean(0), dim=0).to(device)


class EmbeddingFrameScorer(FrameScorer):
    def scores(self, tokens, groups, context):
        q = question_vector(context, tokens.embeds.device)
        if q is None:
            raise ConfigError("the embedding scorer needs the question's embeddings in context['question_embeds']")
        if q.shape[0] != tokens.dim:
            raise ValueError(f"question_embeds have dim {q.shape[0]}, visual tokens {tokens.dim}")
        means = torch.stack([tokens.embeds[g.to(tokens.embeds.device)].float().mean(0) for g in groups])
        return torch.nn.functional.normalize(means, dim=-1) @ q


class ClipFrameScorer(FrameScorer):
    """open_clip text-frame similarity.

    ``model_name``: an open_clip architecture name, or ``local-dir:/path`` (a folder with
    ``open_clip_config.json`` and weights). ``pretrained``: a local checkpoint file -- weights are never
    downloaded; ``None`` leaves random weights (only meaningful in tests). ``config``: a JSON file with
    an architecture of one's own (``embed_dim``, ``vision_cfg``, ``text_cfg``), registered with open_clip
    under the file's stem, which is then the default ``model_name``. A ready ``model`` (with
    ``preprocess`` and ``tokenizer``) may be passed instead.
    """

    def __init__(self, model_name: str | None = None, pretrained: str | None = None, config: str | None = None,
                 device: str | torch.device = "cpu", frames_per_group: int = 4, batch_size: int = 32,
                 model=None, preprocess=None, tokenizer=None):
        import open_clip

        if frames_per_group < 1 or batch_size < 1:
            raise ConfigError("frames_per_group and batch_size must be >= 1")
        if model is None:
            if config:
                path = Path(config)
                if not path.is_file() or path.suffix != ".json":
                    raise ConfigError(f"open_clip config {config!r} is not a .json file")
                open_clip.add_model_config(path)
                model_name = model_name or path.stem
            model_name = model_name or "ViT-B-32"
            if not model_name.startswith("local-dir:") and open_clip.get_model_config(model_name) is None:
                raise ConfigError(f"unknown open_clip model {model_name!r}")
            if pretrained and not Path(pretrained).is_file():
                raise ConfigError(f"open_clip checkpoint {pretrained!r} is not a local file (weights are never downloaded)")
            if not pretrained and not model_name.startswith("local-dir:"):
                log.warning("open_clip model %s has random weights: its relevance scores mean nothing", model_name)
            model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=pretrained or None,
                                                                         device=device)
            tokenizer = open_clip.get_tokenizer(model_name)
        self.model, self.preprocess, self.tokenizer = model.eval(), preprocess, tokenizer
        self.device = torch.device(device)
        self.frames_per_group, self.batch_size = frames_per_group, batch_size
        self._cache_key, self._features = None, {}  # frame index -> unit image feature, per video

    def _frame(self, frames, index: int) -> np.ndarray:
        try:
            frame = frames(index) if callable(frames) else frames[index]
        except (KeyError, IndexError) as err:
            raise ConfigError(f"frame {index} is missing from context['frames']") from err
        return np.asarray(frame.cpu() if isinstance(frame, torch.Tensor) else frame, dtype=np.uint8)

    @torch.no_grad()
    def image_features(self, frames, indices: list[int], video=None) -> torch.Tensor:
        """Unit image features ``[len(indices), E]``, cached per ``video`` key across questions."""
        from PIL import Image

        if video is None or video != self._cache_key:
            self._cache_key, self._features = video, {}
        todo = [i for i in dict.fromkeys(indices) if i not in self._features]
        for start in range(0, len(todo), self.batch_size):
            part = todo[start:start + self.batch_size]
            batch = torch.stack([self.preprocess(Image.fromarray(self._frame(frames, i))) for i in part])
            feats = torch.nn.functional.normalize(self.model.encode_image(batch.to(self.device)).float(), dim=-1)
            self._features.update(zip(part, feats.cpu()))
        return torch.stack([self._features[i] for i in indices])

    @torch.no_grad()
    def scores(self, tokens, groups, context):
        frames, question = context.get("frames"), context.get("question")
        if frames is None or not question:
            raise ConfigError("the clip scorer needs context['frames'] and context['question']")
        if not isinstance(frames, Mapping) and not callable(frames) and not hasattr(frames, "__getitem__"):
            raise ConfigError("context['frames'] must be a mapping, a sequence or a callable of frame index")
        picks = []
        for g in groups:
            fids = torch.unique(tokens.frame[g.to(tokens.frame.device)]).tolist()
            step = max(1, -(-len(fids) // self.frames_per_group))
            picks.append(fids[::step])
        flat = [i for p in picks for i in p]
        img = self.image_features(frames, flat, context.get("video"))
        txt = self.model.encode_text(self.tokenizer([question]).to(self.device)).float()
        sim = img @ torch.nn.functional.normalize(txt, dim=-1)[0].cpu()
        out, start = [], 0
        for p in picks:
            out.append(sim[start:start + len(p)].max())
            start += len(p)
        return torch.stack(out)
