"""The shared half of every VLM adapter: the language model driven over an explicit KV cache.

An adapter owns exactly the steps long video needs and nothing else:

* ``encode(frames, times)`` -- the model's own processor + vision tower on one chunk of frames,
  returning :class:`~vidqa.tokens.VisualTokens` in the LLM's embedding space;
* positions -- each family assigns text and visual tokens their RoPE positions (``[P, L]`` with
  ``P = 3`` for Qwen's M-RoPE, ``P = 1`` for 1-D RoPE); a visual token's position is a function of
  its own metadata and the chunk's layout, so a token that survives reduction keeps the position
  it would have had in the full sequence;
* ``forward(embeds, positions, cache)`` -- the decoder stack over a ``DynamicCache`` that the memory
  module may have assembled, pruned or re-ordered; positions are always passed explicitly because
  transformers derives them from the cache length otherwise (see shared TRANSFORMERS_NOTES);
* ``generate`` -- greedy decoding that streams token ids.

Nothing here copies HF modeling code: the adapter calls the model's own modules (the decoder's
fused inference forward of ``llm_fused.py`` runs them on vidqa's kernels).
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from transformers import DynamicCache

from vidqa.tokens import VisualTokens
from vidqa.vlm.llm_fused import fuse_language_model


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device``; a host tensor bound for a GPU goes through pinned memory, asynchronously, so
    that the host does not wait for the GPU's queue (small positions and ids every forward)."""
    if device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


@dataclass(frozen=True)
class ChunkLayout:
    """Where a chunk's visual tokens sit before any reduction.

    ``t0``: time (s) of the chunk's first frame; ``grid_t0``: its first temporal grid index;
    ``extent``: number of positions the unreduced chunk occupies along the sequence (the next token
    starts at ``start + extent``); ``num_tokens``: visual tokens before reduction.
    """

    t0: float
    grid_t0: int
    extent: int
    num_tokens: int


class VLMAdapter(ABC):
    """Base class: a loaded HF VLM (``model``), its ``processor`` and tokenizer, and a ``name``."""

    family: str = ""
    position_dims: int = 1
    # Identifies the loaded weights beyond the name (``vidqa.vlm.loading.weights_fingerprint``, a hub
    # commit); part of the saved-memory key. Empty for models built in memory.
    weights_id: str = ""

    def __init__(self, model, processor, name: str):
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.name = name

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    @property
    def language_model(self):
        return self.model.model.language_model

    @property
    def text_config(self):
        return self.model.config.get_text_config()

    @property
    def num_layers(self) -> int:
        return self.text_config.num_hidden_layers

    def attention_modules(self) -> list[torch.nn.Module]:
        """The per-layer attention modules: the one hook point shared by all supported families."""
        return [layer.self_attn for layer in self.language_model.layers]

    @property
    def eos_token_ids(self) -> list[int]:
        ids = self.model.generation_config.eos_token_id
        if ids is None:
            ids = self.tokenizer.eos_token_id
        ids = ids if isinstance(ids, (list, tuple)) else [ids]
        return [int(i) for i in ids if i is not None]

    # ------------------------------------------------------------------ text
    def tokenize(self, text: str) -> torch.Tensor:
        """Token ids ``[L]`` of ``text`` without any special tokens added."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return torch.tensor(ids, dtype=torch.long)

    def embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Input embeddings ``[L, D]`` of token ids ``[L]``."""
        with torch.no_grad():
            return self.model.get_input_embeddings()(to_device(ids, self.device))

    def decode_ids(self, ids) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def frames_for_processor(self, frames: np.ndarray):
        """``frames`` uint8 ``[T, H, W, 3]`` as the processor should get them: on a CUDA model, already
        on the device, copied through pinned memory without waiting. A pageable copy (what the
        processor does with a numpy array) first waits for the GPU to drain, which would end the
        overlap of this chunk's preprocessing with the previous chunk's prefill."""
        if self.device.type != "cuda":
            return np.asarray(frames)
        return to_device(torch.from_numpy(np.ascontiguousarray(frames)), self.device)

    # ------------------------------------------------------------------ family-specific parts
    @abstractmethod
    def encode(self, frames: np.ndarray, times: np.ndarray, first_index: int = 0) -> VisualTokens:
        """Visual tokens of one chunk.

        ``frames``: uint8 ``[T, H, W, 3]``; ``times``: float ``[T]`` seconds; ``first_index``: the
        chunk's first frame's index in the whole sampled video (metadata ``frame`` counts from it).
        """

    @abstractmethod
    def chunk_layout(self, tokens: VisualTokens) -> ChunkLayout:
        """Layout of an *unreduced* chunk, computed once right after ``encode``."""

    @abstractmethod
    def visual_positions(self, tokens: VisualTokens, layout: ChunkLayout, start: int) -> torch.Tensor:
        """Positions ``[P, N]`` of (possibly reduced) chunk tokens placed at sequence position ``start``."""

    def text_positions(self, n: int, start: int) -> torch.Tensor:
        """Positions ``[P, n]`` of ``n`` text tokens starting at ``start`` (all axes equal for M-RoPE)."""
        return (torch.arange(n, dtype=torch.long) + start).expand(self.position_dims, n).clone()

    @abstractmethod
    def prompt_prefix(self) -> str:
        """Text before the video: system prompt and the opening of the user turn (the attention sinks)."""

    @abstractmethod
    def chunk_open(self, t0: float) -> str:
        """Text before a chunk's visual tokens, e.g. ``<01:23>`` and the vision-start marker."""

    @abstractmethod
    def chunk_close(self) -> str:
        """Text after a chunk's visual tokens (e.g. the vision-end marker)."""

    def chunk_close_embeds(self) -> torch.Tensor | None:
        """Extra learnt embeddings ``[k, D]`` appended after a chunk (LLaVA's ``image_newline``)."""
        return None

    @abstractmethod
    def prompt_question(self, question: str, answer_prefix: str = "") -> str:
        """Text after the video: the question, end of the user turn, the assistant turn (+ prefix)."""

    def prompt_conversation(self, history: list[tuple[str, str]], question: str, answer_prefix: str = "") -> str:
        """Text after the video for ``question`` asked after earlier ``(question, answer)`` turns about
        the same video (oldest first), in the model's own chat format; without history it is
        :meth:`prompt_question`. The turn separators come from the processor's chat template."""
        if not history:
            return self.prompt_question(question, answer_prefix)
        brk, close = self._turn_pieces()
        (q0, a0), rest = history[0], history[1:]
        text = self.prompt_question(q0) + a0
        for q, a in rest:
            text += brk + q + close + a
        return text + brk + question + close + answer_prefix

    def _turn_pieces(self) -> tuple[str, str]:
        """(text between an answer and the next question, text between a follow-up question and its
        answer), read off the chat template rendered around marker strings."""
        if getattr(self, "_turns", None) is None:
            a, q = "\u27e6A\u27e7", "\u27e6Q\u27e7"
            messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "x"}]},
                        {"role": "assistant", "content": [{"type": "text", "text": a}]},
                        {"role": "user", "content": [{"type": "text", "text": q}]}]
            rendered = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            after_answer = rendered.split(a, 1)[1]
            brk, close = after_answer.split(q, 1)
            self._turns = (brk, close)
        return self._turns

    # ------------------------------------------------------------------ LLM over an explicit cache
    def forward(self, embeds: torch.Tensor, positions: torch.Tensor, cache: DynamicCache | None,
                logits_for: str = "last") -> torch.Tensor:
        """Runs the decoder on ``embeds`` ``[L, D]`` at ``positions`` ``[P, L]``, appending to ``cache``.

        Returns logits ``[V]`` of the last token (``logits_for="last"``), ``[L, V]`` (``"all"``), or
        the final hidden states ``[L, D]`` (``"hidden"``).
        """
        from vidqa.memory.attention import bottom_right_attention

        if not getattr(self, "_llm_fused", False):  # once: the decoder on fused kernels (llm_fused.py)
            fuse_language_model(self.language_model)
            self._llm_fused = True
        pos = to_device(positions, self.device).unsqueeze(1)  # [P, 1, L]
        if self.position_dims == 1:
            pos = pos[0]  # [1, L] for 1-D RoPE models
        # Each layer attends with its own cache length and no mask tensor (memory/attention.py).
        with torch.no_grad(), bottom_right_attention(self):
            out = self.language_model(
                inputs_embeds=embeds.to(self.device, self.dtype).unsqueeze(0),
                position_ids=pos,
                past_key_values=cache,
                use_cache=cache is not None,
            )
            hidden = out.last_hidden_state[0]
            if logits_for == "hidden":
                return hidden
            if logits_for == "last":
                hidden = hidden[-1:]
            logits = self.model.lm_head(hidden).float()
        return logits[-1] if logits_for == "last" else logits

    def generate(self, first_logits: torch.Tensor, next_position: int, cache: DynamicCache,
                 max_new_tokens: int = 64, stop_ids: list[int] | None = None) -> Iterator[int]:
        """Greedy decoding from ``first_logits`` ``[V]``; yields token ids as they are produced.

        Each new token is placed at ``next_position`` + i on every RoPE axis (text semantics).
        """
        stop = set(self.eos_token_ids if stop_ids is None else stop_ids)
        logits = first_logits
        for i in range(max_new_tokens):
            token = int(torch.argmax(logits))
            if token in stop:
                return
            yield token
            if i == max_new_tokens - 1:
                return
            ids = torch.tensor([token], dtype=torch.long)
            logits = self.forward(self.embed_ids(ids), self.text_positions(1, next_position + i), cache)

    # ------------------------------------------------------------------ queries for scoring
    def rotary_fn(self) -> Callable:
        """The family's own ``apply_rotary_pos_emb(q, k, cos, sin)`` from its modeling module."""
        attn = self.attention_modules()[0]
        return sys.modules[type(attn).__module__].apply_rotary_pos_emb

    def rotate_keys(self, keys: torch.Tensor, delta: int) -> torch.Tensor:
        """Keys ``[..., H, n, Dh]`` already rotated at position ``p`` re-rotated to ``p + delta``.

        RoPE is a rotation per frequency band, so shifting every axis by ``delta`` is one more
        rotation; cos/sin come from the model's own ``rotary_emb`` (M-RoPE sections composed by it).
        """
        if delta == 0:
            return keys
        pos = torch.full((self.position_dims, 1, 1), int(delta), dtype=torch.long, device=keys.device)
        if self.position_dims == 1:
            pos = pos[0]
        probe = keys.new_zeros(1, 1, keys.shape[-1]).float()
        cos, sin = self.language_model.rotary_emb(probe, pos)
        flat = keys.reshape(-1, *keys.shape[-3:]).float()  # [B, H, n, Dh]
        rotated, _ = self.rotary_fn()(flat, flat, cos, sin)
        return rotated.reshape(keys.shape).to(keys.dtype)

    def capture_queries(self):
        """Context manager collecting each layer's rotated query states during forwards.

        Yields a list (one entry per layer) filled with ``[Hq, L, Dh]`` tensors of the last forward.
        Queries are recomputed from the layer's own projections in a pre-hook, so the attention
        kernel (SDPA/FlashAttention) is untouched and nothing is materialised.
        """
        return _QueryCapture(self)


class _QueryCapture:
    def __init__(self, adapter: VLMAdapter):
        self.adapter = adapter
        self.queries: list[torch.Tensor | None] = [None] * adapter.num_layers
        self.handles = []

    def __enter__(self) -> list:
        rotate = self.adapter.rotary_fn()

        def make_hook(i: int):
            def hook(module, args, kwargs):
                hidden = kwargs.get("hidden_states", args[0] if args else None)
                cos, sin = kwargs["position_embeddings"]
                b, length, _ = hidden.shape
                q = module.q_proj(hidden).view(b, length, -1, module.head_dim).transpose(1, 2)
                q, _ = rotate(q, q, cos, sin)
                self.queries[i] = q[0].detach()

            return hook

        for i, attn in enumerate(self.adapter.attention_modules()):
            self.handles.append(attn.register_forward_pre_hook(make_hook(i), with_kwargs=True))
        return self.queries

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()
