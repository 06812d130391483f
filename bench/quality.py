"""Answer quality on held-out synthetic long videos: vidqa against the ways native VLMs see long video.

    python bench/quality.py --model synth-tiny --minutes 10 60 180 --out runs/quality
    python bench/quality.py --model tiny-random/qwen2_5_vl --minutes 1 --token-budget 64 --out /tmp/q  # smoke

For each length, one video of the synthetic world with a seed no training run uses
(:data:`vidqa.synth.train_data.HELD_OUT_SEED_BASE` and up) and its MLVU-format questions (every task
type the world supports) is answered by each variant through the batch evaluator, with the same
model and the same visual-token budget per question:

* ``vidqa``   -- the default pipeline: streaming ingest of every frame at 1 fps, block retrieval
  within ``--token-budget`` visual tokens per question;
* ``uniform`` -- what native VLMs do with long video: K frames sampled uniformly over the whole
  video, K chosen so that all their tokens fit the same budget, and all of them attended;
* ``full``    -- every frame at 1 fps and every block attended (no retrieval), where it fits;
* ablations   -- one component changed at a time: ReKV's mean-key block score, blocks scored from the
  answer position alone, no recurrent memory, no sliding window, 4-bit KV, LOOK-M compression to
  half, temporal token merging to half, and the question-aware budget (QuoTA) sharing the tokens
  between all moments of the video instead of retrieving whole blocks;
* ``blind``   -- no video at all: the question and its options alone, the floor any variant must beat
  by a wide margin on every task (a check that the questions do not give their answers away).

``--extra NAME:key=value,...`` adds variants that change ``MemoryConfig`` fields or ``choice`` (sweeps); with
``--reuse-ingest`` variants that share ingest settings ingest each video once (vidqa's memory cache
under ``<out>/memories``), so a sweep of question-time settings costs one ingest.

Per variant: per-task accuracy and M-Avg (mean of task accuracies, as MLVU defines it), how often
the findNeedle evidence reached the model and the accuracy with and without it (``quality_evidence``),
visual tokens attended per question (median), ingest seconds, per-question latency (median), peak RSS.
Writes ``<out>/quality.md`` and ``<out>/quality.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import resource
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

# quality_evidence.py sits beside this file: on the path however the script is run (see bench/gpu.py).
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality_evidence import count_in_view, needle_in_view  # noqa: E402
from vidqa.app.evaluate import evaluate  # noqa: E402
from vidqa.app.mlvu import load_mlvu  # noqa: E402
from vidqa.config import MemoryConfig, VidqaConfig, VideoConfig  # noqa: E402
from vidqa.errors import ConfigError  # noqa: E402
from vidqa.pipeline import VideoQA  # noqa: E402
from vidqa.synth.cli import generate  # noqa: E402
from vidqa.synth.questions import TASKS, make_questions  # noqa: E402
from vidqa.synth.world import Timeline  # noqa: E402
from vidqa.synth.train_data import HELD_OUT_SEED_BASE  # noqa: E402

EVERYTHING = 10**9  # a token budget that keeps every block
HELD_OUT_TASKS = TASKS


def variants(budget: int, frames_for_budget: int) -> dict[str, VidqaConfig]:
    """The configurations compared, all at ``budget`` visual tokens per question except ``full``."""
    base = VidqaConfig(memory=MemoryConfig(token_budget=budget))
    mem = base.memory
    return {
        "vidqa": base,
        # ReKV's block score (mean dot product against each grid's mean key) instead of the attention mass
        "mean-key retrieval": replace(base, memory=replace(mem, retrieval="mean")),
        # the answer position's queries alone score the blocks, not every prompt token's (SnapKV's window of 1)
        "answer-position retrieval": replace(base, memory=replace(mem, retrieval_window=1)),
        # half the block score from every prompt token's attention share, half from the answer position's
        "blended retrieval": replace(base, memory=replace(mem, answer_weight=0.5)),
        # multiple choice by the likelihood of each option's whole reply instead of the greedy reply's letter
        "likelihood choice": replace(base, choice="likelihood"),
        # no video at all (no block fits a budget of 1): what the question and its options give away
        "blind": replace(base, memory=replace(mem, token_budget=1, recent_blocks=0)),
        "uniform": replace(base, video=VideoConfig(num_frames=frames_for_budget),
                           memory=replace(mem, token_budget=EVERYTHING)),
        "full": replace(base, memory=replace(mem, token_budget=EVERYTHING)),
        "no recurrent memory": replace(base, memory=replace(mem, recurrent_tokens=0)),
        "no sliding window": replace(base, memory=replace(mem, window_chunks=0)),
        "4-bit KV": replace(base, memory=replace(mem, kv_bits=4)),
        "LOOK-M to 50%": replace(base, memory=replace(mem, compress_ratio=0.5)),
        "temporal merge to 50%": replace(base, reducers="temporal:keep_ratio=0.5"),
        # the budget shared between all moments by relevance, instead of whole blocks retrieved
        "QuoTA budget": replace(base, reducers=f"budget:token_budget={budget}"),
    }


def length_name(minutes: float, count_targets: int | None = None) -> str:
    """``2min``, or ``2min_c4`` for videos with ``count_targets`` set, which get folders of their own."""
    return f"{minutes:g}min" + (f"_c{count_targets}" if count_targets is not None else "")


def video_folder(minutes: float, k: int, count_targets: int | None = None) -> str:
    """The folder name of the ``k``-th video of a length (the first keeps the name earlier runs used):
    ``video_2min``, ``video_2min_1``, ``video_2min_c4``..."""
    return f"video_{length_name(minutes, count_targets)}" + (f"_{k}" if k else "")


def held_out_video(folder: Path, minutes: float, seed: int, per_task: int, count_targets: int | None = None) -> Path:
    """``folder`` with its video, timeline and questions, generated unless a run already did; questions
    an older generator wrote are rewritten from the timeline (the video stays: its script is the same).
    ``count_targets``: see :func:`vidqa.synth.cli.generate`."""
    folder = Path(folder)
    if not (folder / "questions.json").exists():
        generate(folder, minutes * 60, seed, per_task=per_task, count_targets=count_targets)
        return folder
    old = json.loads((folder / "questions.json").read_text())
    timeline = Timeline.from_json((folder / "timeline.json").read_text())
    video = old[0]["video"] if old else "video.mp4"
    new = make_questions(timeline, seed, video=video, per_task=per_task)
    if new != old:
        (folder / "questions.json").write_text(json.dumps(new, indent=1) + "\n")
    return folder


def extra_variant(spec: str, budget: int) -> tuple[str, VidqaConfig]:
    """``NAME:key=value,key=value`` -> the default pipeline with those ``MemoryConfig`` fields (or
    top-level ``VidqaConfig`` fields such as ``choice``) changed, values read as YAML scalars and checked
    as a config file's are, e.g. ``"b2k:token_budget=2048,answer_weight=0.5,choice=likelihood"``, for
    sweeps that the named variants do not cover."""
    import yaml

    name, sep, fields = spec.partition(":")
    pairs = [item.partition("=") for item in fields.split(",")]
    if not sep or not name or not fields or any(not eq or not key for key, eq, _ in pairs):
        raise SystemExit(f"--extra {spec!r}: expected NAME:key=value[,key=value...]")
    top = {f.name for f in dataclasses.fields(VidqaConfig)} - {"video", "memory"}
    values = {key: yaml.safe_load(value) for key, _, value in pairs}
    memory = {"token_budget": budget, **{k: v for k, v in values.items() if k not in top}}
    try:
        return name, VidqaConfig.from_dict({"memory": memory, **{k: v for k, v in values.items() if k in top}})
    except ConfigError as err:
        raise SystemExit(f"--extra {spec!r}: {err}") from err


class Recorder:
    """Wraps a :class:`VideoQA` for the evaluator and records the ingest times. With ``reuse`` the
    memories go through vidqa's own cache (the config's ``cache_dir``): a variant whose ingest settings
    an earlier one shared loads that memory instead of ingesting again (``reused`` counts them, and
    ``ingest_s`` is then load time)."""

    def __init__(self, qa: VideoQA, reuse: bool = False):
        self.qa, self.reuse, self.ingest_s, self.reused, self.last_memory = qa, reuse, [], 0, None

    def ingest(self, video, progress=None):
        t0 = time.perf_counter()
        memory = self.qa.ingest(video, progress=progress, use_cache=self.reuse)
        self.ingest_s.append(time.perf_counter() - t0)
        self.reused += bool(memory.stats.get("loaded_from_cache"))
        self.last_memory = memory
        return memory

    def ask(self, memory, question, options=None, max_new_tokens=None):
        return self.qa.ask(memory, question, options=options, max_new_tokens=max_new_tokens)


def sampled_times(config: VidqaConfig, video: str):
    """The frame times ``[K]`` (s) the pipeline samples from ``video`` with ``config``."""
    from vidqa.video import open_video, sample_times

    vc = config.video
    return sample_times(open_video(video), fps=vc.fps, num_frames=vc.num_frames, max_frames=vc.max_frames)


def run_variant(name: str, config: VidqaConfig, questions, model: str, adapter, out: Path,
                timelines: dict | None = None, memories: Path | None = None) -> dict:
    """One variant over ``questions`` (of one or more videos; ``timelines`` maps each video to its
    script, for the evidence columns)."""
    if memories is not None:
        config = replace(config, cache_dir=str(memories))
    qa = Recorder(VideoQA(model=model, config=config, adapter=adapter), reuse=memories is not None)
    summary = evaluate(questions, qa, out, model=model, progress=False)
    rows = [json.loads(line) for line in (out / "samples_rank0.jsonl").read_text().splitlines() if line.strip()]
    evidence = {}
    if timelines:
        times_of = functools.cache(lambda video: sampled_times(config, video))  # one probe per video for both
        evidence = {**needle_in_view(rows, timelines, times_of), **count_in_view(rows, timelines, times_of)}
    attended = [r["tokens"].get("visual_attended", 0) for r in rows if r.get("tokens")]
    latency = [r["timings"]["total"] for r in rows if r.get("timings")]
    # A resumed run whose answers were all journaled ingests nothing: its memory (saved, or made
    # again) still gives the stored-token and frame counts.
    memory = qa.last_memory or qa.qa.ingest(questions[-1].video)
    return {
        "variant": name, "tasks": summary["accuracy"], "m_avg": summary["m_avg"], "questions": len(rows),
        "unparsed": sum(summary["unparsed"].values()),
        "visual_attended_median": statistics.median(attended) if attended else 0,
        "visual_stored": memory.num_visual_tokens, "frames": memory.video["frames"],
        "ingest_s": round(sum(qa.ingest_s), 2), "ingest_reused": qa.reused,
        "latency_median_s": round(statistics.median(latency), 4) if latency else None,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), **evidence,
    }


def tokens_per_frame(adapter, video: str) -> float:
    """Visual tokens the model makes of one frame of ``video`` (two frames encoded, halved)."""
    from vidqa.video import read_frames

    clip = read_frames(video, num_frames=2)
    return len(adapter.encode(clip.frames, clip.times)) / len(clip.times)


def _pct(value) -> str:
    return "-" if value is None else f"{value:.0f}%"


def table(results: list[dict]) -> str:
    tasks = sorted({t for r in results for t in (r["tasks"] or {})})
    lines = ["Accuracy in % per task; replies no option could be read from count as wrong.", "",
             "| video | variant | " + " | ".join(tasks) + " | M-Avg | unparsed | needle in view | "
             "findNeedle in view / out of view | count: all in view (appearances) | count in view / not | "
             "count by true count 1-2 / 3-4 / 5+ | visual tokens attended | ingest (s) | latency (s) | peak RSS (MiB) |",
             "| --- " * (len(tasks) + 14) + "|"]
    for r in results:
        acc = [f"{r['tasks'][t]:.0f}" if t in (r["tasks"] or {}) else "-" for t in tasks]
        m_avg = f"{r['m_avg']:.1f}" if r["m_avg"] is not None else "-"
        view = (f"{_pct(r.get('needle_in_view'))} of {r['needle_questions']}" if r.get("needle_questions") else "-")
        split = f"{_pct(r.get('needle_acc_in_view'))} / {_pct(r.get('needle_acc_out_of_view'))}"
        count = (f"{_pct(r.get('count_all_in_view'))} of {r['count_questions']} "
                 f"({_pct(r.get('count_appearances_in_view'))})" if r.get("count_questions") else "-")
        count_split = f"{_pct(r.get('count_acc_all_in_view'))} / {_pct(r.get('count_acc_some_missing'))}"
        by_true = r.get("count_acc_by_true") or {}
        by_true = " / ".join(f"{_pct(by_true[b]['acc'])} of {by_true[b]['n']}" if b in by_true else "-"
                             for b in ("1-2", "3-4", "5+")) if by_true else "-"
        videos = f" x {r['videos']}" if r.get("videos", 1) > 1 else ""
        if r.get("count_targets") is not None:
            videos += f", {r['count_targets']} counted pairs"
        lines.append(f"| {r['minutes']:g} min{videos} | {r['variant']} | " + " | ".join(acc) +
                     f" | {m_avg} | {r['unparsed']} | {view} | {split} | {count} | {count_split} | {by_true} | "
                     f"{round(r['visual_attended_median']):,} | {r['ingest_s']} | {r['latency_median_s']} | {r['peak_rss_mib']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    from vidqa.vlm import load_adapter

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="synth-tiny")
    ap.add_argument("--minutes", type=float, nargs="+", default=[10, 60, 180])
    ap.add_argument("--token-budget", type=int, default=8192)
    ap.add_argument("--seed", type=int, default=HELD_OUT_SEED_BASE + 1)
    ap.add_argument("--per-task", type=int, default=3)
    ap.add_argument("--videos", type=int, default=1, help="videos per length (seeds --seed, --seed + 1, ...)")
    ap.add_argument("--variants", nargs="*", help="names to run (default: all)")
    ap.add_argument("--extra", nargs="*", default=[], metavar="NAME:key=value,...",
                    help="more variants: the default pipeline with MemoryConfig fields changed")
    ap.add_argument("--reuse-ingest", action="store_true",
                    help="variants with the same ingest settings share one ingest per video (saved under "
                         "OUT/memories); their ingest column is then load time")
    ap.add_argument("--count-targets", type=int, default=None,
                    help="pairs shown 1-6 times each in every video (default: 4 in videos of ~40 min or more, "
                         "none in shorter ones, whose count answers are then mostly 1); with it short videos "
                         "ask for the counts an hour asks for")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    out = Path(args.out)
    extra = dict(extra_variant(spec, args.token_budget) for spec in args.extra)  # checked before the model loads
    adapter = load_adapter(args.model)
    results = []
    for minutes in args.minutes:
        questions, timelines = [], {}
        for k in range(args.videos):  # the first video's folder keeps its name: earlier runs resume
            folder = held_out_video(out / video_folder(minutes, k, args.count_targets), minutes, args.seed + k,
                                    args.per_task, args.count_targets)
            video_questions = load_mlvu(folder / "questions.json", video_root=folder)
            timelines[video_questions[0].video] = Timeline.from_json((folder / "timeline.json").read_text())
            questions += video_questions
        # uniform: the even number of frames whose tokens fill the budget
        frames_for_budget = max(2, int(args.token_budget / tokens_per_frame(adapter, questions[0].video)) // 2 * 2)
        for name, config in {**variants(args.token_budget, frames_for_budget), **extra}.items():
            if (args.variants or extra) and name not in (args.variants or []) and name not in extra:
                continue
            r = run_variant(name, config, questions, args.model, adapter,
                            out / length_name(minutes, args.count_targets) / name, timelines,
                            memories=out / "memories" if args.reuse_ingest else None)
            r["minutes"], r["videos"], r["count_targets"] = minutes, args.videos, args.count_targets
            results.append(r)
            print(json.dumps(r), flush=True)
            (out / "quality.json").write_text(json.dumps(results, indent=1) + "\n")
    text = (f"# Quality on held-out synthetic videos: {args.model}, {args.token_budget:,} visual tokens per "
            f"question (seed {args.seed})\n\n" + table(results) + "\n")
    (out / "quality.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
