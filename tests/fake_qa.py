"""A deterministic stand-in for VideoQA used by the batch-evaluation tests (and subprocesses)."""

import hashlib
import os
import time

from vidqa.pipeline import Answer


class FakeQA:
    """Answers by hashing the question; sleeps ``FAKE_QA_SLEEP`` seconds per question."""

    def __init__(self):
        self.ingested = []

    def ingest(self, video):
        self.ingested.append(video)
        return {"video": video}

    def ask(self, memory, question, options=None, **kwargs):
        time.sleep(float(os.environ.get("FAKE_QA_SLEEP", "0")))
        h = int(hashlib.sha256(question.encode()).hexdigest(), 16)
        choice = h % len(options) if options else None
        return Answer(text=f"({chr(65 + choice)})" if options else "an answer", choice_index=choice,
                      spans=[(0.0, 1.0)], tokens={"visual_attended": 1}, timings={"total": 0.0})


def make():
    return FakeQA()
