"""``vidqa synth``: write a synthetic video, its timeline and its MLVU-format questions.

    vidqa synth --duration 3600 --seed 7 --out DIR [--fps 1] [--width 448 --height 252] [--per-task N]
                [--name video.mp4] [--count-targets N]

writes ``DIR/video.mp4`` (or ``--name``), ``DIR/timeline.json`` and ``DIR/questions.json`` and prints one JSON line
with their paths and the number of questions. Same arguments, same bytes (video aside: x264 output
is deterministic for one build, not across builds).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vidqa.errors import ConfigError
from vidqa.synth.questions import make_questions
from vidqa.synth.timeline import make_timeline
from vidqa.synth.writer import write_video


def generate(out: Path, duration: float, seed: int, fps: float = 1.0, width: int = 448, height: int = 252,
             per_task: int = 2, name: str = "video.mp4", count_targets: int | None = None) -> dict:
    """Writes the video, ``timeline.json`` and ``questions.json`` into ``out``; returns their paths.
    ``count_targets``: (colour, shape) pairs held back and shown 1-6 times each (default: as
    :func:`~vidqa.synth.timeline.make_timeline` decides, which is none in videos under ~40 minutes)."""
    if per_task < 1:
        raise ConfigError(f"--per-task must be at least 1, got {per_task}")
    if count_targets is not None and count_targets < 0:
        raise ConfigError(f"--count-targets must be 0 or more, got {count_targets}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timeline = make_timeline(seed, duration, count_targets=count_targets)
    questions = make_questions(timeline, seed, video=name, per_task=per_task)
    video = write_video(timeline, out / name, fps=fps, width=width, height=height)
    (out / "timeline.json").write_text(timeline.to_json() + "\n")
    (out / "questions.json").write_text(json.dumps(questions, indent=1) + "\n")
    return {"video": str(video), "timeline": str(out / "timeline.json"), "questions": str(out / "questions.json"),
            "num_questions": len(questions)}


def synth_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vidqa synth", description="Generate a synthetic long video with "
                                "MLVU-format questions whose answers are known.")
    p.add_argument("--duration", type=float, default=600.0, help="seconds (default 600, at least 8)")
    p.add_argument("--seed", type=int, default=0, help="non-negative; the same seed gives the same world")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--fps", type=float, default=1.0)
    p.add_argument("--width", type=int, default=448)
    p.add_argument("--height", type=int, default=252)
    p.add_argument("--per-task", type=int, default=2, help="questions per task type (default 2)")
    p.add_argument("--name", default="video.mp4", help="file name of the video (also the questions' 'video')")
    p.add_argument("--count-targets", type=int, default=None,
                   help="pairs held back and shown 1-6 times each, for counting (default: 4 in long videos, "
                        "none in short ones)")
    args = p.parse_args(argv)
    if Path(args.name).name != args.name or not args.name.endswith(".mp4"):
        raise ConfigError(f"--name must be a plain file name ending in .mp4, got {args.name!r}")
    result = generate(Path(args.out), args.duration, args.seed, args.fps, args.width, args.height, args.per_task,
                      name=args.name, count_targets=args.count_targets)
    print(json.dumps(result))
    return 0
