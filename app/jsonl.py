"""Append-only JSON Lines that survive ``kill -9``: the batch evaluator's record of work done.

Contract:

* :class:`JsonlAppender` writes one object per line and, before returning, flushes it and
  ``fsync``\\ s the file, so a row it returned from is on disk; rows are never rewritten.
* A process killed while writing leaves at most one *torn* line at the end of the file (no
  closing newline: ``json.dumps`` escapes every newline inside strings, so ``\\n`` only ever ends
  a whole row). :func:`read_jsonl` ignores it; opening an appender cuts it off first, so the next
  row starts on a clean line and the torn row is simply redone.
* :func:`write_json_atomic` / :func:`write_jsonl_atomic` replace a whole file at once (temporary
  file + ``os.replace``): readers see the old or the new content, never half of it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path


def read_jsonl(path: str | Path) -> list[dict]:
    """The complete rows of ``path`` (none if it does not exist).

    Only lines ended by a newline count; a line that does not parse as a JSON object is skipped
    (it can only be debris from a crash mid-write, since whole rows are written at once).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    rows = []
    for line in data[: data.rfind(b"\n") + 1].splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def cut_torn_tail(path: str | Path) -> int:
    """Truncates ``path`` after its last newline; returns the number of bytes cut (0 if none)."""
    path = Path(path)
    if not path.exists():
        return 0
    with open(path, "r+b") as f:
        size = f.seek(0, os.SEEK_END)
        # Scan back in blocks for the last newline: rows can be long, files can be large.
        pos, keep = size, 0
        while pos > 0:
            step = min(pos, 1 << 16)
            f.seek(pos - step)
            block = f.read(step)
            i = block.rfind(b"\n")
            if i >= 0:
                keep = pos - step + i + 1
                break
            pos -= step
        if keep != size:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
        return size - keep


class JsonlAppender:
    """Appends rows to ``path`` durably (see module docstring). Use as a context manager."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.torn_bytes = cut_torn_tail(self.path)
        new = not self.path.exists()
        self._f = open(self.path, "a", encoding="utf-8")
        if new:
            _fsync_dir(self.path.parent)  # the file's name is durable too, not only its bytes

    def append(self, row: dict) -> None:
        self._f.write(json.dumps(row, ensure_ascii=False, default=_jsonable) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_json_atomic(path: str | Path, obj) -> None:
    write_text_atomic(Path(path), json.dumps(obj, indent=1, ensure_ascii=False, default=_jsonable) + "\n")


def write_jsonl_atomic(path: str | Path, rows: Iterable[dict]) -> None:
    write_text_atomic(Path(path), "".join(json.dumps(r, ensure_ascii=False, default=_jsonable) + "\n" for r in rows))


def write_text_atomic(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` so that a reader sees the old file or the new one, never a part:
    a temporary file beside it, fsynced, renamed over it, and the folder fsynced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems do not fsync folders; the data itself is already synced
        pass
    finally:
        os.close(fd)


def _jsonable(value):
    """Non-JSON values an answerer may hand back (tuples are fine; numpy/torch scalars are not)."""
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
