"""Training examples for the bundled ``synth-tiny`` model, made on CPU workers.

An example is a clip of 1-6 chunks (16 s each, 1 fps; half the batches up to ``max_chunks`` when that is set) of the synthetic world, rendered straight
from its timeline at 224x126 (the world's 16:9; the GPU resizes it to what the processor makes of
a 448x252 video), with every question the timeline supports:

* the seven MLVU-style multiple-choice tasks of :mod:`vidqa.synth.questions`, answered as
  ``"b) red"`` after MLVU's ``Best Option: (`` -- the option letter, then the option's text;
* the same questions *open-ended* (no options), answered with the option's text: what was seen,
  without the letter lookup;
* the same multiple-choice questions with the answer given away in the question (``The answer is
  red.``): the letter lookup without perception. Trained from scratch on letters alone, the runs of
  this project stayed at chance for their 400-1,100 steps; splitting the task into its two halves
  gives each a direct signal (the lookup still needs more steps: see :class:`HintedRows`);
* ``Describe the video.``, answered with :func:`vidqa.synth.describe.describe` of the clip: one
  sentence per scene, object, card and anomaly, the densest perception signal the world has.

Long-video augmentation, shared by the clips of a batch so that they share one text layout: the clip
sits at a random time in a virtual video of up to three hours (chunk timestamps and grounding
options move with it), and random position gaps come before the first chunk, between chunks and
before the question -- what retrieval with ``positions="original"`` hands the model in an hour-long
video, where the blocks kept are far apart from each other and from the question.

Seeds below :data:`HELD_OUT_SEED_BASE` are for training, those above for evaluation.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

from vidqa.mcq import MC_ANSWER_PREFIX, format_mc_question, letter
from vidqa.synth.describe import describe
from vidqa.synth.questions import clock, make_questions
from vidqa.synth.render import render_frame
from vidqa.synth.timeline import make_timeline
from vidqa.synth.token_labels import token_labels

RENDER_WIDTH, RENDER_HEIGHT = 224, 126
CHUNK = 16  # frames per chunk, as vidqa ingests (VideoConfig.chunk_frames)
MAX_CHUNKS = 6
# Long clips (``max_chunks`` above MAX_CHUNKS): in this share of the batches a clip has
# MAX_CHUNKS+1..max_chunks chunks, as many as retrieval hands the model at an hour (~30 blocks of
# 16 s at 8,192 visual tokens); the other batches keep 1-MAX_CHUNKS.
LONG_CLIP_SHARE = 0.5
FRAMES_PER_BATCH = 768  # clips per batch = this // clip frames: long clips come in smaller batches
QUESTIONS_PER_CLIP = 3  # multiple-choice questions drawn per clip and step (each also open and hinted)
HINT = "The answer is {}."
HELD_OUT_SEED_BASE = 10_000_000
DESCRIBE = "Describe the video."
TOKEN_GRID = (4, 8)  # merged cells (rows, columns) of the model's 224x112 frames: 28-pixel cells
DENSE = dict(object_every=5.0, card_every=9.0, scene_every=14.0)
COUNT_TARGETS_IN_CLIPS = 2  # pairs shown 1-6 times in a clip of batches that ask for counts
COUNT_SHARE = 0.5  # of the training batches that do


@dataclass
class QA:
    """One question row: the user text, the answer prefix, the supervised answer, the task
    (``question_type`` or ``"describe"``), the row's ``kind`` (``mc``, ``open``, ``hint`` or
    ``describe``) and, for multiple choice, the correct letter."""

    prompt: str
    prefix: str
    target: str
    task: str
    letter: str | None = None
    kind: str = "mc"
    question: str = ""
    candidates: tuple = ()
    answer: str = ""

    def variant(self, kind: str) -> "QA":
        """The same question open-ended (``open``) or with its answer given away (``hint``)."""
        if kind == "open":
            return QA(self.question, "", self.answer, self.task, None, "open", self.question)
        hinted = f"{self.question} {HINT.format(self.answer)}"
        return QA(format_mc_question(hinted, list(self.candidates)), self.prefix, self.target, self.task,
                  self.letter, "hint", self.question, self.candidates, self.answer)


def shift_clock(text: str, offset: float) -> str:
    h, m, s = (int(x) for x in text.split(":"))
    return clock(h * 3600 + m * 60 + s + offset)


def clip_questions(tl, seed: int, offset: float) -> list[QA]:
    """Every multiple-choice question ``tl`` supports (up to two per task) and its description."""
    out = []
    for q in make_questions(tl, seed, per_task=2):
        candidates, answer = list(q["candidates"]), q["answer"]
        if q["question_type"] == "grounding":
            candidates = [shift_clock(c, offset) for c in candidates]
            answer = shift_clock(answer, offset)
        mark = letter(candidates.index(answer))
        out.append(QA(format_mc_question(q["question"], candidates), MC_ANSWER_PREFIX, f"{mark}) {answer}",
                      q["question_type"], mark, "mc", q["question"], tuple(candidates), answer))
    out.append(QA(DESCRIBE, "", describe(tl, 0.0, tl.duration), "describe", kind="describe"))
    return out


def make_clip(seed: int, chunks: int, offset: float, dense: bool = True, count_targets: int | None = None):
    """(frames uint8 ``[T, 126, 224, 3]``, times ``[T]`` s, questions, token labels int64
    ``[T/2, 4, 8, 3]``) of one clip of ``chunks`` chunks; the labels are those of
    :func:`~vidqa.synth.token_labels.token_labels` on the model's 4x8 merged cells.
    ``count_targets``: see :func:`~vidqa.synth.timeline.make_timeline`."""
    duration = chunks * CHUNK
    tl = make_timeline(seed, duration, count_targets=count_targets, **(DENSE if dense else {}))
    frames = np.stack([render_frame(tl, float(t), RENDER_WIDTH, RENDER_HEIGHT) for t in range(duration)])
    times = np.arange(duration, dtype=np.float64) + offset
    labels = token_labels(tl, np.arange(duration, dtype=np.float64), *TOKEN_GRID)
    return frames, times, clip_questions(tl, seed, offset), labels


def batch_layout(rng: random.Random, held_out: bool = False, max_chunks: int = MAX_CHUNKS,
                 count_share: float = COUNT_SHARE) -> dict:
    """The shared part of a batch: chunk count, time offset and position gaps.

    ``max_chunks`` above :data:`MAX_CHUNKS` makes :data:`LONG_CLIP_SHARE` of the training batches
    long and every held-out one (the long evaluation); ``count_share``: the share of training
    batches whose clips hold pairs shown 1-6 times; at the defaults the draws are those of every
    earlier stage."""
    chunks = rng.randint(1, MAX_CHUNKS)
    if max_chunks > MAX_CHUNKS and (held_out or rng.random() < LONG_CLIP_SHARE):
        chunks = rng.randint(MAX_CHUNKS + 1, max_chunks)
    far = rng.random() < 0.7
    return {
        "chunks": chunks,
        "offset": float(rng.randrange(0, 3 * 3600 - chunks * CHUNK, 2)) if far else 0.0,
        "gap": rng.randrange(0, 20_000) if far and rng.random() < 0.7 else 0,
        "chunk_gaps": [rng.randrange(0, 2_000) if far and rng.random() < 0.5 else 0 for _ in range(chunks)],
        "question_gap": rng.randrange(0, 4_000) if far and rng.random() < 0.5 else 0,
        "dense": held_out or rng.random() < 0.75,
        # Counts of 4-6, as an hour gives, in half the training batches. Random clips count 1-3
        # (stop 19: 86% of count answers were 1, and the model answered 3 for every count of an hour).
        # Held-out batches stay as they were, comparable across stages (and draw nothing more).
        "count_targets": None if held_out else (COUNT_TARGETS_IN_CLIPS if rng.random() < count_share else None),
    }


def pick_questions(batch: dict, rng: random.Random, per_clip: int = QUESTIONS_PER_CLIP) -> dict:
    """``batch`` with the rows of ``per_clip`` multiple-choice questions per clip -- each asked as it
    is, open-ended and hinted -- and the description half of the time (always when a clip has no
    question); a batch trained on twice is asked different questions each time."""
    qa = []
    for questions in batch["all_qa"]:
        mc = [q for q in questions if q.kind == "mc"]
        rng.shuffle(mc)
        keep = [row for q in mc[:per_clip] for row in (q, q.variant("open"), q.variant("hint"))]
        if rng.random() < 0.5 or not keep:
            keep.append(questions[-1])
        qa.append(keep)
    return {**batch, "qa": qa}


class ClipBatches(torch.utils.data.IterableDataset):
    """Endless batches ``{"frames": uint8 [B, T, 126, 224, 3], "times": [T], "qa": [[QA]], "all_qa",
    "token_labels": int64 [B, T/2, 4, 8, 3], layout...}``: ``qa`` is one :func:`pick_questions` draw
    of ``all_qa``, every question of each clip.

    Each worker draws from its own generator (``seed``, worker id), so a run is reproducible for a
    given worker count.
    """

    def __init__(self, seed: int, held_out: bool = False, frames_per_batch: int = FRAMES_PER_BATCH,
                 questions_per_clip: int = QUESTIONS_PER_CLIP, max_chunks: int = MAX_CHUNKS,
                 count_share: float = COUNT_SHARE):
        self.seed, self.held_out, self.frames_per_batch = seed, held_out, frames_per_batch
        self.questions_per_clip, self.max_chunks, self.count_share = questions_per_clip, max_chunks, count_share

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        rng = random.Random(self.seed * 1000 + (info.id if info else 0))
        base = HELD_OUT_SEED_BASE if self.held_out else 0
        while True:
            layout = batch_layout(rng, self.held_out, self.max_chunks, self.count_share)
            n = max(1, self.frames_per_batch // (layout["chunks"] * CHUNK))
            clips = [make_clip(base + rng.randrange(HELD_OUT_SEED_BASE), layout["chunks"], layout["offset"],
                               layout["dense"], layout["count_targets"]) for _ in range(n)]
            batch = {"frames": torch.from_numpy(np.stack([c[0] for c in clips])), "times": clips[0][1],
                     "all_qa": [c[2] for c in clips], "token_labels": torch.from_numpy(np.stack([c[3] for c in clips])),
                     **layout}
            yield pick_questions(batch, rng, self.questions_per_clip)


class HintedRows(torch.utils.data.IterableDataset):
    """Endless lists of ``rows`` hinted multiple-choice questions (no video needed): the letter-lookup
    warm-up of the trainer. On CPU the language model alone went from chance (25%) to 53% letter
    accuracy on them in 750 steps of 48 rows, while two video runs of ~1,000 steps stayed at chance."""

    def __init__(self, seed: int, rows: int = 256):
        self.seed, self.rows = seed, rows

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        rng = random.Random(self.seed * 1000 + 500 + (info.id if info else 0))
        pool: list[QA] = []
        while True:
            while len(pool) < self.rows:
                seed = rng.randrange(HELD_OUT_SEED_BASE)
                tl = make_timeline(seed, CHUNK * rng.randint(1, MAX_CHUNKS), **DENSE)
                pool += [q.variant("hint") for q in clip_questions(tl, seed, float(rng.randrange(0, 3 * 3600, 2)))
                         if q.kind == "mc"]
            rng.shuffle(pool)
            yield pool[:self.rows]
            del pool[:self.rows]

