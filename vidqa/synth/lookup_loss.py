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
Answering"): at one language-model layer, the attention of the position that predicts the answer
should put its mass on the *evidence*: the visual tokens whose
:mod:`~vidqa.synth.token_labels` match what the question names (its shapes, with the colour a count
question gives; its card words).

    loss = mean over rows r of  -log( mean over heads h of  sum over e in E_r of softmax_n(q_rh . k_hn / sqrt(Dh))[e] )

with n over every key the answer position sees (the video's text and visual tokens and the question
so far). A first version normalised over the visual tokens only: the head then put 94% of its
*visual* attention on the needle and findNeedle stayed at chance, because the rest of the context
(attention sinks) can take most of the mass and what the head adds to the answer is mostly that.

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


def first_sightings(hit: torch.Tensor, cells: int) -> torch.Tensor:
    """``hit`` bool ``[N]`` (one clip's visual tokens, ``cells`` per 2-frame grid, grid-major) kept
    only in the grids where what it marks is on screen and was not in the grid before: the first
    sight of each appearance (the clip's first grid counts as one).

    Evidence for a count question. The look-up loss above puts the answer position's attention on
    every token of the named pair, so the mass it draws grows with how long each appearance lasts
    (3-8 s, 2-4 grids) as much as with how many there are; the bundled model (stage 11) counted
    1-2 appearances in a clip 93% of the time and 3-6 about half. One grid per appearance makes
    that mass proportional to the count, the quantity the answer is, in the spirit of counting by
    attending to one instance each (Trott et al., 2018, "Interpretable Counting for Visual Question
    Answering"). (Under the look-up loss it does not: that loss pushes the total mass towards 1 for
    any count, so the head's output, an average of alike values, no longer holds the count; stage 16
    trained 567 steps so and counted 3 or more at chance. :func:`width_loss` asks for a mass that
    grows with the count instead.)"""
    grids = hit.reshape(-1, cells)
    present = grids.any(dim=1)
    before = torch.cat([present.new_zeros(1), present[:-1]])
    return (grids & (present & ~before)[:, None]).reshape(-1)


COUNT_CAP = 9  # the largest count a synthetic question asks for (vidqa.synth.questions._count)
WIDTH_MASS = 1.0 / (COUNT_CAP + 1)  # the counting head's mass per appearance


def appearance_ids(first: torch.Tensor, cells: int) -> torch.Tensor:
    """int64 ``[N]`` from :func:`first_sightings`' mask ``[N]``: 0 off it, ``j`` (1, 2, ...) on the
    tokens of the ``j``-th appearance's first grid, in time order."""
    grids = first.reshape(-1, cells)
    starts = grids.any(dim=1).long()
    return (grids.long() * (torch.cumsum(starts, 0) * starts)[:, None]).reshape(-1)


def width_loss(attention: torch.Tensor, appearance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(KL loss ``[S]``, ``|mass on the appearances - k * WIDTH_MASS|`` ``[S]``) of one head's answer-position
    attention ``[S, L]`` against a count target: :data:`WIDTH_MASS` on each appearance's first grid
    (``appearance`` int64 ``[S, L]``, :func:`appearance_ids` laid over the keys, 0 elsewhere) and the
    rest, ``1 - k * WIDTH_MASS``, anywhere else (attention sinks, text, other tokens).

    Softmax attention averages its values, so a head that puts all its mass on k alike tokens gives
    the same output for every k. Counting needs the mass on the counted tokens to grow with k, with
    the remainder on a default: the selector width of RASP (Weiss et al., 2021, "Thinking Like
    Transformers", where a head attends to every selected token and to the first token, and reads
    the count from the first token's share). Here the target says so directly; the later layers and
    the answer loss learn to read the count from the head's output."""
    slots = COUNT_CAP + 1
    appearance = appearance.clamp(max=COUNT_CAP)
    mass = torch.zeros(attention.shape[0], slots, dtype=attention.dtype, device=attention.device)
    mass = mass.scatter_add(1, appearance, attention)  # [S, slots]; slot 0: the rest
    k = appearance.amax(dim=1).to(mass.dtype)  # [S]: ids run 1..k
    target = (torch.arange(slots, device=mass.device)[None] <= k[:, None]).to(mass.dtype) * WIDTH_MASS
    target[:, 0] = 1 - k * WIDTH_MASS
    # log(mass + eps), not a clamp: a head that has left an appearance entirely still gets a gradient back
    kl = torch.where(target > 0, target * (torch.log(target.clamp(min=1e-12)) - torch.log(mass + 1e-9)),
                     torch.zeros_like(mass)).sum(1)
    return kl, (mass[:, 1:].sum(1) - k * WIDTH_MASS).abs()


class LookupCapture:
    """Records what one language-model layer's self-attention was given on its latest call: the
    normalised hidden states ``[R, L, D]``, the rotary ``(cos, sin)`` ``[R, L, Dh]`` and the KV cache
    (whose keys then hold that call's keys after the earlier ones). Used as a context manager around
    :func:`vidqa.synth.train.batch_logits`, whose last language-model call is the question pass."""

    def __init__(self, language_model, layer: int):
        self.attn = language_model.layers[layer].self_attn
        self.block = language_model.layers[layer]
        self.norm = language_model.norm
        self.layer = layer
        self.hidden = self.cos = self.sin = self.cache = self.output = None
        self._handles = []

    def _record(self, module, args, kwargs):
        self.hidden = kwargs["hidden_states"]
        self.cos, self.sin = kwargs["position_embeddings"]
        self.cache = kwargs.get("past_key_values")

    def _record_output(self, module, args, output):
        self.output = output[0] if isinstance(output, tuple) else output  # [R, L, D]

    def __enter__(self) -> "LookupCapture":
        self._handles = [self.attn.register_forward_pre_hook(self._record, with_kwargs=True),
                         self.block.register_forward_hook(self._record_output)]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()

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
                visual_mask: torch.Tensor, count_first: bool = False,
                count_width: bool = False) -> tuple[torch.Tensor | None, dict]:
    """The loss above over the rows of ``batch`` that name something the clip shows (None when no
    row does), and its log: ``evidence_attention``, the mean share of attention on the evidence,
    and ``evidence_share``, the share of visual tokens that are evidence.

    ``labels`` ``[R, Lq]`` and ``tasks`` come from ``batch_logits``; ``visual_mask`` bool ``[Lv]``
    marks the visual slots of the video layout (``video_template``); ``batch["token_labels"]`` holds
    ``[B, T/2, 4, 8, 3]`` labels in the visual tokens' order. ``count_first``: a count question's
    evidence is the first sight of each appearance (:func:`first_sightings`), not all of it.
    ``count_width``: a count row's loss is instead :func:`width_loss` on the layer's first head (the
    counting head; the other heads are left free), over its first sightings; the log then also
    has ``count_width_error``, the mean ``|mass - k * WIDTH_MASS|`` of those rows."""
    token_labels = batch["token_labels"]
    cells = token_labels.shape[2] * token_labels.shape[3]
    token_labels = token_labels.reshape(token_labels.shape[0], -1, token_labels.shape[-1]).to(labels.device)
    clip_of_row = torch.repeat_interleave(torch.arange(len(batch["qa"])),
                                          torch.tensor([len(q) for q in batch["qa"]])).tolist()
    rows, masks, width_rows = [], [], []
    for r, qa in enumerate(tasks):
        if qa.kind not in LOOKUP_KINDS:
            continue
        mask = evidence_mask(qa.question, token_labels[clip_of_row[r]])
        if (count_first or count_width) and qa.task == "count":
            mask = first_sightings(mask, cells)
            if count_width:
                if bool(mask.any()):
                    width_rows.append((r, appearance_ids(mask, cells)))
                continue
        if bool(mask.any()):
            rows.append(r)
            masks.append(mask)
    if not rows and not width_rows:
        return None, {}
    lv = len(visual_mask)
    visual_slots = torch.nonzero(visual_mask.to(labels.device)).squeeze(1)
    parts, log = [], {}
    if rows:
        rows_t = torch.tensor(rows, device=labels.device)
        evidence = torch.zeros(len(rows), lv + labels.shape[1], dtype=torch.bool, device=labels.device)
        evidence[:, visual_slots] = torch.stack(masks)
        loss, on_evidence = attention_loss(capture, rows_t, answer_positions(labels)[rows_t], evidence, lv)
        parts.append(loss * len(rows))
        share = evidence.sum(-1) / visual_mask.sum()
        log = {"evidence_attention": on_evidence.detach().mean(), "evidence_share": share.float().mean()}
    if width_rows:
        rows_t = torch.tensor([r for r, _ in width_rows], device=labels.device)
        appearance = torch.zeros(len(width_rows), lv + labels.shape[1], dtype=torch.long, device=labels.device)
        appearance[:, visual_slots] = torch.stack([ids for _, ids in width_rows])
        attention = answer_attention(capture, rows_t, answer_positions(labels)[rows_t], lv)[:, 0]  # [S, L]
        kl, error = width_loss(attention, appearance)
        parts.append(kl.sum())
        log["count_width_error"] = error.detach().mean()
    return sum(parts) / (len(rows) + len(width_rows)), log


def answer_attention(capture: LookupCapture, rows: torch.Tensor, positions: torch.Tensor,
                     video_length: int) -> torch.Tensor:
    """The layer's attention ``[S, H, L_video + L_question]`` (float) of question rows ``rows [S]``
    at ``positions [S]`` over every key the position sees, recomputed from the captured queries
    and keys so that losses on it reach the layer's weights."""
    q = capture.queries(rows, positions)  # [S, H, Dh]
    keys = capture.keys()[rows].float()  # [S, Hkv, L, Dh]
    keys = keys.repeat_interleave(q.shape[1] // keys.shape[1], dim=1)  # GQA: [S, H, L, Dh]
    seen = torch.arange(keys.shape[2], device=keys.device)[None] <= video_length + positions[:, None]  # [S, L]
    scores = torch.einsum("shd,shld->shl", q, keys) * capture.attn.scaling
    return torch.softmax(scores.masked_fill(~seen[:, None], float("-inf")), dim=-1)


def attention_loss(capture: LookupCapture, rows: torch.Tensor, positions: torch.Tensor, evidence: torch.Tensor,
                   video_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(the loss above, the attention on the evidence per row and head ``[S, H]``) of question rows
    ``rows [S]`` at ``positions [S]``; ``evidence`` bool ``[S, L_video + L_question]`` over the
    layer's keys.

    The softmax runs over every key the position sees -- the video's text and visual tokens and the
    question so far -- so that the evidence must win against attention sinks too."""
    attention = answer_attention(capture, rows, positions, video_length)  # [S, H, L]
    on_evidence = (attention * evidence[:, None]).sum(-1)  # [S, H]
    return -torch.log(on_evidence.mean(dim=1).clamp(min=1e-6)).mean(), on_evidence


def option_spans(ids: torch.Tensor, letters: dict[str, int], open_id: int, close_id: int, end_id: int) -> dict:
    """{letter: (first, stop)} token positions of each option's letter and text in one question
    row's ids ``[Lq]`` (``(a) red`` -> the ``a`` and ``red`` tokens), as ``format_mc_question`` lays
    them out; the answer prefix's lone ``(`` is not an option."""
    ids = ids.tolist()
    starts = {}
    for i in range(len(ids) - 2):
        if ids[i] == open_id and ids[i + 2] == close_id:
            for name, lid in letters.items():
                if ids[i + 1] == lid and name not in starts:
                    starts[name] = i + 1
    order = sorted(starts.items(), key=lambda kv: kv[1])
    spans = {}
    for k, (name, first) in enumerate(order):
        stop = order[k + 1][1] - 1 if k + 1 < len(order) else (ids.index(end_id, first) if end_id in ids[first:] else len(ids))
        spans[name] = (first, stop)
    return spans


def option_loss(capture: LookupCapture, adapter, ids: torch.Tensor, labels: torch.Tensor, tasks: list,
                video_length: int) -> tuple[torch.Tensor | None, dict]:
    """Supervised attention for the letter: at ``capture``'s layer (the one above the look-up), the
    answer position of every lettered row (``mc`` and ``hint``) should attend to the correct option's
    letter and text. With the look-up learnt, the open answer named the needle's colour 71% of the
    time while the letter stayed at 37%: the model knew the colour but not which option said it.
    ``ids`` ``[R, Lq]``: the question rows (``train.question_rows``). None without lettered rows; the
    log holds ``option_attention``, the mean attention on it."""
    rows = [r for r, qa in enumerate(tasks) if qa.kind in ("mc", "hint") and qa.letter]
    if not rows:
        return None, {}
    tok = adapter.tokenizer
    letters = {c: tok.convert_tokens_to_ids(c) for c in "abcd"}
    marks = [tok.convert_tokens_to_ids(t) for t in ("(", ")", "only")]
    evidence = torch.zeros(len(rows), video_length + labels.shape[1], dtype=torch.bool)
    keep = []
    for k, r in enumerate(rows):
        span = option_spans(ids[r], letters, *marks).get(tasks[r].letter.lower())
        if span is not None:
            evidence[k, video_length + span[0]:video_length + span[1]] = True
            keep.append(k)
    if not keep:
        return None, {}
    rows_t = torch.tensor([rows[k] for k in keep], device=labels.device)
    loss, on = attention_loss(capture, rows_t, answer_positions(labels)[rows_t], evidence[keep].to(labels.device),
                              video_length)
    return loss, {"option_attention": on.detach().mean()}


def readout_loss(capture: LookupCapture, lm_head, labels: torch.Tensor, tasks: list) -> torch.Tensor | None:
    """Cross-entropy of each open-ended row's first answer token read from the look-up layer's
    output at the answer position, through the model's own final norm and (tied) output head --
    deep supervision (Lee et al., 2015, "Deeply-Supervised Nets") read as a logit lens.

    With the look-up attention learnt (94% of the answer position's attention on the needle) the
    answers stayed at chance: what the head brought back was not turned into the answer. This
    asks the layer that looks up to carry the answer word itself (the needle's colour, the scene),
    so that the layers above only keep it or match it to an option's letter. None without open rows.
    """
    rows = [r for r, qa in enumerate(tasks) if qa.kind == "open"]
    if not rows:
        return None
    rows_t = torch.tensor(rows, device=labels.device)
    positions = answer_positions(labels)[rows_t]
    logits = lm_head(capture.norm(capture.output[rows_t, positions])).float()  # [S, V]
    return torch.nn.functional.cross_entropy(logits, labels[rows_t, positions + 1])
