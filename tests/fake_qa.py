"""A deterministic stand-in for ``vidqa.pipeline.VideoQA`` for the batch-evaluation tests.

It follows the interface the evaluator codes against (``ingest(video, progress=None)``,
``ask(memory, question, options=None, max_new_tokens=..., stream=None) -> Answer``) without
importing torch, so the subprocesses that the kill/resume and torchrun tests start come up fast.
Its choice is a hash of the question, so two runs, or two ranks, give the same answers.

Environment (read per call, for subprocesses): ``FAKE_QA_SLEEP`` seconds per question,
``FAKE_QA_INGEST_LOG`` a file that gets one ``<pid> <video>`` line per ingest.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field

from vidqa.errors import QuestionError, VideoError


@dataclass
class FakeAnswer:
    text: str
    choice_index: int | None = None
    spans: list = field(default_factory=list)
    tokens: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)


def fake_choice(question: str, n_options: int) -> int:
    return int(hashlib.sha256(question.encode()).hexdigest(), 16) % n_options


class FakeQA:
    """Answers by hashing the question. ``bad_videos``: ingest raises VideoError for these paths;
    ``bad_questions``: ask raises QuestionError; ``parse``: set ``choice_index`` itself (as VideoQA
    does) or leave it None and only reply with text."""

    def __init__(self, bad_videos=(), bad_questions=(), parse: bool = True):
        self.ingested: list[str] = []
        self.asked: list[tuple[str, str]] = []
        self.bad_videos, self.bad_questions, self.parse = set(bad_videos), set(bad_questions), parse

    def ingest(self, video, progress=None):
        video = str(video)
        if video in self.bad_videos:
            raise VideoError(f"cannot decode {video}")
        if progress is not None:
            progress(1, 2, {})
            progress(2, 2, {})
        self.ingested.append(video)
        log = os.environ.get("FAKE_QA_INGEST_LOG")
        if log:
            with open(log, "a") as f:
                f.write(f"{os.getpid()} {video}\n")
        return {"video": video}

    def ask(self, memory, question, options=None, max_new_tokens=64, stream=None):
        time.sleep(float(os.environ.get("FAKE_QA_SLEEP", "0")))
        if question in self.bad_questions:
            raise QuestionError("the question is unusable")
        self.asked.append((memory["video"], question))
        if not options:
            return FakeAnswer(text=f"about {question}", spans=[(0.0, 1.0)], tokens={"generated": 3},
                              timings={"total": 0.0})
        choice = fake_choice(question, len(options))
        return FakeAnswer(text=f"{chr(65 + choice)}) {options[choice]}", choice_index=choice if self.parse else None,
                          spans=[(0.0, 1.0)], tokens={"visual_attended": 1, "generated": 2},
                          timings={"ingest": 0.0, "ttft": 0.0, "total": 0.0})


def make() -> FakeQA:
    return FakeQA()
