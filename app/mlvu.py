"""Loading MLVU-format question files (the real MLVU dev set and vidqa's synthetic sets).

Format (Zhou et al., 2024, repository ``JUNJIE99/MLVU``, ``data/<n>_<task>.json``): a JSON list of
``{"video", "duration", "question", "candidates"?, "answer", "question_type", "scoring_points"?}``.
Videos live in one folder per file: ``<video_root>/<file stem>/<video>``; the same file name can
occur in several task folders, so a question's video is keyed by its full path.

Traps handled: ``answer`` is option *text*; a few answers are not among their candidates (kept,
flagged, never counted correct); duplicate candidates (the first occurrence is the target, and
choosing any copy of the answer text is right). Anything malformed raises one
:class:`~vidqa.errors.DataError` naming the file and the item.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from vidqa.errors import DataError

OPEN_ENDED_TYPES = {"subPlot", "summary"}


@dataclass
class Question:
    qid: str
    task: str
    video: str  # full path (or the bare name when no video root applies)
    question: str
    candidates: list[str] | None
    answer: str
    duration: float | None
    source: str
    scoring_points: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def multiple_choice(self) -> bool:
        return self.candidates is not None

    @property
    def target_index(self) -> int | None:
        if self.candidates is None or self.answer not in self.candidates:
            return None
        return self.candidates.index(self.answer)


@dataclass
class LoadReport:
    files: int = 0
    questions: int = 0
    per_task: Counter = field(default_factory=Counter)
    answer_not_in_candidates: int = 0
    duplicate_candidates: int = 0


def question_id(task: str, video: str, question: str, candidates) -> str:
    blob = json.dumps([task, video, question, candidates], ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _video_path(item_video: str, file: Path, video_root: Path | None) -> str:
    if video_root is None:
        return str((file.parent / item_video).resolve())
    per_task = video_root / file.stem / item_video
    if per_task.exists() or not (video_root / item_video).exists():
        return str(per_task)
    return str(video_root / item_video)


def load_file(file: Path, video_root: Path | None = None, report: LoadReport | None = None) -> list[Question]:
    report = report or LoadReport()
    try:
        items = json.loads(Path(file).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{file}: cannot read ({err})") from err
    except json.JSONDecodeError as err:
        raise DataError(f"{file}: not valid JSON (line {err.lineno}: {err.msg})") from err
    if not isinstance(items, list):
        raise DataError(f"{file}: expected a JSON list of questions, got {type(items).__name__}")
    out = []
    for i, item in enumerate(items):
        where = f"{file}: item {i}"
        if not isinstance(item, dict):
            raise DataError(f"{where}: expected an object")
        for key in ("video", "question", "answer", "question_type"):
            if not isinstance(item.get(key), (str, int, float)) or isinstance(item.get(key), bool):
                raise DataError(f"{where}: missing or invalid {key!r}")
        candidates = item.get("candidates")
        if candidates is not None:
            if not isinstance(candidates, list) or len(candidates) < 2 or \
                    not all(isinstance(c, (str, int, float)) and not isinstance(c, bool) for c in candidates):
                raise DataError(f"{where}: 'candidates' must be a list of at least 2 strings")
            candidates = [str(c) for c in candidates]
        duration = item.get("duration")
        if duration is not None and (isinstance(duration, bool) or not isinstance(duration, (int, float))):
            raise DataError(f"{where}: 'duration' must be a number")
        task, video, question, answer = (str(item["question_type"]), str(item["video"]),
                                         str(item["question"]), str(item["answer"]))
        if task in OPEN_ENDED_TYPES:
            candidates = None
        path = _video_path(video, Path(file), video_root)
        q = Question(question_id(task, path if video_root else f"{Path(file).stem}/{video}", question, candidates),
                     task, path, question, candidates, answer, duration, str(file),
                     scoring_points=item.get("scoring_points"),
                     extra={k: v for k, v in item.items() if k not in {
                         "video", "question", "candidates", "answer", "question_type", "duration", "scoring_points"}})
        if candidates is not None:
            report.answer_not_in_candidates += answer not in candidates
            report.duplicate_candidates += len(set(candidates)) < len(candidates)
        report.per_task[task] += 1
        out.append(q)
    report.files += 1
    report.questions += len(out)
    return out


def load_mlvu(path, video_root=None, tasks: list[str] | None = None) -> tuple[list[Question], LoadReport]:
    """Questions of one JSON file or of every ``*.json`` in a folder (sorted), and a report."""
    path = Path(path)
    root = Path(video_root) if video_root else None
    if path.is_dir():
        files = sorted(p for p in path.glob("*.json"))
        if not files:
            raise DataError(f"{path}: no .json question files")
    elif path.exists():
        files = [path]
    else:
        raise DataError(f"{path}: no such file or folder")
    report = LoadReport()
    questions = [q for f in files for q in load_file(f, root, report)]
    if tasks:
        questions = [q for q in questions if q.task in set(tasks)]
    return questions, report
