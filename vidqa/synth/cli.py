"""``vidqa synth``: write a synthetic video, its timeline and its MLVU-format questions."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vidqa.synth.questions import make_questions
from vidqa.synth.render import write_video
from vidqa.synth.timeline import make_timeline


def generate(out: Path, duration: float, seed: int, fps: float = 1.0, width: int = 448, height: int = 252,
             per_task: int = 2, name: str = "video.mp4") -> dict:
    """Writes ``video.mp4``, ``timeline.json`` and ``questions.json`` into ``out``; returns paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timeline = make_timeline(seed, duration)
    video = write_video(timeline, out / name, fps=fps, width=width, height=height)
    (out / "timeline.json").write_text(timeline.to_json())
    questions = make_questions(timeline, seed, video=name, per_task=per_task)
    (out / "questions.json").write_text(json.dumps(questions, indent=1))
    return {"video": str(video), "timeline": str(out / "timeline.json"), "questions": str(out / "questions.json"),
            "num_questions": len(questions)}


def synth_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vidqa synth", description=__doc__)
    p.add_argument("--duration", type=float, default=600.0, help="seconds (default 600)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--fps", type=float, default=1.0)
    p.add_argument("--width", type=int, default=448)
    p.add_argument("--height", type=int, default=252)
    p.add_argument("--per-task", type=int, default=2, help="questions per task type")
    args = p.parse_args(argv)
    if args.duration < 8:
        p.error("--duration must be at least 8 seconds")
    result = generate(Path(args.out), args.duration, args.seed, args.fps, args.width, args.height, args.per_task)
    print(json.dumps(result))
    return 0
