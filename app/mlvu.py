"""Loading MLVU-format question files: the real MLVU dev set and vidqa's synthetic sets.

Format (Zhou et al., 2024, "MLVU: A Comprehensive Benchmark for Multi-Task Long Video
Understanding"; repository ``JUNJIE99/MLVU``, ``data/<n>_<task>.json``): a JSON list of objects
``{"video", "duration", "question", "candidates"?, "answer", "question_type", "scoring_points"?}``.
MLVU keeps its videos in one folder per annotation file, named after the file:
``1_plotQA.json`` -> ``<video_root>/1_plotQA/<video>``. vidqa's synthetic sets (``vidqa.synth``)
write ``questions.json`` beside ``video.mp4``; without a video root a ``video`` field is resolved
against the folder of its JSON file.

Traps of the real data, and what the loader does with them:

* ``answer`` is the option *text*, not a letter. The target letter is the one MLVU's own scorer
  uses: the **last** candidate equal to the answer (its loop does not stop at the first).
* Two ``findNeedle`` answers are not among their candidates: kept, marked (``target_index`` is
  None, never scored correct, as in MLVU's scorer) and counted in the report.
* 16 items repeat a candidate (one has four empty ones): kept as they are, counted.
* The same video file name sits in several task folders, sometimes as a different video: a
  question's video is its full path (``video``), which is also what groups questions for ingest.
* Durations are ints or floats from 180 s to 9 h; validated and kept (they balance shards).

A malformed file raises :class:`~vidqa.errors.DataError` naming the file, the item and the
reason; nothing else escapes (fuzzed in ``tests/test_mlvu.py``).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from vidqa.errors import ConfigError, DataError

KNOWN_KEYS = ("video", "duration", "question", "candidates", "answer", "question_type", "scoring_points")
MAX_FILE_BYTES = 256 << 20


@dataclass
class Question:
    """One question. ``qid`` is stable across runs, machines and video roots (the resume key)."""

    qid: str
    task: str                     # MLVU's question_type, e.g. "plotQA", "findNeedle", "summary"
    video: str                    # full path of the video file (the ingest/grouping key)
    video_name: str               # the ``video`` field as written in the file
    question: str
    candidates: list[str] | None  # None for open-ended questions
    answer: str                   # reference: option text, or the reference answer when open-ended
    duration: float | None        # seconds, as annotated
    source: str                   # the JSON file
    index: int                    # position in that file
    scoring_points: list[str] | None = None
    extra: dict = field(default_factory=dict)

    @property
    def multiple_choice(self) -> bool:
        return self.candidates is not None

    @property
    def target_index(self) -> int | None:
        """MLVU's target: the last candidate equal to the answer; None when none is."""
        if self.candidates is None:
            return None
        hits = [i for i, c in enumerate(self.candidates) if c == self.answer]
        return hits[-1] if hits else None

    @property
    def answer_in_candidates(self) -> bool:
        return self.candidates is not None and self.answer in self.candidates

    @property
    def duplicate_candidates(self) -> bool:
        return self.candidates is not None and len(set(self.candidates)) < len(self.candidates)


@dataclass
class LoadReport:
    """What the loader saw; printed by ``vidqa eval`` before it starts."""

    files: int = 0
    questions: int = 0
    per_task: Counter = field(default_factory=Counter)
    multiple_choice: int = 0
    open_ended: int = 0
    answer_not_in_candidates: int = 0
    duplicate_candidates: int = 0
    repeated_questions: int = 0   # identical items in one file (kept, told apart by their qid)
    videos: int = 0
    videos_missing: int = 0       # only counted when a video root is given or paths are local
    hours: float = 0.0            # annotated duration of the distinct videos

    def lines(self) -> list[str]:
        tasks = ", ".join(f"{t} {n}" for t, n in sorted(self.per_task.items()))
        return [f"{self.questions} questions from {self.files} file(s) ({self.multiple_choice} multiple-choice, "
                f"{self.open_ended} open-ended): {tasks}",
                f"{self.videos} videos, {self.hours:.1f} h annotated; {self.videos_missing} not found",
                f"{self.answer_not_in_candidates} answers not among their candidates (scored wrong), "
                f"{self.duplicate_candidates} with a repeated candidate, "
                f"{self.repeated_questions} repeated questions"]


class QuestionSet(list):
    """A ``list[Question]`` that also carries the :class:`LoadReport` of its loading."""

    def __init__(self, questions=(), report: LoadReport | None = None):
        super().__init__(questions)
        self.report = report or LoadReport()


def question_id(folder: str, video: str, task: str, question: str, candidates: list[str] | None) -> str:
    """A 16-hex-digit key of what a question *is*: its task folder, video name, type, wording and
    options. It does not depend on where the videos or the JSON files live, so moving either
    keeps a run resumable."""
    blob = json.dumps([folder, video, task, question, candidates], ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def load_mlvu(path_or_dir, video_root=None, tasks: list[str] | None = None) -> QuestionSet:
    """Questions of one JSON file, or of every ``*.json`` in a folder (sorted by name).

    ``video_root``: the folder holding ``<file stem>/<video>`` (MLVU's layout); when a video is
    not there but ``<video_root>/<video>`` is, the flat layout is used. Without it, videos are
    resolved against each JSON file's folder. ``tasks`` keeps only those question types (an
    unknown name is a :class:`ConfigError` listing the known ones).
    """
    path = Path(path_or_dir)
    if path.is_dir():
        files = sorted(p for p in path.glob("*.json") if p.is_file())
        if not files:
            raise DataError(f"{path}: no .json question files in this folder")
    elif path.is_file():
        files = [path]
    else:
        raise DataError(f"{path}: no such file or folder")
    root = Path(video_root) if video_root else None
    report = LoadReport()
    questions: list[Question] = []
    for file in files:
        questions += _load_file(file, root, report)
    if tasks:
        known = sorted({q.task for q in questions})
        unknown = sorted(set(tasks) - set(known))
        if unknown:
            raise ConfigError(f"unknown task(s) {', '.join(unknown)}; the files hold: {', '.join(known)}")
        questions = [q for q in questions if q.task in set(tasks)]
    _fill_report(report, questions)
    return QuestionSet(questions, report)


def _load_file(file: Path, root: Path | None, report: LoadReport) -> list[Question]:
    items = _read_json_list(file)
    out = []
    seen: Counter = Counter()
    located: dict[str, str] = {}
    for i, item in enumerate(items):
        fields = _validate(item, f"{file}: item {i}")
        video_name = fields["video"]
        if video_name not in located:
            located[video_name] = _video_path(video_name, file, root)
        qid = question_id(file.stem, video_name, fields["task"], fields["question"], fields["candidates"])
        seen[qid] += 1
        if seen[qid] > 1:  # an identical item: still a question of its own, with its own key
            report.repeated_questions += 1
            qid = f"{qid}-{seen[qid] - 1}"
        out.append(Question(
            qid=qid, task=fields["task"], video=located[video_name], video_name=video_name,
            question=fields["question"],
            candidates=fields["candidates"], answer=fields["answer"], duration=fields["duration"],
            source=str(file), index=i, scoring_points=fields["scoring_points"],
            extra={k: v for k, v in item.items() if k not in KNOWN_KEYS}))
    report.files += 1
    return out


def _read_json_list(file: Path) -> list:
    try:
        if file.stat().st_size > MAX_FILE_BYTES:
            raise DataError(f"{file}: larger than {MAX_FILE_BYTES >> 20} MiB; not a question file")
        text = file.read_bytes().decode("utf-8-sig")
    except OSError as err:
        raise DataError(f"{file}: cannot read ({err.strerror or err})") from err
    except UnicodeDecodeError as err:
        raise DataError(f"{file}: not UTF-8 text (byte {err.start})") from err
    try:
        items = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{file}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from err
    except (ValueError, RecursionError) as err:  # e.g. a 5,000-digit number, or nesting 10^5 deep
        raise DataError(f"{file}: not usable JSON ({type(err).__name__})") from err
    if isinstance(items, dict) and isinstance(items.get("questions"), list):
        items = items["questions"]
    if not isinstance(items, list):
        raise DataError(f"{file}: expected a JSON list of questions, got {type(items).__name__}")
    return items


def _text(value, where: str, key: str, allow_number: bool = False) -> str:
    if isinstance(value, str):
        return value
    if allow_number and isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return str(value)
    kind = "missing" if value is None else f"a {type(value).__name__}"
    raise DataError(f"{where}: {key!r} must be {'a string or number' if allow_number else 'a string'}, got {kind}")


def _validate(item, where: str) -> dict:
    if not isinstance(item, dict):
        raise DataError(f"{where}: expected an object, got {type(item).__name__}")
    video = _text(item.get("video"), where, "video")
    if not video.strip() or "\x00" in video:
        raise DataError(f"{where}: 'video' is empty or not a file name")
    task = _text(item.get("question_type"), where, "question_type")
    if not task.strip():
        raise DataError(f"{where}: 'question_type' is empty")
    question = _text(item.get("question"), where, "question")
    answer = _text(item.get("answer"), where, "answer", allow_number=True)
    candidates = item.get("candidates")
    if candidates is not None:
        if not isinstance(candidates, list) or not 2 <= len(candidates) <= 26:
            raise DataError(f"{where}: 'candidates' must be a list of 2 to 26 options")
        candidates = [_text(c, where, "candidates", allow_number=True) for c in candidates]
    duration = item.get("duration")
    if duration is not None:
        if isinstance(duration, bool) or not isinstance(duration, (int, float)) or \
                not math.isfinite(duration) or duration < 0:
            raise DataError(f"{where}: 'duration' must be a number of seconds >= 0")
        duration = float(duration)
    points = item.get("scoring_points")
    if points is not None:
        if isinstance(points, str):
            points = [points]
        if not isinstance(points, list) or not all(isinstance(p, str) for p in points):
            raise DataError(f"{where}: 'scoring_points' must be a list of strings")
    return {"video": video, "task": task, "question": question, "answer": answer,
            "candidates": candidates, "duration": duration, "scoring_points": points}


def _video_path(name: str, file: Path, root: Path | None) -> str:
    if root is None:
        return str((file.parent / name).absolute())
    per_task = root / file.stem / name
    if not _exists(per_task) and _exists(root / name):
        return str(root / name)
    return str(per_task)


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):  # a name too long for the file system is not a video there
        return False


def _fill_report(report: LoadReport, questions: list[Question]) -> None:
    report.questions = len(questions)
    report.per_task = Counter(q.task for q in questions)
    report.multiple_choice = sum(q.multiple_choice for q in questions)
    report.open_ended = report.questions - report.multiple_choice
    report.answer_not_in_candidates = sum(q.multiple_choice and not q.answer_in_candidates for q in questions)
    report.duplicate_candidates = sum(q.duplicate_candidates for q in questions)
    durations: dict[str, float] = {}
    for q in questions:
        durations[q.video] = max(durations.get(q.video, 0.0), q.duration or 0.0)
    report.videos = len(durations)
    report.hours = sum(durations.values()) / 3600
    report.videos_missing = sum(not _exists(Path(v)) for v in durations)
