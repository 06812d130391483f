"""Supervised look-up attention for the bundled model: point the answer at the tokens that show
what the question names.

Trained on answers and dense per-token labels, ``synth-tiny`` perceives its world (a linear probe
reads a needle's shape from its visual token 85-90% of the time, its colour 99%) and answers the
questions that pool the whole clip (count 94%, anomaly 100%, topic 96% held out), yet every question
that must *find* one thing and read it stayed at chance: asked open-ended for the colour of the
diamond it named the right colour 17-23% of the time, with the clip's positions near or far apart.
The language model never formed the look-up (question word -> matching visual token -> its
colour). This loss teaches it directly, as supervised attention does for word alignment (Liu et
al., 2016, "Neural Machine Translation with Supervised Attention") and for visual question
answering (Qiao et al., 2018, "Exploring Human-Like Attention Supervision in Visual Question
Answering"): at one language-model layer, the attention of the position that predicts the answer,
taken over the clip's visual tokens, should put its mass on the *evidence*: the tokens whose
:mod:`~vidqa.synth.token_labels` match what the question names (its shapes, with the colour a count
question gives; its card words).

    loss = mean over rows r of  -log( mean over heads h of  sum over e in E_r of softmax_n(q_rh . k_hn / sqrt(Dh))[e] )

The mean over heads inside the log asks that *some* head of the layer find the evidence, not all of
them. Only training uses it; the shipped model is a stock Qwen2.5-VL.
"""

from __future__ import annotations

import re
import sys

import torch

from vidqa.synth import vocab
from vidqa.synth.token_labels import FIELDS

_SHAPE_ID = {s: i + 1 for i, s in enumerate(vocab.SHAPES)}
_COLOUR_ID = {c: i + 1 for i, c in enumerate(vocab.COLOURS)}
_WORD_ID = {w: i + 1 for i, w in enumerate(vocab.CARD_WORDS)}
_SHAPE, _COLOUR, _WORD = (FIELDS.index(f) for f in ("shape", "colour", "word"))
LOOKUP_KINDS = ("mc", "open")  # a hinted row gives the answer away; a description names nothing


def named_entities(question: str) -> tuple[list[int], int, list[int]]:
    """(shape label ids, colour label id or 0, card-word label ids) that ``question`` names.

    The colour counts only with a shape ("a red circle" in a count question): "What colour was the
    diamond" names no colour."""
    words = re.findall(r"[a-z]+", question.lower())
    shapes = [_SHAPE_ID[w] for w in words if w in _SHAPE_ID]
    colours = [_COLOUR_ID[w] for w in words if w in _COLOUR_ID]
    cards = [_WORD_ID[w] for w in words if w in _WORD_ID]
    return shapes, colours[0] if shapes and colours else 0, cards


def evidence_mask(question: str, labels: torch.Tensor) -> torch.Tensor:
    """bool ``[N]``: the visual tokens of one clip (labels int64 ``[N, 3]``, ``FIELDS`` order, the
    tokens' order) that show what ``question`` names. Anomaly grids (-100) never match."""
    shapes, colour, cards = named_entities(question)
    hit = torch.zeros(labels.shape[0], dtype=torch.bool, device=labels.device)
    for s in shapes:
        on = labels[:, _SHAPE] == s
        hit |= on & (labels[:, _COLOUR] == colour) if colour else on
    for w in cards:
        hit |= labels[:, _WORD] == w
    return hit


class LookupCapture:
    """Records what one language-model layer's self-attention was given on its latest call: the
    normalised hidden states ``[R, L, D]``, the rotary ``(cos, sin)`` ``[R, L, Dh]`` and the KV cache
    (whose keys then hold that call's keys after the earlier ones). Used as a context manager around
    :func:`vidqa.synth.train.batch_logits`, whose last language-model call is the question pass."""

    def __init__(self, language_model, layer: int):
        self.attn = language_model.layers[layer].self_attn
        self.layer = layer
        self.hidden = self.cos = self.sin = self.cache = None
        self._handle = None

    def _record(self, module, args, kwargs):
        self.hidden = kwargs["hidden_states"]
        self.cos, self.sin = kwargs["position_embeddings"]
        self.cache = kwargs.get("past_key_values")

    def __enter__(self) -> "LookupCapture":
        self._handle = self.attn.register_forward_pre_hook(self._record, with_kwargs=True)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()

    def queries(self, rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rotated queries ``[S, H, Dh]`` (float) at ``positions [S]`` of question rows ``rows [S]``:
        what the layer's attention itself computes there (tested against its output)."""
        attn = self.attn
        h = self.hidden[rows, positions]  # [S, D]
        q = attn.q_proj(h).float().view(len(rows), -1, 1, attn.head_dim)  # [S, H, 1, Dh]
        rotate = sys.modules[type(attn).__module__].apply_rotary_pos_emb
        cos = self.cos[rows, positions][:, None].float()  # [S, 1, Dh]
        sin = self.sin[rows, positions][:, None].float()
        q, _ = rotate(q, q, cos, sin)
        return q[:, :, 0]

    def keys(self) -> torch.Tensor:
        """All keys ``[R, Hkv, L_video + L_question, Dh]`` of the layer after the question pass."""
        return self.cache.layers[self.layer].keys


def answer_positions(labels: torch.Tensor) -> torch.Tensor:
    """int64 ``[R]``: the position whose logits predict each row's first answer token."""
    return ((labels != -100).int().argmax(dim=1) - 1).clamp(min=0)


def lookup_loss(capture: LookupCapture, batch: dict, labels: torch.Tensor, tasks: list,
                visual_mask: torch.Tensor) -> tuple[torch.Tensor | None, dict]:
    """The loss above over the rows of ``batch`` that name something the clip shows (None when no
    row does), and its log: ``evidence_attention``, the mean share of attention on the evidence,
    and ``evidence_share``, the share of visual tokens that are evidence (what uniform attention
    would give).

    ``labels`` ``[R, Lq]`` and ``tasks`` come from ``batch_logits``; ``visual_mask`` bool ``[Lv]``
    marks the visual slots of the video layout (``video_template``); ``batch["token_labels"]`` holds
    ``[B, T/2, 4, 8, 3]`` labels in the visual tokens' order."""
    token_labels = batch["token_labels"]
    token_labels = token_labels.reshape(token_labels.shape[0], -1, token_labels.shape[-1]).to(labels.device)
    clip_of_row = torch.repeat_interleave(torch.arange(len(batch["qa"])),
                                          torch.tensor([len(q) for q in batch["qa"]])).tolist()
    rows, masks = [], []
    for r, qa in enumerate(tasks):
        if qa.kind not in LOOKUP_KINDS:
            continue
        mask = evidence_mask(qa.question, token_labels[clip_of_row[r]])
        if bool(mask.any()):
            rows.append(r)
            masks.append(mask)
    if not rows:
        return None, {}
    rows_t = torch.tensor(rows, device=labels.device)
    evidence = torch.stack(masks)  # [S, N]
    q = capture.queries(rows_t, answer_positions(labels)[rows_t])  # [S, H, Dh]
    keys = capture.keys()[rows_t][:, :, :len(visual_mask)][:, :, visual_mask.to(labels.device)].float()
    keys = keys.repeat_interleave(q.shape[1] // keys.shape[1], dim=1)  # GQA: [S, H, N, Dh]
    attention = torch.softmax(torch.einsum("shd,shnd->shn", q, keys) * capture.attn.scaling, dim=-1)
    on_evidence = (attention * evidence[:, None]).sum(-1)  # [S, H]
    loss = -torch.log(on_evidence.mean(dim=1).clamp(min=1e-6)).mean()
    log = {"evidence_attention": on_evidence.detach().mean(), "evidence_share": evidence.float().mean(-1).mean()}
    return loss, log
