"""Batch evaluation on MLVU-format question sets: ``vidqa eval`` / ``python -m vidqa.app.evaluate``.

    vidqa eval ../shared/mlvu_dev --video-root /data/MLVU/video --out runs/mlvu --model Qwen/Qwen2.5-VL-7B-Instruct
    torchrun --nproc-per-node 4 -m vidqa.app.evaluate QUESTIONS --video-root DIR --out DIR --model NAME

* Questions of one video share one ingest (grouped by the video's full path).
* Every answer is appended to ``samples_rank<r>.jsonl`` at once, flushed and fsynced; a rerun skips
  what is there (a torn last line from a kill is cut off first), so a killed run loses at most the
  question in flight and never answers one twice.
* Under ``torchrun`` (``WORLD_SIZE > 1``) videos are sharded across ranks (gloo, CPU or GPU), each rank
  writes its own JSONL and rank 0 merges after a barrier.
* The summary (``results.json``) has per-task accuracy and M-Avg; lmms-eval-shaped copies go to
  ``<model>/<date>_results.json`` and ``<model>/<date>_samples_<task>.jsonl``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from vidqa.app.mlvu import Question, load_mlvu
from vidqa.app.scoring import summarize
from vidqa.errors import VidqaError


# ---------------------------------------------------------------------- resumable JSONL
def read_jsonl(path: Path, repair: bool = False) -> list[dict]:
    """Rows of ``path``; a torn (unterminated or unparsable) last line is dropped, and with
    ``repair`` cut off the file so that appending continues cleanly."""
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    rows = []
    for line in data[:end].splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn line in the middle can only come from a crash mid-write
    if repair and end != len(data):
        with open(path, "r+b") as f:
            f.truncate(end)
    return rows


def append_jsonl(f, row: dict) -> None:
    f.write(json.dumps(row, ensure_ascii=False) + "\n")
    f.flush()
    os.fsync(f.fileno())


# ---------------------------------------------------------------------- distributed helpers
def dist_info() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def shard_videos(questions: list[Question], rank: int, world: int) -> list[Question]:
    """The questions of the videos assigned to ``rank`` (videos sorted, dealt round-robin)."""
    videos = sorted({q.video for q in questions})
    mine = {v for i, v in enumerate(videos) if i % world == rank}
    return [q for q in questions if q.video in mine]


# ---------------------------------------------------------------------- the run
def answer_record(q: Question, answer=None, error: str | None = None) -> dict:
    row = {"doc_id": q.qid, "task": q.task, "video": q.video, "question": q.question,
           "options": q.candidates, "answer": q.answer, "multiple_choice": q.multiple_choice,
           "target_index": q.target_index}
    if error is not None:
        row.update(prediction=None, choice_index=None, correct=False, error=error)
        return row
    choice = answer.choice_index
    row.update(prediction=answer.text, choice_index=choice, spans=answer.spans, tokens=answer.tokens,
               timings=answer.timings,
               # Right when the chosen option's text is the answer: duplicates of it count too.
               correct=bool(q.multiple_choice and choice is not None and q.candidates[choice] == q.answer))
    return row


def evaluate(questions: list[Question], qa, out_dir: Path, rank: int = 0, world: int = 1,
             progress: bool = True, max_new_tokens: int | None = None) -> list[dict]:
    """Answers this rank's share of ``questions`` not yet in ``out_dir``; returns this rank's rows."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"samples_rank{rank}.jsonl"
    done = {r["doc_id"] for p in out_dir.glob("samples_rank*.jsonl") for r in read_jsonl(p, repair=p == path)}
    todo = [q for q in shard_videos(questions, rank, world) if q.qid not in done]
    by_video: dict[str, list[Question]] = {}
    for q in todo:
        by_video.setdefault(q.video, []).append(q)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc=f"eval[{rank}]", file=sys.stderr, dynamic_ncols=True)
    correct = answered = 0
    with open(path, "a", encoding="utf-8") as f:
        for video, qs in by_video.items():
            memory, error = None, None
            try:
                memory = qa.ingest(video)
            except VidqaError as err:
                error = f"{type(err).__name__}: {err}"
            for q in qs:
                if memory is None:
                    row = answer_record(q, error=error)
                else:
                    try:
                        kwargs = {"max_new_tokens": max_new_tokens} if max_new_tokens else {}
                        ans = qa.ask(memory, q.question, options=q.candidates, **kwargs)
                        row = answer_record(q, ans)
                    except VidqaError as err:
                        row = answer_record(q, error=f"{type(err).__name__}: {err}")
                append_jsonl(f, row)
                if q.multiple_choice:
                    answered += 1
                    correct += row["correct"]
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(acc=f"{100 * correct / max(1, answered):.1f}%", refresh=False)
    if bar is not None:
        bar.close()
    return read_jsonl(path)


def merge_and_summarize(out_dir: Path, questions: list[Question], model: str,
                        judge: Callable[[dict], float] | None = None) -> dict:
    """Merges every rank's rows (one per question id), writes the summary files, returns the summary."""
    wanted = {q.qid for q in questions}
    rows: dict[str, dict] = {}
    for p in sorted(out_dir.glob("samples_rank*.jsonl")):
        for r in read_jsonl(p):
            if r["doc_id"] in wanted:
                rows.setdefault(r["doc_id"], r)
    records = [rows[q.qid] for q in questions if q.qid in rows]
    summary = summarize(records, judge)
    summary.update(model=model, missing=len(wanted) - len(records))
    (out_dir / "results.json").write_text(json.dumps(summary, indent=1))
    _write_lmms_eval_shape(out_dir, model, records, summary)
    return summary


def _write_lmms_eval_shape(out_dir: Path, model: str, records: list[dict], summary: dict) -> None:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    folder = out_dir / model.replace("/", "__")
    folder.mkdir(parents=True, exist_ok=True)
    results = {"results": {"mlvu": {"m_avg": summary["m_avg"], **{f"{t},acc": a for t, a in summary["accuracy"].items()}}},
               "n-samples": summary["counts"], "config": {"model": model}}
    (folder / f"{stamp}_results.json").write_text(json.dumps(results, indent=1))
    by_task: dict[str, list[dict]] = {}
    for r in records:
        by_task.setdefault(r["task"], []).append(r)
    for task, rows in by_task.items():
        with open(folder / f"{stamp}_samples_{task}.jsonl", "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps({
                    "doc_id": r["doc_id"], "input": r["question"], "target": r["answer"],
                    "filtered_resps": [r.get("prediction")],
                    "doc_hash": hashlib.sha256(r["doc_id"].encode()).hexdigest(),
                    "acc": float(bool(r.get("correct")))}, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vidqa eval", description="Batch evaluation on MLVU-format question files.")
    p.add_argument("questions", help="an MLVU-format JSON file or a folder of them")
    p.add_argument("--video-root", help="folder holding <task folder>/<video> (default: beside the JSON file)")
    p.add_argument("--out", required=True, help="output folder (rerun the same command to resume)")
    p.add_argument("--model", help="model name (as for vidqa ask)")
    p.add_argument("--device", help="cuda, cpu, ...")
    p.add_argument("--config", help="YAML/TOML settings file")
    p.add_argument("--limit", type=int, help="only the first N questions")
    p.add_argument("--tasks", nargs="+", help="only these question types")
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--launcher", choices=["none", "torchrun"], default="none",
                   help="torchrun: re-launch under torchrun with --nproc processes")
    p.add_argument("--nproc", type=int, default=1, help="processes for --launcher torchrun")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--qa-factory", metavar="MODULE:CALLABLE",
                   help="build the answerer by calling this instead of VideoQA (custom systems, tests)")
    return p


def evaluate_main(argv: list[str] | None = None, qa_factory: Callable | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.launcher == "torchrun" and "WORLD_SIZE" not in os.environ:
        import subprocess

        rest = list(argv if argv is not None else sys.argv[1:])
        for flag in ("--launcher", "--nproc"):  # the children run as plain ranks
            if flag in rest:
                i = rest.index(flag)
                rest = rest[:i] + rest[i + 2:]
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={args.nproc}",
               "-m", "vidqa.app.evaluate", *rest]
        return subprocess.call(cmd)
    questions, report = load_mlvu(args.questions, args.video_root, args.tasks)
    if args.limit:
        questions = questions[: args.limit]
    rank, world = dist_info()
    group = None
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("gloo")
        group = dist
    if qa_factory is None and args.qa_factory:
        import importlib

        module, _, name = args.qa_factory.partition(":")
        qa_factory = getattr(importlib.import_module(module), name)
    if qa_factory is None:
        from vidqa.app.settings import resolve
        from vidqa.pipeline import VideoQA

        settings = resolve({"config": args.config, "model": args.model, "device": args.device})
        qa = VideoQA(model=settings.model, config=settings.config, device=settings.device)
        model_name = qa.model_name
    else:
        qa = qa_factory()
        model_name = args.model or "custom"
    out = Path(args.out)
    if rank == 0:
        print(f"loaded {report.questions} questions from {report.files} file(s); "
              f"{report.answer_not_in_candidates} answers not among candidates, "
              f"{report.duplicate_candidates} with duplicate candidates", file=sys.stderr)
    evaluate(questions, qa, out, rank, world, progress=not args.no_progress, max_new_tokens=args.max_new_tokens)
    if group is not None:
        group.barrier()
    if rank == 0:
        summary = merge_and_summarize(out, questions, model_name)
        print(json.dumps({k: summary[k] for k in ("m_avg", "accuracy", "questions", "missing", "errors")}))
    if group is not None:
        group.barrier()
        group.destroy_process_group()
    return 0


if __name__ == "__main__":
    from vidqa.app.cli import _run

    sys.exit(_run(lambda: evaluate_main(), "--debug" in sys.argv))
