"""Training the bundled ``synth-tiny`` model from scratch on short synthetic clips.

    python -m vidqa.synth.train --out ckpt --minutes 8 [--steps N] [--resume ckpt] \\
        [--save-pretrained assets/models/synth-tiny]

Examples come from :mod:`vidqa.synth.train_data` (clips of 1-6 chunks with every question they
support, rendered by CPU workers). On the device a step then

1. resizes the 224x126 renders to the model's 224x112 (bicubic with antialiasing, as the processor
   resizes a decoded 448x252 video), with mild blur and noise against the codec's softening;
2. patchifies them exactly as the processor does (:func:`patchify`, tested against it) and runs the
   vision tower with packed window attention (:mod:`vidqa.vlm.vision_attention`);
3. lays each clip out exactly as vidqa's ingest does -- prompt prefix, then per 16-frame chunk its
   ``<mm:ss>`` timestamp and visual tokens at the adapter's own M-RoPE positions -- and prefills the
   video **once per clip**, keeping its KV cache; with ``--prefill streaming`` (the default) each
   chunk attends to what ingest shows it -- the prefix, pooled entries of chunks that left the
   window, the last ``--window-chunks`` chunks -- not to the whole clip
   (:mod:`vidqa.synth.streaming_prefill`, tested equal to ingest);
4. answers every question of the clip as a separate row over that cache (as ``VideoQA.ask`` answers
   each question over the same memory), with the loss on the answer tokens, averaged per row so a
   long description weighs as much as one letter;
5. adds ``--token-loss`` times a per-visual-token loss: a linear probe (:class:`TokenProbe`) reads
   each token's shape, colour and card word, labelled by the renderer
   (:mod:`vidqa.synth.token_labels`). Answers alone taught colours but not shapes; the probe is
   saved beside the checkpoint for resuming and is not part of the shipped model;
6. adds ``--lookup-loss`` times a supervised-attention loss (:mod:`vidqa.synth.lookup_loss`): at
   language-model layer ``--lookup-layer``, the answer position of each question that names a shape
   or card word should attend to the visual tokens showing it. With answers and the probe alone the
   model perceived needles but never looked them up (findNeedle at chance); ``--readout-loss`` adds
   the open answers read out at that layer (:func:`~vidqa.synth.lookup_loss.readout_loss`) and
   ``--option-loss`` the attention of the layer above to the correct option's letter and text
   (:func:`~vidqa.synth.lookup_loss.option_loss`).

``--text-warmup-steps`` first trains the language model alone on hinted multiple-choice rows
(:class:`~vidqa.synth.train_data.HintedRows`, no video): the letter lookup, which video runs of
~1,000 steps did not pick up, is learnt there at the cost of text only (on an H200, hinted letter
accuracy 25% -> 98% in ~1,700 steps of 256 rows, two minutes); the video steps then learn to answer
by letter from what is seen.

The schedule is step-based (warm-up, cosine to 10%) and reproducible from ``--seed`` for a given
``--steps`` and worker count; with ``--minutes`` alone the step count is set from the speed of the
first steps. Weights are checkpointed every few minutes (bf16 safetensors), so a run stopped at its
time limit keeps its progress; ``--resume`` continues from one (the optimiser restarts, with a
short warm-up).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from contextlib import nullcontext
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F

from vidqa.config import MemoryConfig
from vidqa.synth.lookup_loss import LookupCapture, answer_positions, lookup_loss, option_loss, readout_loss
from vidqa.synth.questions import TASKS
from vidqa.synth.streaming_prefill import streaming_prefill
from vidqa.synth.token_labels import CLASSES, FIELDS, IGNORE
from vidqa.synth.train_data import CHUNK, COUNT_SHARE, FRAMES_PER_BATCH, MAX_CHUNKS, ClipBatches, pick_questions
from vidqa.vlm.vision_attention import packed_vision_attention

HEIGHT, WIDTH = 112, 224  # what the processor makes of the world's 448x252 (16:9) videos
CHECKPOINT_EVERY_S = 120


def blur_clips(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable blur of every plane of clip ``i`` of ``x [B, P, H, W]`` with the 5 taps ``kernel[i]``
    (``[B, 5]``), edges replicated: one grouped convolution over all B*P planes, not one per clip."""
    b, planes = x.shape[:2]
    k = kernel.repeat_interleave(planes, dim=0)  # [B*P, 5]
    y = x.reshape(1, b * planes, *x.shape[2:])
    y = F.conv2d(F.pad(y, (2, 2, 0, 0), mode="replicate"), k.view(-1, 1, 1, 5), groups=b * planes)
    y = F.conv2d(F.pad(y, (0, 0, 2, 2), mode="replicate"), k.view(-1, 1, 5, 1), groups=b * planes)
    return y.reshape(x.shape)


def to_model_frames(frames: torch.Tensor, augment: bool = False, generator: torch.Generator | None = None):
    """uint8 renders ``[B, T, 126, 224, 3]`` -> float frames ``[B, T, 112, 224, 3]`` in [0, 255] (rounded).

    ``augment``: per clip, a Gaussian blur of sigma 0-0.8 px and grey noise of std 0-3 levels.
    """
    b, t = frames.shape[:2]
    x = frames.permute(0, 1, 4, 2, 3).reshape(b * t, 3, *frames.shape[2:4]).float()
    x = F.interpolate(x, size=(HEIGHT, WIDTH), mode="bicubic", antialias=True, align_corners=False)
    if augment:
        sigma = torch.rand(b, generator=generator, device="cpu") * 0.8
        taps = torch.arange(-2, 3, dtype=torch.float32)
        kernel = torch.exp(-taps[None] ** 2 / (2 * sigma[:, None].clamp(min=1e-3) ** 2))
        kernel = (kernel / kernel.sum(dim=1, keepdim=True)).to(x.device)  # [B, 5]
        x = blur_clips(x.reshape(b, t * 3, HEIGHT, WIDTH), kernel)
        std = (torch.rand(b, 1, 1, 1, generator=generator) * 3).to(x.device)
        noise = torch.randn(b, 1, HEIGHT, WIDTH, generator=generator).to(x.device) * std  # grey: same in every channel
        x = (x + noise).reshape(b * t, 3, HEIGHT, WIDTH)
    x = x.clamp(0, 255).round()
    return x.reshape(b, t, 3, HEIGHT, WIDTH).permute(0, 1, 3, 4, 2)


def patchify(frames: torch.Tensor, processor) -> torch.Tensor:
    """What the Qwen2-VL video processor makes of frames already at a 28-multiple size, on any device.

    ``frames`` ``[B, T, H, W, 3]`` in [0, 255] (T even) -> ``[B * (T/2) * (H/14) * (W/14), 3 * 2 * 14 * 14]``:
    rescale, normalise with the processor's mean/std, then the processor's patch order (temporal
    grid, merged row, merged column, row in merge, column in merge; channels, time, pixel row, pixel
    column). Tested against the processor itself.
    """
    vp = processor.video_processor
    mean = torch.tensor(vp.image_mean, device=frames.device).view(1, 1, 3, 1, 1)
    std = torch.tensor(vp.image_std, device=frames.device).view(1, 1, 3, 1, 1)
    x = frames.permute(0, 1, 4, 2, 3).float() * vp.rescale_factor
    x = (x - mean) / std
    b, t, c, h, w = x.shape
    p, m, tp = vp.patch_size, vp.merge_size, vp.temporal_patch_size
    x = x.view(b, t // tp, tp, c, h // p // m, m, p, w // p // m, m, p)
    x = x.permute(0, 1, 4, 7, 5, 8, 3, 2, 6, 9)
    return x.reshape(b * (t // tp) * (h // p) * (w // p), c * tp * p * p)


def video_template(adapter, batch: dict, patch_hw: tuple[int, int]):
    """The text-and-visual layout shared by the clips of ``batch``, as ingest builds it
    (``patch_hw``: the frames' size in patches, before the 2x2 merge).

    Returns (ids ``[Lv]`` with text token ids and 0 at visual slots, visual mask ``[Lv]``, positions
    ``[3, Lv]``, next free position, the chunk of each token int64 ``[Lv]``: -1 for the prompt prefix).
    """
    ids, visual, positions, chunk_of, pos = [], [], [], [], 0
    times = batch["times"]

    def text(t: str, chunk: int):
        nonlocal pos
        tok = adapter.tokenize(t)
        ids.append(tok)
        visual.append(torch.zeros(len(tok), dtype=torch.bool))
        positions.append(adapter.text_positions(len(tok), pos))
        chunk_of.append(torch.full((len(tok),), chunk, dtype=torch.long))
        pos += len(tok)

    text(adapter.prompt_prefix(), -1)
    grids = CHUNK // adapter.temporal_patch
    for c in range(batch["chunks"]):
        pos += batch["gap"] if c == 0 else batch["chunk_gaps"][c]
        f0 = c * CHUNK
        tokens = grids * (patch_hw[0] // adapter.merge) * (patch_hw[1] // adapter.merge)
        meta = adapter.token_metadata(torch.zeros(tokens, 1), (grids, *patch_hw), times[f0:f0 + CHUNK], f0)
        layout = adapter.chunk_layout(meta)
        text(adapter.chunk_open(layout.t0), c)
        ids.append(torch.zeros(len(meta), dtype=torch.long))
        visual.append(torch.ones(len(meta), dtype=torch.bool))
        positions.append(adapter.visual_positions(meta, layout, pos))
        chunk_of.append(torch.full((len(meta),), c, dtype=torch.long))
        pos += layout.extent
        text(adapter.chunk_close(), c)
    return torch.cat(ids), torch.cat(visual), torch.cat(positions, dim=1), pos, torch.cat(chunk_of)


_ID_CACHE: dict[str, list[int]] = {}


def _ids(adapter, text: str) -> list[int]:
    """Token ids of ``text``, memoised: prompts and answers repeat across clips and steps."""
    if text not in _ID_CACHE:
        if len(_ID_CACHE) > 200_000:
            _ID_CACHE.clear()
        _ID_CACHE[text] = adapter.tokenize(text).tolist()
    return _ID_CACHE[text]


def question_rows(adapter, batch: dict, start: int):
    """Every question of every clip as a row: ids ``[R, Lq]`` (right-padded), labels ``[R, Lq]``
    (-100 but on the answer), positions ``[3, R, Lq]``, the clip of each row ``[R]``, the rows' QAs."""
    end = adapter.tokenizer.convert_tokens_to_ids("<|im_end|>")
    rows, sups, clip_of_row, tasks = [], [], [], []
    for i, questions in enumerate(batch["qa"]):
        for qa in questions:
            q = _ids(adapter, adapter.prompt_question(qa.prompt, qa.prefix))
            a = _ids(adapter, qa.target) + [end]
            rows.append(q + a)
            sups.append([False] * len(q) + [True] * len(a))
            clip_of_row.append(i)
            tasks.append(qa)
    length = max(len(r) for r in rows)
    # Padded in Python and converted once: thousands of tiny tensor ops per step otherwise.
    ids = torch.tensor([r + [0] * (length - len(r)) for r in rows], dtype=torch.long)
    labels = torch.tensor([[t if s else -100 for t, s in zip(r, m)] + [-100] * (length - len(r))
                           for r, m in zip(rows, sups)], dtype=torch.long)
    start = start + batch["question_gap"]
    positions = (torch.arange(length) + start).expand(3, len(rows), length).clone()
    return ids, labels, positions, torch.tensor(clip_of_row), tasks


class BatchParts(NamedTuple):
    """What :func:`batch_logits` built on the way, kept for the auxiliary losses."""

    visual: torch.Tensor  # [B, Nv, D] the clips' visual tokens
    is_visual: torch.Tensor  # bool [Lv] which positions of the video template are visual
    question_ids: torch.Tensor  # [R, Lq] the question rows' ids (right-padded)


def batch_logits(adapter, batch: dict, device, augment: bool = False, generator=None, return_visual: bool = False,
                 streaming: MemoryConfig | None = None):
    """Logits ``[R, Lq, V]`` of the question rows of ``batch`` and their labels ``[R, Lq]`` and tasks;
    with ``return_visual`` also :class:`BatchParts`: the clips' visual tokens ``[B, T/2 * 4 * 8, D]``
    (grid, row, column order, as :func:`~vidqa.synth.token_labels.token_labels` lays its labels
    out), which of the video template's ``Lv`` positions are visual ``[Lv]`` and the rows' ids
    ``[R, Lq]``, for the losses that need them. ``streaming``: the
    video is prefilled as ingest with that configuration would (:mod:`vidqa.synth.streaming_prefill`),
    else with full causal attention."""
    model = adapter.model
    frames = to_model_frames(batch["frames"].to(device, non_blocking=True), augment, generator)
    b, n_frames = frames.shape[:2]
    vp = adapter.processor.video_processor
    grid = torch.tensor([n_frames // vp.temporal_patch_size, HEIGHT // vp.patch_size, WIDTH // vp.patch_size])
    # All clips as one grid of b*T/2 temporal slices: Qwen2.5-VL's windows and full attention never
    # cross a temporal slice and its rotary positions depend only on (h, w), so this equals one grid
    # per clip (tested) with one pass of the tower's per-grid Python set-up instead of b.
    stacked = torch.tensor([[b * int(grid[0]), int(grid[1]), int(grid[2])]], device=device)
    with packed_vision_attention(model.model.visual):
        vis = model.model.visual(patchify(frames, adapter.processor).to(model.dtype), grid_thw=stacked)
    vis = vis.pooler_output if hasattr(vis, "pooler_output") else vis
    ids, is_visual, positions, next_pos, chunk_of = video_template(adapter, batch, (int(grid[1]), int(grid[2])))
    embed = model.get_input_embeddings()
    video = embed(ids.to(device)).unsqueeze(0).repeat(b, 1, 1)
    video[:, is_visual.to(device)] = vis.reshape(b, -1, vis.shape[-1]).to(video.dtype)
    lm = model.model.language_model
    prefill = streaming_prefill(adapter, chunk_of, is_visual, streaming) if streaming is not None else nullcontext()
    with prefill:
        out = lm(inputs_embeds=video, position_ids=positions.unsqueeze(1).expand(3, b, -1).to(device), use_cache=True)
    q_ids, labels, q_pos, clip_of_row, tasks = question_rows(adapter, batch, next_pos)
    cache = out.past_key_values
    index = clip_of_row.to(device)
    for layer in cache.layers:  # each row answers over its own clip's video KV
        layer.keys, layer.values = layer.keys.index_select(0, index), layer.values.index_select(0, index)
    hidden = lm(inputs_embeds=embed(q_ids.to(device)), position_ids=q_pos.to(device), past_key_values=cache,
                use_cache=True).last_hidden_state
    logits = model.lm_head(hidden).float()
    if return_visual:
        return logits, labels.to(device), tasks, BatchParts(vis.reshape(b, -1, vis.shape[-1]), is_visual, q_ids)
    return logits, labels.to(device), tasks


def text_logits(adapter, rows: list, device):
    """Logits ``[R, Lq, V]``, labels and rows of question rows asked with no video (the warm-up)."""
    model = adapter.model
    ids, labels, positions, _, rows = question_rows(adapter, {"qa": [rows], "question_gap": 0}, 0)
    hidden = model.model.language_model(inputs_embeds=model.get_input_embeddings()(ids.to(device)),
                                        position_ids=positions.to(device)).last_hidden_state
    return model.lm_head(hidden).float(), labels.to(device), rows


def row_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the answer tokens, averaged within each row, then over rows."""
    tok = F.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:], ignore_index=-100, reduction="none")
    counts = (labels[:, 1:] != -100).sum(dim=1).clamp(min=1)
    return (tok.sum(dim=1) / counts).mean()


def letter_hits(logits, labels, rows, adapter) -> list[tuple[str, str, bool]]:
    """(kind, task, correct?) per multiple-choice row (``mc`` and ``hint``): is the answer's letter
    the argmax among a-d at the answer's first position? One host transfer for the whole batch."""
    letters = torch.tensor([adapter.tokenizer.convert_tokens_to_ids(c) for c in "abcd"], device=logits.device)
    before = answer_positions(labels)  # [R] the position that predicts the letter
    rows_idx = torch.arange(len(rows), device=logits.device)
    scores = logits[rows_idx, before][:, letters]  # [R, 4]
    hit = (letters[scores.argmax(dim=1)] == labels[rows_idx, before + 1]).tolist()
    return [(qa.kind, qa.task, ok) for qa, ok in zip(rows, hit) if qa.kind in ("mc", "hint")]


EVAL_FRAMES_PER_BATCH = FRAMES_PER_BATCH  # every stage's card was measured on these batches


def evaluate(adapter, device, batches: int, seed: int = 12345, workers: int = 0,
             streaming: MemoryConfig | None = None, max_chunks: int = MAX_CHUNKS) -> dict:
    """Held-out letter accuracy per task (seeds never used in training) and M-Avg over the tasks, the
    video prefilled as :func:`batch_logits` does with ``streaming``; ``max_chunks`` above
    :data:`~vidqa.synth.train_data.MAX_CHUNKS`: clips of MAX_CHUNKS+1..max_chunks chunks only."""
    hits: dict[str, list[bool]] = {t: [] for t in TASKS}
    hinted: list[bool] = []
    data = iter(torch.utils.data.DataLoader(ClipBatches(seed, held_out=True, frames_per_batch=EVAL_FRAMES_PER_BATCH,
                                                        max_chunks=max_chunks), batch_size=None,
                                            num_workers=workers,
                                            worker_init_fn=lambda _: torch.set_num_threads(1)))
    adapter.model.eval()
    with torch.no_grad():
        for _ in range(batches):
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
                logits, labels, tasks = batch_logits(adapter, next(data), device, streaming=streaming)
            for kind, task, ok in letter_hits(logits, labels, tasks, adapter):
                (hits[task] if kind == "mc" else hinted).append(ok)
    adapter.model.train()
    acc = {t: round(100 * sum(v) / len(v), 1) for t, v in hits.items() if v}
    acc["m_avg"] = round(sum(acc.values()) / max(1, len(acc)), 1)
    acc["questions"] = sum(len(v) for v in hits.values())
    acc["hinted_letter_acc"] = round(100 * sum(hinted) / max(1, len(hinted)), 1)
    return acc


PROBE_FILE = "token_probe.safetensors"


class TokenProbe(torch.nn.Module):
    """A linear read-out of each visual token's shape, colour and card word (the dense auxiliary
    loss of :mod:`vidqa.synth.token_labels`); trained beside the model, never shipped with it."""

    BACKGROUND_WEIGHT = 0.1  # most cells hold nothing: keep "nothing" from drowning the objects

    def __init__(self, width: int):
        super().__init__()
        self.heads = torch.nn.ModuleDict({f: torch.nn.Linear(width, n) for f, n in CLASSES.items()})
        for f, n in CLASSES.items():  # class weights, made once (not saved: they follow from the classes)
            weight = torch.ones(n)
            weight[0] = self.BACKGROUND_WEIGHT
            self.register_buffer(f"{f}_weight", weight, persistent=False)

    def forward(self, visual: torch.Tensor, labels: torch.Tensor, accuracy: bool = False) -> tuple[torch.Tensor, dict]:
        """``visual`` ``[B, N, D]``, ``labels`` int64 ``[B, T/2, rows, cols, 3]`` with N = T/2*rows*cols
        -> (mean cross-entropy over the fields, with ``accuracy`` the accuracy on the labelled
        non-background cells per field: a host sync, so only on logging steps)."""
        flat = labels.reshape(labels.shape[0], -1, len(FIELDS))
        losses, acc = [], {}
        for i, field in enumerate(FIELDS):
            head = self.heads[field]
            target = flat[..., i].reshape(-1)
            logits = head(visual.reshape(-1, visual.shape[-1]).to(head.weight.dtype)).float()
            losses.append(F.cross_entropy(logits, target, weight=getattr(self, f"{field}_weight"), ignore_index=IGNORE))
            if not accuracy:
                continue
            with torch.no_grad():
                on = target > 0
                acc[f"{field}_acc"] = round(float((logits[on].argmax(-1) == target[on]).float().mean()), 3) if on.any() else None
        return torch.stack(losses).mean(), acc


def save_weights(model, path: Path) -> None:
    """bf16 weights without the tied head, written atomically."""
    from safetensors.torch import save_file

    state = {k: v.detach().to(torch.bfloat16).cpu().contiguous() for k, v in model.state_dict().items()
             if k != "lm_head.weight"}
    tmp = path.with_suffix(".tmp")
    save_file(state, str(tmp))
    tmp.replace(path)


def load_resume_weights(model, folder: Path) -> None:
    """Loads a checkpoint (:func:`save_weights`) or an exported ``save_pretrained`` folder (the shipped
    model: transformers saves it under its own key layout) into ``model``; every weight but the tied
    head must be found, so that a resume never silently starts from scratch."""
    if (folder / "config.json").exists():
        from transformers import Qwen2_5_VLForConditionalGeneration

        state = Qwen2_5_VLForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).state_dict()
    else:
        from safetensors.torch import load_file

        state = load_file(str(folder / "model.safetensors"))
    missing, unexpected = model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise SystemExit(f"--resume {folder}: {len(missing)} weights missing (e.g. {missing[:2]}), "
                         f"{len(unexpected)} unexpected (e.g. {unexpected[:2]})")


def save_pretrained(model, processor, folder: Path, info: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    model.to(torch.bfloat16).save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)
    (folder / "training.json").write_text(json.dumps(info, indent=1) + "\n")


def warm(adapter, opt, args, device, log, deadline: float) -> int:
    """The letter-lookup warm-up: ``--text-warmup-steps`` steps on hinted rows, language model only
    (stopped early at half the time limit, so that the video steps keep the other half)."""
    from vidqa.synth.train_data import HintedRows

    rows = torch.utils.data.DataLoader(HintedRows(args.seed), batch_size=None, num_workers=min(4, args.workers),
                                       worker_init_fn=lambda _: torch.set_num_threads(1))
    t0 = time.time()
    for step, batch in enumerate(rows):
        if step == args.text_warmup_steps or time.time() > deadline:
            return step
        for g in opt.param_groups:
            g["lr"] = args.lr * min(1.0, (step + 1) / 100)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
            logits, labels, qa = text_logits(adapter, batch, device)
        loss = row_loss(logits, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if torch.isfinite(torch.nn.utils.clip_grad_norm_(adapter.model.parameters(), 1.0)):
            opt.step()
        if (step + 1) % args.log_every == 0:
            hits = [ok for _, _, ok in letter_hits(logits.detach(), labels, qa, adapter)]
            row = {"warmup_step": step + 1, "loss": round(float(loss.detach()), 4),
                   "hinted_letter_acc": round(sum(hits) / max(1, len(hits)), 3),
                   "elapsed_s": round(time.time() - t0, 1)}
            print(json.dumps(row), flush=True)
            log.write(json.dumps(row) + "\n")


def held_out_accuracy(adapter, device, args, streaming: MemoryConfig | None) -> dict:
    """``{"heldout_accuracy": ...}`` on the clips every stage is measured on, and with ``--max-chunks``
    above the default ``"heldout_accuracy_long"`` on as many long held-out clips (one or two a batch,
    so four times the batches)."""
    workers = min(args.workers, args.eval_batches)
    acc = {"heldout_accuracy": evaluate(adapter, device, args.eval_batches, workers=workers, streaming=streaming)}
    if args.max_chunks > MAX_CHUNKS:
        acc["heldout_accuracy_long"] = evaluate(adapter, device, 4 * args.eval_batches, workers=workers,
                                                streaming=streaming, max_chunks=args.max_chunks)
    if args.count_eval_batches:
        from vidqa.synth.count_eval import count_accuracy

        acc["heldout_count_accuracy"] = count_accuracy(adapter, device, args.count_eval_batches, streaming=streaming)
    return acc


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    return peak * min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, step / total))))


def main(argv=None) -> int:
    from vidqa.synth.model import build_model_and_processor
    from vidqa.vlm.qwen2_5_vl import Qwen2_5_VLAdapter

    ap = argparse.ArgumentParser(prog="python -m vidqa.synth.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--minutes", type=float, default=8.0, help="time limit of the training loop")
    ap.add_argument("--steps", type=int, default=0, help="schedule length (0: set from the first steps' speed)")
    ap.add_argument("--resume", help="folder with model.safetensors of an earlier run")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--workers", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--frames-per-batch", type=int, default=768)
    ap.add_argument("--save-pretrained", help="also write a save_pretrained folder here")
    ap.add_argument("--eval-batches", type=int, default=12)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--text-warmup-steps", type=int, default=0,
                    help="steps of hinted multiple choice without video first (the letter lookup)")
    ap.add_argument("--questions-per-clip", type=int, default=3,
                    help="multiple-choice questions drawn per clip and step (each also asked open and hinted)")
    ap.add_argument("--reuse", type=int, default=1, help="steps per rendered batch (new questions each time)")
    ap.add_argument("--token-loss", type=float, default=0.5,
                    help="weight of the per-visual-token shape/colour/word probe loss (0: answers only)")
    ap.add_argument("--lookup-loss", type=float, default=0.5,
                    help="weight of the supervised look-up attention loss (0: off)")
    ap.add_argument("--readout-loss", type=float, default=0.5,
                    help="weight of the open answers read at the look-up layer (deep supervision; 0: off)")
    ap.add_argument("--option-loss", type=float, default=0.5,
                    help="weight of the supervised attention to the correct option, one layer above the look-up (0: off)")
    ap.add_argument("--lookup-layer", type=int, default=3,
                    help="language-model layer whose answer-position attention the look-up loss supervises")
    ap.add_argument("--prefill", choices=["streaming", "full"], default="streaming",
                    help="clips prefilled as vidqa's ingest does (window and recurrent memory) or with full attention")
    ap.add_argument("--window-chunks", type=int, default=MemoryConfig.window_chunks,
                    help="ingest's window for --prefill streaming (default: vidqa's)")
    ap.add_argument("--recurrent-tokens", type=int, default=MemoryConfig.recurrent_tokens,
                    help="ingest's pooled entries per chunk for --prefill streaming (default: vidqa's)")
    ap.add_argument("--max-chunks", type=int, default=MAX_CHUNKS,
                    help=f"above {MAX_CHUNKS}: half the batches are clips of {MAX_CHUNKS + 1} to this many chunks, "
                         "as many as retrieval gives the model at an hour; also evaluated on such clips")
    ap.add_argument("--count-share", type=float, default=COUNT_SHARE,
                    help="share of training batches whose clips hold pairs shown 1-6 times (counting)")
    ap.add_argument("--count-evidence", choices=["all", "first", "width"], default="all",
                    help="a count question's look-up evidence: every token of the pair, the first sight "
                         "of each appearance (vidqa.synth.lookup_loss.first_sightings), or those with a "
                         "mass that grows with the count on one head (vidqa.synth.lookup_loss.width_loss)")
    ap.add_argument("--count-eval-batches", type=int, default=0,
                    help="also measure counting by true count on this many batches of held-out clips "
                         "(vidqa.synth.count_eval)")
    ap.add_argument("--eval-only", action="store_true",
                    help="only the held-out evaluation of --resume (with --max-chunks: long clips too) into OUT/eval.json")
    args = ap.parse_args(argv)
    if args.eval_only and not args.resume:
        ap.error("--eval-only needs --resume")
    streaming = MemoryConfig(window_chunks=args.window_chunks, recurrent_tokens=args.recurrent_tokens) \
        if args.prefill == "streaming" else None
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, processor = build_model_and_processor(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.resume:
        load_resume_weights(model, Path(args.resume))
    model.to(device).train()
    adapter = Qwen2_5_VLAdapter(model, processor, "synth-tiny")
    model.train()  # the adapter puts the model in eval mode
    if args.eval_only:
        acc = held_out_accuracy(adapter, device, args, streaming)
        print(json.dumps(acc), flush=True)
        (out / "eval.json").write_text(json.dumps({"resumed_from": args.resume, **acc}, indent=1) + "\n")
        return 0
    probe = TokenProbe(model.config.vision_config.out_hidden_size).to(device)
    if args.resume and (Path(args.resume) / PROBE_FILE).exists():
        from safetensors.torch import load_file

        probe.load_state_dict(load_file(str(Path(args.resume) / PROBE_FILE)))
    params = list(model.parameters()) + (list(probe.parameters()) if args.token_loss > 0 else [])
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.05, betas=(0.9, 0.98))
    loader = torch.utils.data.DataLoader(
        ClipBatches(args.seed + (7 if args.resume else 0), frames_per_batch=args.frames_per_batch,
                    questions_per_clip=args.questions_per_clip, max_chunks=args.max_chunks,
                    count_share=args.count_share),
        batch_size=None, num_workers=args.workers, prefetch_factor=4 if args.workers else None,
        persistent_workers=args.workers > 0, worker_init_fn=lambda _: torch.set_num_threads(1),
        pin_memory=device == "cuda")
    generator = torch.Generator().manual_seed(args.seed)
    t_start = time.time()
    deadline = t_start + args.minutes * 60
    log = open(out / "train_log.jsonl", "a")
    step, total, warmup = 0, args.steps or 10**9, 50 if args.resume else 300
    skipped, last_ckpt, t_steps = 0, time.time(), None
    # attention on the evidence and on the correct option, per step since the last log line
    lookup_logs: dict[str, list] = {k: [] for k in ("evidence_attention_near", "evidence_attention_far",
                                                    "evidence_share", "option_attention", "count_width_error")}
    pick_rng, waited, t_wait = random.Random(args.seed), 0.0, time.time()

    def batches():
        nonlocal waited, t_wait
        for rendered in loader:
            waited += time.time() - t_wait
            for k in range(args.reuse):
                yield rendered if k == 0 else pick_questions(rendered, pick_rng, args.questions_per_clip)
            t_wait = time.time()

    warm_done = warm(adapter, opt, args, device, log, t_start + args.minutes * 30) if args.text_warmup_steps else 0
    t_wait = time.time()  # the warm-up is not time spent waiting for video batches

    for batch in batches():
        if step == 20:
            t_steps = time.time()
        if step == 60 and not args.steps:  # the schedule's length from the measured speed
            rate = 40 / (time.time() - t_steps)
            total = step + int(rate * max(0.0, deadline - time.time()))
        lr = lr_at(step, total, args.lr, warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device == "cuda"), \
                LookupCapture(model.model.language_model, args.lookup_layer) as capture, \
                LookupCapture(model.model.language_model, args.lookup_layer + 1) as option_capture:
            logits, labels, tasks, parts = batch_logits(adapter, batch, device, augment=True, generator=generator,
                                                        return_visual=True, streaming=streaming)
            loss = answer_loss = row_loss(logits, labels)
            probe_log = {}
            if args.lookup_loss > 0:
                look, look_log = lookup_loss(capture, batch, labels, tasks, parts.is_visual,
                                             count_first=args.count_evidence == "first",
                                             count_width=args.count_evidence == "width")
                if look is not None:
                    loss = loss + args.lookup_loss * look
                    far = batch["gap"] or batch["question_gap"] or any(batch["chunk_gaps"])
                    for key, name in (("evidence_attention", "evidence_attention_" + ("far" if far else "near")),
                                      ("evidence_share", "evidence_share"), ("count_width_error", "count_width_error")):
                        if key in look_log:
                            lookup_logs[name].append(look_log[key])
            if args.option_loss > 0:
                pick, pick_log = option_loss(option_capture, adapter, parts.question_ids, labels, tasks,
                                             len(parts.is_visual))
                if pick is not None:
                    loss = loss + args.option_loss * pick
                    lookup_logs["option_attention"].append(pick_log["option_attention"])
            read = readout_loss(capture, model.lm_head, labels, tasks) if args.readout_loss > 0 else None
            if read is not None:
                loss = loss + args.readout_loss * read
                probe_log["readout_loss"] = read.detach()
            if args.token_loss > 0:  # an untrained probe's read-out would mean nothing: skip it
                token_loss, token_acc = probe(parts.visual, batch["token_labels"].to(device, non_blocking=True),
                                               accuracy=(step + 1) % args.log_every == 0)
                loss = loss + args.token_loss * token_loss
                probe_log.update(token_loss=token_loss.detach(), **token_acc)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if torch.isfinite(norm):  # a non-finite step (bf16 overflow) is skipped, not applied
            opt.step()
        else:
            skipped += 1
        step += 1
        if step % args.log_every == 0:
            hits = letter_hits(logits.detach(), labels, tasks, adapter)
            mc = [ok for kind, _, ok in hits if kind == "mc"]
            hint = [ok for kind, _, ok in hits if kind == "hint"]
            looked = {k: round(float(torch.stack(v).mean()), 4) for k, v in lookup_logs.items() if v}
            lookup_logs = {k: [] for k in lookup_logs}
            row = {"step": step, "of": total if total < 10**9 else None, "loss": round(float(answer_loss.detach()), 4),
                   **{k: round(float(v), 4) if torch.is_tensor(v) else v for k, v in probe_log.items()}, **looked,
                   "mc_letter_acc": round(sum(mc) / max(1, len(mc)), 3),
                   "hinted_letter_acc": round(sum(hint) / max(1, len(hint)), 3), "lr": round(lr, 6),
                   "skipped_steps": skipped, "elapsed_s": round(time.time() - t_start, 1),
                   "waiting_for_data_s": round(waited, 1)}
            print(json.dumps(row), flush=True)
            log.write(json.dumps(row) + "\n")
            log.flush()
        if time.time() - last_ckpt > CHECKPOINT_EVERY_S:
            save_weights(model, out / "model.safetensors")
            save_weights(probe, out / PROBE_FILE)
            last_ckpt = time.time()
        if step >= total or time.time() > deadline:
            break
    train_s = time.time() - t_start
    save_weights(model, out / "model.safetensors")
    save_weights(probe, out / PROBE_FILE)
    acc = held_out_accuracy(adapter, device, args, streaming)
    info = {"steps": step, "schedule_steps": total if total < 10**9 else step,
            "text_warmup_steps": args.text_warmup_steps, "text_warmup_done": warm_done,
            "train_seconds": round(train_s, 1), "seed": args.seed,
            "resumed_from": args.resume, "lr": args.lr, "skipped_steps": skipped, "frames_per_batch": args.frames_per_batch,
            "questions_per_clip": args.questions_per_clip, "reuse": args.reuse, "token_loss": args.token_loss,
            "lookup_loss": args.lookup_loss, "lookup_layer": args.lookup_layer, "readout_loss": args.readout_loss,
            "option_loss": args.option_loss, "prefill": args.prefill,
            "window_chunks": args.window_chunks if streaming else None,
            "recurrent_tokens": args.recurrent_tokens if streaming else None, "rope_theta": model.config.text_config.rope_parameters["rope_theta"],
            "max_chunks": args.max_chunks, "count_share": args.count_share, "count_evidence": args.count_evidence,
            "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
            "heldout_accuracy": acc.pop("heldout_accuracy"), **acc}
    print(json.dumps(info), flush=True)
    log.write(json.dumps(info) + "\n")
    (out / "training.json").write_text(json.dumps(info, indent=1) + "\n")
    if args.save_pretrained:
        save_pretrained(model, processor, Path(args.save_pretrained), info)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
