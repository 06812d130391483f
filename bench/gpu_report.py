"""The GPU benchmark's record of results: every measured (or skipped) result is a dict with a
``section``, printed as a JSON line the moment it exists and written, with the markdown, to every
target after each addition (so a killed run leaves what it had)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from gpu_markdown import markdown

# temporary file + os.replace: a reader of the results never sees half a file
from vidqa.app.jsonl import write_text_atomic as write_atomic


def _json_default(x):
    if isinstance(x, (np.integer, np.floating)):
        return x.item()
    return str(x)


def json_line(record: dict) -> str:
    return json.dumps(record, default=_json_default)


class Report:
    """Results in the order they were added; ``elapsed()`` stamps each with its ``t_s`` (seconds of the run)."""

    def __init__(self, md_paths: list[Path], jsonl_paths: list[Path], elapsed: Callable[[], float]):
        self.records: list[dict] = []
        self.md_paths, self.jsonl_paths, self.elapsed = md_paths, jsonl_paths, elapsed

    def add(self, section: str, **fields) -> dict:
        rec = {"section": section, "t_s": round(self.elapsed(), 1), **fields}
        self.records.append(rec)
        print(json_line(rec), flush=True)
        self.write()
        return rec

    def skip(self, section: str, reason: str, **fields) -> dict:
        return self.add(section, skipped=True, reason=reason, **fields)

    def of(self, section: str) -> list[dict]:
        return [r for r in self.records if r["section"] == section]

    def write(self) -> None:
        text = markdown(self)
        lines = "".join(json_line(r) + "\n" for r in self.records)
        for path in self.md_paths:
            write_atomic(path, text + "\n")
        for path in self.jsonl_paths:
            write_atomic(path, lines)
