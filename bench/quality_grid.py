"""Several models x variants of ``bench/quality.py`` at once, on the same held-out videos.

    python bench/quality_grid.py --models synth-tiny path/to/other --variants vidqa "blended retrieval" \
        --minutes 60 --videos 12 --per-task 6 --jobs 8 --out runs/grid

One ``bench/quality.py`` process per (model, variant), ``--jobs`` at a time (on a many-core GPU machine
the tiny model is bound by decoding, so parallel processes finish a grid in the time of one); the
videos are generated once, in parallel, and linked into every run's folder, so every cell answers
the same questions. Writes ``<out>/grid.md`` (one table, a row per model and variant) and
``<out>/grid.json``; each run keeps its own folder ``<out>/<model>/<variant>``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from quality import table, video_folder  # noqa: E402
from vidqa.synth.train_data import HELD_OUT_SEED_BASE  # noqa: E402


def _generate(job) -> None:
    """One video, in its own process (rendering is bound by the GIL), as ``bench/quality.py`` makes it."""
    folder, minutes, seed, per_task, count_targets = job
    subprocess.run([sys.executable, "-c", "import sys, json; sys.path.insert(0, sys.argv[1]); from quality import held_out_video; "
                    "held_out_video(sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), json.loads(sys.argv[6]))",
                    str(HERE), folder, str(minutes), str(seed), str(per_task), json.dumps(count_targets)], check=True)


def _run(item, env: dict) -> str | None:
    """One ``bench/quality.py`` run, its output in ``<run>/log.txt`` (an earlier attempt's log kept as
    ``log.1.txt``); None, or what failed with the last lines of its log, so that a caller who sees
    only the grid's own output (a remote machine's tail) learns why."""
    model, name, run, cmd = item
    log_path = run / "log.txt"
    if log_path.exists():
        log_path.replace(run / "log.1.txt")
    with open(log_path, "w") as log:
        code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    if not code:
        return None
    tail = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()][-FAILURE_LINES:]
    return f"{model} / {name}: exit {code}, see {log_path}\n" + "\n".join("    " + line for line in tail)


FAILURE_LINES = 4


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "model"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", required=True)
    ap.add_argument("--variants", nargs="*", default=[], help="bench/quality.py's named variants")
    ap.add_argument("--extra", nargs="*", default=[], metavar="NAME:key=value,...",
                    help="bench/quality.py --extra variants (MemoryConfig fields changed)")
    ap.add_argument("--minutes", type=float, nargs="+", default=[60])
    ap.add_argument("--videos", type=int, default=1)
    ap.add_argument("--per-task", type=int, default=6)
    ap.add_argument("--seed", type=int, default=HELD_OUT_SEED_BASE + 1)
    ap.add_argument("--token-budget", type=int, default=8192)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--threads", type=int, default=2, help="torch threads per run")
    ap.add_argument("--count-targets", type=int, default=None, help="as bench/quality.py's")
    ap.add_argument("--retries", type=int, default=1,
                    help="failed cells run again, one at a time, this many times (their answers resume "
                         "from the journal)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if not args.variants and not args.extra:
        ap.error("give --variants or --extra")
    out = Path(args.out)
    shared = out / "videos"
    jobs = [(str(shared / video_folder(m, k, args.count_targets)), m, args.seed + k, args.per_task, args.count_targets)
            for m in args.minutes for k in range(args.videos)]
    with ThreadPoolExecutor(max(1, min(args.jobs, len(jobs)))) as pool:
        list(pool.map(_generate, jobs))

    runs = []
    for model in args.models:
        for variant in args.variants + args.extra:
            extra = variant in args.extra
            name = variant.partition(":")[0] if extra else variant
            run = out / slug(model) / slug(name)
            run.mkdir(parents=True, exist_ok=True)
            for folder, *_ in jobs:
                link = run / Path(folder).name
                if not link.exists():
                    link.symlink_to(Path(folder).resolve(), target_is_directory=True)
            cmd = [sys.executable, str(HERE / "quality.py"), "--model", model,
                   *(["--extra", variant] if extra else ["--variants", variant]),
                   "--minutes", *[f"{m:g}" for m in args.minutes], "--videos", str(args.videos),
                   "--per-task", str(args.per_task), "--seed", str(args.seed),
                   "--token-budget", str(args.token_budget), "--out", str(run),
                   *(["--count-targets", str(args.count_targets)] if args.count_targets is not None else [])]
            runs.append((model, name, run, cmd))

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        outcome = dict(zip(range(len(runs)), pool.map(functools.partial(_run, env=env), runs)))
    # A cell that failed in the crowd is tried again alone: on a fresh GPU machine three of eleven
    # parallel cells once failed while the same cells passed after one run had gone first.
    for _ in range(max(0, args.retries)):
        for i in [i for i, line in outcome.items() if line]:
            print("retrying:", outcome[i].splitlines()[0], file=sys.stderr, flush=True)
            outcome[i] = _run(runs[i], env)
    failed = [line for line in outcome.values() if line]

    results = []
    for model, variant, run, _ in runs:
        path = run / "quality.json"
        for r in (json.loads(path.read_text()) if path.exists() else []):
            results.append({**r, "variant": f"{model}: {r['variant']}", "model": model})
    (out / "grid.json").write_text(json.dumps(results, indent=1) + "\n")
    text = (f"# Quality grid: {', '.join(args.models)}; {args.token_budget:,} visual tokens per question "
            f"(seed {args.seed})\n\n" + table(results) + "\n")
    (out / "grid.md").write_text(text)
    print(text)
    for line in failed:
        print("failed:", line, file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
