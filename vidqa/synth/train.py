"""Training the bundled ``synth-tiny`` model from scratch on short synthetic clips.

    python -m vidqa.synth.train --out ckpt --minutes 8 [--resume ckpt] [--save-pretrained assets/models/synth-tiny]

Each example is a clip of 16-64 s of the synthetic world at 1 fps (rendered straight from a
timeline, no video file), laid out exactly as vidqa lays out a video -- prompt prefix, one block
per 16-frame chunk preceded by its ``<mm:ss>`` timestamp, then a multiple-choice question in MLVU's
wording ending with ``Best Option: (`` -- and the loss is on the answer letter and ``)``.

Position augmentation, so that the model tolerates what long videos produce: clips sit at a random
time offset in a virtual video of up to an hour (timestamps and grounding options move with it),
and a random position gap separates the prompt from the first chunk and, sometimes, chunk from
chunk (as after retrieval with ``positions="original"``).

Reproducible from ``--seed``; the data loader renders batches on CPU workers. Checkpoints hold the
model weights only (the optimiser restarts with a short warm-up on resume).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch

from vidqa.mcq import MC_ANSWER_PREFIX, format_mc_question, letter
from vidqa.synth.questions import TASKS, clock, make_questions
from vidqa.synth.render import render_frame
from vidqa.synth.timeline import make_timeline

# Rendered at the size the processor gives the demo's 448x252 frames (smart_resize to 28-multiples),
# so training frames need no resize and are patchified on the GPU (see `patchify`).
WIDTH, HEIGHT = 224, 112
DURATIONS = [16, 32, 48, 64]  # multiples of the 16-frame chunk
CHUNK = 16
HELD_OUT_SEED_BASE = 10_000_000  # evaluation seeds; training seeds stay below


def shift_clock(text: str, offset: float) -> str:
    h, m, s = (int(x) for x in text.split(":"))
    return clock(h * 3600 + m * 60 + s + offset)


def make_example(seed: int, duration: int, offset: float, max_questions: int = 4):
    """(frames uint8 [T, H, W, 3], times [T], [(question text, answer letter, task)]) for one clip:
    up to ``max_questions`` questions of different task types, asked one after another."""
    rng = random.Random(seed)
    tl = make_timeline(seed, duration, object_every=5.0, card_every=9.0, scene_every=14.0)
    qs = make_questions(tl, seed, per_task=1)
    rng.shuffle(qs)
    out = []
    for q in qs[:max_questions]:
        candidates, answer = list(q["candidates"]), q["answer"]
        if q["question_type"] == "grounding":
            candidates = [shift_clock(c, offset) for c in candidates]
            answer = shift_clock(answer, offset)
        out.append((format_mc_question(q["question"], candidates), letter(candidates.index(answer)),
                    q["question_type"]))
    frames = np.stack([render_frame(tl, float(t), WIDTH, HEIGHT) for t in range(duration)])
    times = np.arange(duration, dtype=np.float64) + offset
    return frames, times, out


def patchify(frames: torch.Tensor, processor) -> torch.Tensor:
    """What the Qwen2-VL video processor makes of frames already at a 28-multiple size, on any device.

    ``frames`` uint8 ``[B, T, H, W, 3]`` (T even) -> ``[B * (T/2) * (H/14) * (W/14), 3 * 2 * 14 * 14]``:
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


class ClipBatches(torch.utils.data.IterableDataset):
    """Endless batches; every batch shares one clip duration (so the visual layout is identical)."""

    def __init__(self, batch_size: int, seed: int, held_out: bool = False):
        self.batch_size, self.seed, self.held_out = batch_size, seed, held_out

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker = info.id if info else 0
        rng = random.Random(self.seed * 1000 + worker)
        base = HELD_OUT_SEED_BASE if self.held_out else 0
        while True:
            duration = rng.choice(DURATIONS)
            offset = float(rng.randrange(0, 3600 - duration, 2)) if rng.random() < 0.7 else 0.0
            items = [make_example(base + rng.randrange(10**9 if not self.held_out else 10**6), duration, offset)
                     for _ in range(self.batch_size)]
            yield {
                "frames": torch.from_numpy(np.stack([f for f, _, _ in items])),
                "times": items[0][1],
                "qa": [q for _, _, q in items],
                "gap": rng.randrange(0, 6000) if rng.random() < 0.5 else 0,
                "chunk_gaps": [rng.randrange(0, 300) if rng.random() < 0.2 else 0 for _ in range(duration // CHUNK)],
            }


def assemble(adapter, batch, device):
    """Inputs ``[B, L, D]``, positions ``[3, B, L]``, labels ``[B, L]`` for a batch (vision with grad)."""
    model = adapter.model
    frames = batch["frames"].to(device, non_blocking=True)
    b, n_frames = frames.shape[:2]
    vp = adapter.processor.video_processor
    grid = torch.tensor([n_frames // vp.temporal_patch_size, HEIGHT // vp.patch_size, WIDTH // vp.patch_size])
    frames_per_chunk = CHUNK
    grid_rows = grid.repeat(b, 1).to(device)
    vis = model.model.visual(patchify(frames, adapter.processor).to(model.dtype), grid_thw=grid_rows)
    vis = vis.pooler_output if hasattr(vis, "pooler_output") else vis
    per_video = vis.shape[0] // b
    times = batch["times"]
    tokens_per_grid = per_video // (n_frames // 2)
    # Shared layout: prefix, then chunks; text pieces are the same for every example of the batch.
    pieces, positions, pos = [], [], 0

    def text(t, gap=0):
        nonlocal pos
        pos += gap
        ids = adapter.tokenize(t)
        pieces.append(("text", ids))
        positions.append(adapter.text_positions(len(ids), pos))
        pos += len(ids)

    text(adapter.prompt_prefix())
    for c in range(n_frames // frames_per_chunk):
        f0 = c * frames_per_chunk
        meta = adapter.token_metadata(torch.zeros(frames_per_chunk // 2 * tokens_per_grid, 1),
                                      (frames_per_chunk // 2, grid[1], grid[2]), times[f0:f0 + frames_per_chunk], f0)
        layout = adapter.chunk_layout(meta)
        text(adapter.chunk_open(layout.t0), gap=batch["gap"] if c == 0 else batch["chunk_gaps"][c])
        pieces.append(("vis", (f0 // 2 * tokens_per_grid, len(meta))))
        positions.append(adapter.visual_positions(meta, layout, pos))
        pos += layout.extent
        text(adapter.chunk_close())
    shared_pos = torch.cat(positions, dim=1)
    embed = model.get_input_embeddings()
    seqs, poss, labels = [], [], []
    for i in range(b):
        parts = []
        for kind, val in pieces:
            if kind == "text":
                parts.append(embed(val.to(device)))
            else:
                start, n = val
                parts.append(vis[i * per_video + start: i * per_video + start + n])
        # Several questions in turn: each answered, then the next asked as a follow-up turn.
        ids, sup = [], []
        end = adapter.tokenizer.convert_tokens_to_ids("<|im_end|>")
        for k, (question, answer, _) in enumerate(batch["qa"][i]):
            text = adapter.prompt_question(question, MC_ANSWER_PREFIX)
            if k:
                text = "\n<|im_start|>user\n" + text
            q_ids = adapter.tokenize(text).tolist()
            a_ids = adapter.tokenize(answer + ")").tolist() + [end]
            ids += q_ids + a_ids
            sup += [False] * len(q_ids) + [True] * len(a_ids)
        ids_t = torch.tensor(ids)
        parts.append(embed(ids_t.to(device)))
        seqs.append(torch.cat(parts))
        poss.append(torch.cat([shared_pos, adapter.text_positions(len(ids), pos)], dim=1))
        lab = torch.full((seqs[-1].shape[0],), -100, dtype=torch.long)
        lab[-len(ids):] = torch.where(torch.tensor(sup), ids_t, torch.full_like(ids_t, -100))
        labels.append(lab)
    length = max(s.shape[0] for s in seqs)
    x = torch.zeros(b, length, seqs[0].shape[1], device=device, dtype=seqs[0].dtype)
    p = torch.zeros(3, b, length, dtype=torch.long)
    y = torch.full((b, length), -100, dtype=torch.long)
    for i in range(b):
        n = seqs[i].shape[0]
        x[i, :n], p[:, i, :n], y[i, :n] = seqs[i], poss[i], labels[i]
        if n < length:  # right padding: causal attention keeps it from affecting the real tokens
            p[:, i, n:] = poss[i][:, -1:] + 1
    return x, p.to(device), y.to(device)


def answer_starts(labels: torch.Tensor) -> list[list[int]]:
    """Per row, the positions of the first token of each supervised answer."""
    out = []
    for row in labels:
        sup = (row != -100).tolist()
        out.append([j for j in range(len(sup)) if sup[j] and (j == 0 or not sup[j - 1])])
    return out


def letter_accuracy(logits, labels, adapter) -> list[bool]:
    """For every answer: is its option letter the argmax among the letters a-d?"""
    letters = [adapter.tokenizer.convert_tokens_to_ids(c) for c in "abcd"]
    out = []
    for i, starts in enumerate(answer_starts(labels)):
        for j in starts:
            scores = logits[i, j - 1, letters]
            out.append(int(scores.argmax()) == letters.index(int(labels[i, j])))
    return out


def main(argv=None) -> int:
    from vidqa.synth.model import build_model_and_processor
    from vidqa.vlm.qwen2_5_vl import Qwen2_5_VLAdapter

    ap = argparse.ArgumentParser(prog="python -m vidqa.synth.train", description=__doc__)
    ap.add_argument("--out", required=True)
    ap.add_argument("--minutes", type=float, default=8.0)
    ap.add_argument("--resume", help="folder with model.safetensors of an earlier run")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--workers", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save-pretrained", help="also write a save_pretrained folder here")
    ap.add_argument("--eval-batches", type=int, default=8)
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, processor = build_model_and_processor(args.seed)
    if args.resume:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(Path(args.resume) / "model.safetensors")), strict=False)
    model.to(device).train()
    adapter = Qwen2_5_VLAdapter(model, processor, "synth-tiny")
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05, betas=(0.9, 0.98))
    loader = torch.utils.data.DataLoader(ClipBatches(args.batch_size, args.seed + (7 if args.resume else 0)),
                                         batch_size=None, num_workers=args.workers, prefetch_factor=4,
                                         persistent_workers=args.workers > 0,
                                         worker_init_fn=lambda _: torch.set_num_threads(1))
    deadline = time.time() + args.minutes * 60
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = open(out / "train_log.jsonl", "a")
    step, warmup, recent = 0, 100, []
    total_est = max(200, int(args.minutes * 60 / 0.25))
    for batch in loader:
        lr = args.lr * min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, step / total_est))))
        for g in opt.param_groups:
            g["lr"] = lr
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
            x, pos, y = assemble(adapter, batch, device)
            hidden = model.model.language_model(inputs_embeds=x, position_ids=pos).last_hidden_state
            logits = model.lm_head(hidden).float()
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), y[:, 1:].reshape(-1),
                                                 ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        recent += letter_accuracy(logits.detach(), y, adapter)
        step += 1
        if step % 50 == 0:
            row = {"step": step, "loss": round(float(loss.detach()), 4), "train_acc": round(sum(recent) / len(recent), 3),
                   "lr": lr, "time": round(time.time(), 1)}
            recent = []
            print(json.dumps(row), flush=True)
            log.write(json.dumps(row) + "\n")
            log.flush()
        if time.time() > deadline:
            break
    model.eval()
    acc = evaluate(adapter, processor, device, args.eval_batches, args.batch_size)
    print(json.dumps({"step": step, "heldout": acc}), flush=True)
    log.write(json.dumps({"step": step, "heldout": acc}) + "\n")
    from safetensors.torch import save_file

    state = {k: v.detach().float().cpu().clone() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(state, str(out / "model.safetensors"))  # lm_head is tied to the embeddings
    if args.save_pretrained:
        save_pretrained(model, processor, Path(args.save_pretrained), acc, step)
    return 0


def evaluate(adapter, processor, device, batches: int, batch_size: int) -> dict:
    """Held-out accuracy per task (seeds never used in training), letter argmax at the answer."""
    per_task: dict[str, list[bool]] = {t: [] for t in TASKS}
    data = iter(ClipBatches(batch_size, seed=12345, held_out=True))
    with torch.no_grad():
        for _ in range(batches):
            batch = next(data)
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
                x, pos, y = assemble(adapter, batch, device)
                logits = adapter.model.lm_head(adapter.model.model.language_model(
                    inputs_embeds=x, position_ids=pos).last_hidden_state).float()
            tasks = [task for qa in batch["qa"] for _, _, task in qa]
            for task, ok in zip(tasks, letter_accuracy(logits, y, adapter)):
                per_task[task].append(ok)
    acc = {t: round(100 * sum(v) / len(v), 1) for t, v in per_task.items() if v}
    acc["m_avg"] = round(sum(acc.values()) / len(acc), 1)
    return acc


def save_pretrained(model, processor, folder: Path, acc: dict, steps: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    model.to(torch.bfloat16).save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)
    (folder / "training.json").write_text(json.dumps({"steps": steps, "heldout_accuracy": acc}, indent=1))


if __name__ == "__main__":
    raise SystemExit(main())
