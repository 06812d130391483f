"""Batch evaluation on MLVU-format question sets: ``vidqa eval`` / ``python -m vidqa.app.evaluate``.

    vidqa eval ../shared/mlvu_dev --video-root /data/MLVU/video --out runs/mlvu --model Qwen/Qwen2.5-VL-7B-Instruct
    torchrun --nproc-per-node 4 -m vidqa.app.evaluate QUESTIONS --video-root DIR --out DIR --model NAME
    vidqa eval QUESTIONS --video-root DIR --out DIR --model NAME --launcher torchrun --nproc 4

Thin over :class:`~vidqa.pipeline.VideoQA` (``ingest(video)``, ``ask(memory, question, options)``);
any object with those two methods can be evaluated (``--qa-factory``, tests).

* Questions of one video share one ingest: they are grouped by the video's full path (MLVU reuses
  file names across task folders), and one memory is held at a time.
* Every answer is appended to ``<out>/samples_rank<r>.jsonl`` at once, flushed and fsynced
  (:mod:`vidqa.app.jsonl`). Rerunning the same command skips every question already there
  (keyed by the stable question id of :mod:`vidqa.app.mlvu`); a torn last line from a kill is cut
  off first. So a run killed at any moment loses at most the question in flight and never
  answers one twice. Failed questions (a user error such as an unreadable video) are recorded
  with ``error`` and count as wrong; ``--retry-errors`` answers them again, the new row wins.
* Under ``torchrun`` (``WORLD_SIZE > 1``) videos are sharded across ranks by annotated duration
  (deterministic), each rank writes its own JSONL, and rank 0 merges after a gloo barrier and
  writes the summary (:mod:`vidqa.app.eval_outputs`). Each rank uses GPU ``LOCAL_RANK``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from vidqa.app.eval_outputs import write_outputs
from vidqa.app.jsonl import JsonlAppender, read_jsonl, write_json_atomic
from vidqa.app.mlvu import Question, load_mlvu
from vidqa.app.scoring import Judge, is_correct, summarize
from vidqa.errors import ConfigError, DataError, VidqaError
from vidqa.mcq import letter, parse_choice

MC_MAX_NEW_TOKENS = 16      # lmms-eval's mlvu_dev setting; the reply is "B) option text"
OPEN_MAX_NEW_TOKENS = 512   # summaries and sub-scene captions are paragraphs
# Ranks wait for the slowest one at the barrier; one rank may own a 9-hour video more than the others.
DIST_TIMEOUT = timedelta(hours=48)
RANK_FILE = "samples_rank{rank}.jsonl"


# ---------------------------------------------------------------------- sharding
def shard_videos(questions: list[Question], rank: int, world: int) -> list[Question]:
    """The questions of the videos given to ``rank``: longest video first to the least-loaded rank
    (ties by rank), so ranks finish together; deterministic for the same questions and world.
    A video without an annotated duration weighs as much as its number of questions minutes."""
    if world <= 1:
        return list(questions)
    weight: dict[str, float] = {}
    for q in questions:
        weight[q.video] = max(weight.get(q.video, 0.0), q.duration or 0.0)
    if not all(weight.values()):
        counts: dict[str, int] = {}
        for q in questions:
            counts[q.video] = counts.get(q.video, 0) + 1
        weight = {v: w or 60.0 * counts[v] for v, w in weight.items()}
    load = [0.0] * world
    owner: dict[str, int] = {}
    for video in sorted(weight, key=lambda v: (-weight[v], v)):
        r = min(range(world), key=lambda i: (load[i], i))
        owner[video] = r
        load[r] += weight[video]
    return [q for q in questions if owner[q.video] == rank]


def first_per_task(questions: list[Question], n: int) -> list[Question]:
    """The first ``n`` questions of each task, in their order (``--limit``, as lmms-eval's)."""
    taken: dict[str, int] = {}
    out = []
    for q in questions:
        if taken.get(q.task, 0) < n:
            taken[q.task] = taken.get(q.task, 0) + 1
            out.append(q)
    return out


# ---------------------------------------------------------------------- one question's row
def answer_record(q: Question, answer=None, error: str | None = None, rank: int = 0) -> dict:
    """The JSONL row of one question: what was asked, what came back, whether it is right."""
    row = {"doc_id": q.qid, "task": q.task, "video": q.video, "question": q.question, "options": q.candidates,
           "answer": q.answer, "target_index": q.target_index, "multiple_choice": q.multiple_choice,
           "source": q.source, "index": q.index}
    if error is not None or answer is None:
        row.update(prediction=None, choice_index=None, choice=None, correct=False, spans=[], tokens={},
                   timings={}, error=error or "no answer")
    else:
        text = getattr(answer, "text", "") or ""
        choice = None
        if q.multiple_choice:
            choice = getattr(answer, "choice_index", None)
            if isinstance(choice, bool) or not (isinstance(choice, int) and 0 <= choice < len(q.candidates)):
                choice = parse_choice(text, q.candidates)  # an answerer that does not parse itself
        row.update(prediction=text, choice_index=choice, choice=letter(choice) if choice is not None else None,
                   correct=is_correct(choice, q.candidates, q.answer),
                   spans=[list(s) for s in (getattr(answer, "spans", None) or [])],
                   tokens=dict(getattr(answer, "tokens", None) or {}),
                   timings=dict(getattr(answer, "timings", None) or {}))
    row.update(rank=rank, finished=round(time.time(), 3))
    return row


# ---------------------------------------------------------------------- answering one shard
def answer_shard(questions: list[Question], qa, out_dir: Path, rank: int = 0, world: int = 1,
                 progress: bool = True, max_new_tokens: int = MC_MAX_NEW_TOKENS,
                 open_max_new_tokens: int = OPEN_MAX_NEW_TOKENS, retry_errors: bool = False) -> int:
    """Answers this rank's questions not yet recorded in ``out_dir``; returns how many it answered."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mine = shard_videos(questions, rank, world)
    with JsonlAppender(out_dir / RANK_FILE.format(rank=rank)) as journal:
        done = _recorded(out_dir, retry_errors)
        todo = [q for q in mine if q.qid not in done]
        by_video: dict[str, list[Question]] = {}
        for q in todo:
            by_video.setdefault(q.video, []).append(q)
        bar = _Progress(len(mine), [done[q.qid] for q in mine if q.qid in done], rank, progress)
        answered = 0
        try:
            for video, qs in by_video.items():
                memory = error = None  # drop the last video's memory before building the next
                try:
                    memory = qa.ingest(video, progress=bar.ingest)
                except VidqaError as err:
                    error = _one_line(err)
                for q in qs:
                    if error is None:
                        try:
                            limit = max_new_tokens if q.multiple_choice else open_max_new_tokens
                            ans = qa.ask(memory, q.question, options=q.candidates, max_new_tokens=limit)
                            row = answer_record(q, ans, rank=rank)
                        except VidqaError as err:
                            row = answer_record(q, error=_one_line(err), rank=rank)
                    else:
                        row = answer_record(q, error=error, rank=rank)
                    journal.append(row)
                    answered += 1
                    bar.step(row)
        finally:
            bar.close()
    return answered


def _recorded(out_dir: Path, retry_errors: bool) -> dict[str, dict]:
    """qid -> row for every question some rank already answered (any world size, any earlier run)."""
    done: dict[str, dict] = {}
    for path in sorted(out_dir.glob("samples_rank*.jsonl")):
        for row in read_jsonl(path):
            qid = row.get("doc_id")
            if isinstance(qid, str) and not (retry_errors and row.get("error")):
                done[qid] = row
    return done


def _one_line(err: Exception) -> str:
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text}"[:500]


class _Progress:
    """tqdm bar on stderr: questions done, accuracy so far (multiple choice), ETA, ingest state."""

    def __init__(self, total: int, previous: list[dict], rank: int, enabled: bool):
        self.correct = sum(bool(r.get("correct")) for r in previous if r.get("multiple_choice", True))
        self.scored = sum(1 for r in previous if r.get("multiple_choice", True))
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=len(previous), desc=f"eval[rank {rank}]" if rank else "eval",
                            unit="q", file=sys.stderr, dynamic_ncols=True, position=rank)
            self._postfix()

    def ingest(self, done: int, total: int, info: dict | None = None) -> None:
        if self.bar is not None and total:
            self._postfix(ingest=f"{100 * done // total}%")

    def step(self, row: dict) -> None:
        if row.get("multiple_choice", True):
            self.scored += 1
            self.correct += bool(row.get("correct"))
        if self.bar is not None:
            self.bar.update(1)
            self._postfix()

    def _postfix(self, **extra) -> None:
        acc = f"{100 * self.correct / self.scored:.1f}%" if self.scored else "-"
        self.bar.set_postfix(acc=acc, **extra, refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ---------------------------------------------------------------------- merge and summary
def merge_rows(out_dir: Path, questions: list[Question]) -> dict[str, dict]:
    """One row per question id from every rank's journal: an answer beats an error, later beats earlier."""
    wanted = {q.qid for q in questions}
    rows: dict[str, dict] = {}
    for path in sorted(Path(out_dir).glob("samples_rank*.jsonl")):
        for row in read_jsonl(path):
            qid = row.get("doc_id")
            if qid in wanted and (qid not in rows or not row.get("error") or rows[qid].get("error")):
                rows[qid] = row
    return rows


def merge_and_summarize(out_dir: Path, questions: list[Question], model: str, judge: Judge | None = None,
                        config: dict | None = None, started: float | None = None) -> dict:
    """Merges the ranks' rows, writes :mod:`vidqa.app.eval_outputs`' files, returns the summary."""
    rows = merge_rows(out_dir, questions)
    summary = summarize([rows[q.qid] for q in questions if q.qid in rows], judge)
    summary.update(model=model, missing=len(questions) - len(rows), complete=len(rows) == len(questions))
    write_outputs(Path(out_dir), questions, rows, summary, model, config=config, started=started)
    return summary


def evaluate(questions: list[Question], qa, out_dir, *, model: str = "custom", rank: int = 0, world: int = 1,
             barrier: Callable[[], None] | None = None, judge: Judge | None = None, progress: bool = True,
             max_new_tokens: int = MC_MAX_NEW_TOKENS, open_max_new_tokens: int = OPEN_MAX_NEW_TOKENS,
             retry_errors: bool = False, config: dict | None = None) -> dict | None:
    """Answers this rank's share of ``questions`` (resuming whatever ``out_dir`` holds), waits at
    ``barrier`` for the other ranks, and on rank 0 merges and writes the summary, which it returns
    (other ranks return None)."""
    started = time.time()
    out_dir = Path(out_dir)
    _check_run_manifest(out_dir, model, rank)
    answer_shard(questions, qa, out_dir, rank, world, progress=progress, max_new_tokens=max_new_tokens,
                 open_max_new_tokens=open_max_new_tokens, retry_errors=retry_errors)
    if barrier is not None:
        barrier()
    if rank != 0:
        return None
    return merge_and_summarize(out_dir, questions, model, judge, config=config, started=started)


def _check_run_manifest(out_dir: Path, model: str, rank: int) -> None:
    """An output folder holds one model's answers: resuming into another model's run would mix them."""
    path = out_dir / "run.json"
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError):
        previous = None
    if isinstance(previous, dict) and previous.get("model") not in (None, model):
        raise ConfigError(f"{out_dir} holds a run of model {previous['model']!r}, not {model!r}; "
                          "use another --out folder")
    if previous is None and rank == 0:
        write_json_atomic(path, {"model": model, "created": time.time()})


# ---------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    from vidqa.app.cli import _add_model_flags

    p = argparse.ArgumentParser(
        prog="vidqa eval", description="Batch evaluation on MLVU-format question files (resumable: rerun the "
                                       "same command to continue a stopped run).")
    p.add_argument("questions", help="an MLVU-format JSON file, or a folder of them (e.g. MLVU's data/)")
    p.add_argument("--video-root", help="folder holding <json file stem>/<video>, as MLVU lays it out "
                                        "(default: videos are beside each JSON file)")
    p.add_argument("--out", required=True, help="output folder; rerun with the same one to resume")
    p.add_argument("--tasks", nargs="+", metavar="TASK", help="only these question types (e.g. plotQA count)")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N questions of each task (as lmms-eval)")
    p.add_argument("--max-new-tokens", type=int, default=MC_MAX_NEW_TOKENS,
                   help=f"answer length for multiple choice (default {MC_MAX_NEW_TOKENS})")
    p.add_argument("--open-max-new-tokens", type=int, default=OPEN_MAX_NEW_TOKENS,
                   help=f"answer length for open-ended tasks (default {OPEN_MAX_NEW_TOKENS})")
    p.add_argument("--retry-errors", action="store_true", help="answer again the questions that failed")
    p.add_argument("--launcher", choices=["none", "torchrun"], default="none",
                   help="torchrun: start --nproc processes (one per GPU) that share the videos")
    p.add_argument("--nproc", type=int, default=1, help="processes for --launcher torchrun (default 1)")
    p.add_argument("--judge", metavar="MODULE:CALLABLE",
                   help="score open-ended answers with judge(row) -> float | None (default: stored unscored)")
    p.add_argument("--qa-factory", metavar="MODULE:CALLABLE",
                   help="build the answerer with this callable instead of VideoQA (custom systems, tests)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    _add_model_flags(p)
    return p


def evaluate_main(argv: list[str] | None = None, qa_factory: Callable[[], object] | None = None) -> int:
    """``vidqa eval``. ``qa_factory`` (tests) replaces ``VideoQA``; prints the summary as one JSON line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.launcher == "torchrun" and "WORLD_SIZE" not in os.environ:
        return _relaunch_under_torchrun(argv, args.nproc)
    for flag in ("limit", "max_new_tokens", "open_max_new_tokens", "nproc"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} must be at least 1")

    questions = load_mlvu(args.questions, args.video_root, args.tasks)
    report = questions.report
    if report.videos and report.videos_missing == report.videos:
        example = questions[0].video
        raise DataError(f"none of the {report.videos} videos exist (e.g. {example}); "
                        f"{'check --video-root' if args.video_root else 'give --video-root'}")
    if args.limit:
        questions = first_per_task(questions, args.limit)
    judge = _load_callable(args.judge, "--judge") if args.judge else None
    if qa_factory is None and args.qa_factory:
        qa_factory = _load_callable(args.qa_factory, "--qa-factory")

    rank, world, local_rank = (int(os.environ.get(k, d)) for k, d in
                               (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)))
    barrier = None
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("gloo", timeout=DIST_TIMEOUT)
        barrier = dist.barrier
    try:
        if rank == 0:
            for line in report.lines():
                print(f"vidqa eval: {line}", file=sys.stderr)
        qa, model, config = _build_answerer(args, qa_factory, world, local_rank)
        summary = evaluate(questions, qa, Path(args.out), model=model, rank=rank, world=world, barrier=barrier,
                           judge=judge, progress=not args.no_progress, max_new_tokens=args.max_new_tokens,
                           open_max_new_tokens=args.open_max_new_tokens, retry_errors=args.retry_errors,
                           config=config)
        if summary is not None:
            keep = ("model", "m_avg", "accuracy", "pooled_accuracy", "questions", "missing", "errors",
                    "open_ended_unscored", "g_avg")
            print(json.dumps({k: summary[k] for k in keep}))
        if barrier is not None:
            barrier()  # rank 0 has written the summary before anyone leaves
    finally:
        if world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
    return 0


def _build_answerer(args, qa_factory, world: int, local_rank: int):
    if qa_factory is not None:
        qa = qa_factory()
        return qa, getattr(qa, "model_name", None) or args.model or "custom", {"qa_factory": args.qa_factory}
    from vidqa.app.settings import FLAG_SETTINGS, resolve

    flags = {k: getattr(args, k, None) for k in FLAG_SETTINGS if k != "max_new_tokens"}
    flags["config"] = args.config
    settings = resolve(flags)
    device = settings.device
    if world > 1 and device in (None, "cuda"):
        import torch

        if torch.cuda.is_available():  # one GPU per rank, as torchrun numbers them
            device = f"cuda:{local_rank % torch.cuda.device_count()}"
            torch.cuda.set_device(device)
    from vidqa.pipeline import VideoQA

    qa = VideoQA(model=settings.model, config=settings.config, device=device)
    config = {k: v for k, v in flags.items() if v is not None}
    return qa, qa.model_name, config


def _relaunch_under_torchrun(argv: list[str], nproc: int) -> int:
    import subprocess

    if nproc < 1:
        raise ConfigError("--nproc must be at least 1")
    rest, skip = [], 0
    for i, arg in enumerate(argv):  # the workers must not relaunch themselves
        if skip:
            skip -= 1
        elif arg in ("--launcher", "--nproc"):
            skip = 1
        elif not arg.startswith(("--launcher=", "--nproc=")):
            rest.append(arg)
    # --standalone: a private rendezvous on a free port, so parallel runs on one host do not collide.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "vidqa.app.evaluate", *rest]
    return subprocess.call(cmd)


def _load_callable(spec: str, flag: str):
    module, _, name = spec.partition(":")
    if not module or not name:
        raise ConfigError(f"{flag} wants MODULE:CALLABLE, got {spec!r}")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"{flag} {spec}: cannot import ({err})") from err
    if not callable(fn):
        raise ConfigError(f"{flag} {spec} is not callable")
    return fn


if __name__ == "__main__":
    from vidqa.app.cli import _run

    sys.exit(_run(lambda: evaluate_main(), "--debug" in sys.argv))
