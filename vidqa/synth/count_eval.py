"""Held-out counting accuracy of the bundled model by how many times the pair was shown.

The card's held-out clips draw random objects, so 86% of their count answers are 1 and the count
accuracy there (94%) says little about counting. An hour asks for 4-6 (its held-back pairs are
shown 1-6 times), and through the pipeline the model got 7 of 21 such counts. These clips hold
:data:`~vidqa.synth.train_data.COUNT_TARGETS_IN_CLIPS` pairs shown 1-6 times each, as half the
training batches do, at the card's clip length (``chunks``), with held-out seeds; every count
question of a clip is asked, and the letter is read teacher-forced as the card's accuracy is.
Stage 11 on 24 clips of 6 chunks (CPU, ``.agents``-style probe): counts of 1-2 93%, of 3-4 50%,
of 5-6 50%.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from vidqa.synth.train_data import CHUNK, COUNT_TARGETS_IN_CLIPS, HELD_OUT_SEED_BASE, make_clip

COUNT_EVAL_SEED = HELD_OUT_SEED_BASE + 5_000_000  # apart from the card's held-out clips
BUCKETS = (("1-2", 1, 2), ("3-4", 3, 4), ("5+", 5, 99))


def count_batch(rng: random.Random, clips: int, chunks: int) -> dict:
    """A batch of ``clips`` held-out clips of ``chunks`` chunks with their count questions only
    (multiple choice), shaped as :class:`~vidqa.synth.train_data.ClipBatches` yields them."""
    offset = float(rng.randrange(0, 3 * 3600 - chunks * CHUNK, 2))
    made = [make_clip(COUNT_EVAL_SEED + rng.randrange(1_000_000), chunks, offset, True, COUNT_TARGETS_IN_CLIPS)
            for _ in range(clips)]
    qa = [[q for q in c[2] if q.task == "count" and q.kind == "mc"] for c in made]
    return {"frames": torch.from_numpy(np.stack([c[0] for c in made])), "times": made[0][1], "qa": qa,
            "all_qa": [c[2] for c in made], "token_labels": torch.from_numpy(np.stack([c[3] for c in made])),
            "chunks": chunks, "offset": offset, "gap": 0, "chunk_gaps": [0] * chunks, "question_gap": 0,
            "dense": True, "count_targets": COUNT_TARGETS_IN_CLIPS}


def count_accuracy(adapter, device, batches: int, clips_per_batch: int = 8, chunks: int = 6, streaming=None,
                   seed: int = 0) -> dict:
    """``{"1-2": %, "3-4": %, "5+": %, "all": %, "questions": n}``: teacher-forced letter accuracy
    of the count questions of ``batches`` batches, by the true count."""
    from vidqa.synth.train import batch_logits, letter_hits

    rng = random.Random(seed)
    hits: list[tuple[int, bool]] = []
    was_training = adapter.model.training
    adapter.model.eval()
    with torch.no_grad():
        for _ in range(batches):
            batch = count_batch(rng, clips_per_batch, chunks)
            if not any(batch["qa"]):
                continue
            batch["qa"] = [q or [c[-1]] for q, c in zip(batch["qa"], batch["all_qa"])]  # every clip needs a row
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
                logits, labels, rows = batch_logits(adapter, batch, device, streaming=streaming)
            mc = [qa for qa in rows if qa.kind == "mc"]
            hits += [(int(qa.answer), ok) for qa, (_, _, ok) in zip(mc, letter_hits(logits, labels, rows, adapter))]
    adapter.model.train(was_training)
    out = {}
    for name, lo, hi in BUCKETS:
        got = [ok for n, ok in hits if lo <= n <= hi]
        if got:
            out[name] = round(100 * sum(got) / len(got), 1)
    out["all"] = round(100 * sum(ok for _, ok in hits) / max(1, len(hits)), 1)
    out["questions"] = len(hits)
    return out
