"""Long video on one GPU with a 7B-class model: vidqa against native transformers (issue #11).

    source bench/device_env.sh && python3 bench/gpu.py            # on the GPU, one run of ~540 s
    python bench/gpu.py --smoke                                    # tiny model, CPU, every code path

Real-size architecture from its published config (``--config``; ``--family`` picks Qwen2.5-VL or
LLaVA-OneVision) with random bf16 weights: weights change neither speed nor memory. Synthetic 720p
H.264 videos at 1 fps are generated on the device (``--minutes``, default 10, 60 and 240), frames
are capped at ``--frame-pixels`` (448x448) before the vision tower, and one run measures, printing
each result as a JSON line the moment it exists:

1. video generation (rendered and encoded in parallel segments; not part of ingest);
2. vidqa ingest per video length: wall time split into decode wait / preprocessing / vision tower /
   LLM prefill / offload to host (+ quantize) / other, x real time, peak GPU memory in total
   (weights included) and above the weights, host RSS, visual tokens stored and attended per
   question, time to first token of a first question and the median of follow-ups, decode tokens/s;
3. native transformers (processor + ``model.generate``, 1 new token) against vidqa on the same
   frames at equal frame counts, and the native path's out-of-memory point;
4. a profile of the reference ingest against the device's physical limits: FLOPs of the vision
   tower and the LLM prefill counted from the configs and the shapes actually run, the bf16 matmul
   throughput and host<->device copy bandwidth measured in the same run, time-at-limit per stage.

``--time-budget`` (seconds from the start of the process) decides what is measured: tasks run in
order of importance (reference-length vidqa, native equal-frame comparison, the other lengths
longest first, the native OOM search, the profile's device measurements) and a task whose estimated
time does not fit in what is left is reported as skipped. The markdown table goes to
``bench/results/gpu_<device>.md`` and, when ``OUT`` is set, to ``$OUT/gpu.md`` with the JSON lines
in ``$OUT/gpu.jsonl``; both are rewritten after every result, so a killed run leaves what it had.

The script imports the installed ``vidqa`` and never puts the checkout on ``sys.path`` (the
checkout's ``vidqa/`` folder is not the whole package; ``bench/device_env.sh`` sets PYTHONSAFEPATH).
This file is the command line and the order of the run; the parts are its sibling modules:
``gpu_video`` (parallel video generation), ``gpu_models`` (random-weight models from the specs),
``gpu_stages`` + ``gpu_measure`` (the vidqa and native runs), ``gpu_budget`` (time budget and
estimates), ``gpu_flops`` + ``gpu_profile`` (FLOPs and the device's limits), ``gpu_report`` +
``gpu_markdown`` (JSON lines and markdown), ``gpu_device`` (sync and memory readings).
"""

from __future__ import annotations

import time

_T0 = time.monotonic()  # the time budget counts from here, before torch is imported

import argparse  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

# The benchmark's modules sit beside this file. Python puts a script's folder on sys.path, but not
# under PYTHONSAFEPATH (which bench/device_env.sh sets so that the checkout's vidqa/ cannot shadow
# the installed package) nor when a test loads this file by path: bench/ goes back on, never the
# checkout's root.
_BENCH = str(Path(__file__).resolve().parent)
if _BENCH not in sys.path:
    sys.path.insert(0, _BENCH)

import torch  # noqa: E402
from gpu_budget import PROFILE_S, SAFETY_NATIVE, Budget, Estimates  # noqa: E402
from gpu_device import cuda_sync, free_memory, gpu_gib  # noqa: E402
from gpu_markdown import markdown, minutes_label, speedup  # noqa: E402
from gpu_measure import native_run, vidqa_run  # noqa: E402
from gpu_models import StockVision, build  # noqa: E402
from gpu_profile import profile_record  # noqa: E402
from gpu_report import Report  # noqa: E402
from gpu_video import VIDEO_FPS, VideoFactory, cached_video_ok  # noqa: E402

from vidqa.config import MemoryConfig  # noqa: E402
from vidqa.vlm.loading import adapter_class, default_device, default_dtype  # noqa: E402

WARM_CHUNKS = 6  # a warm-up ingest's chunks: groups of 1, 2, 2, 1 (vidqa/encode_groups.py)
SMOKE = dict(config=None, minutes=[0.5, 1, 2], reference_minutes=1, native_frames=[8, 16], oom_frames=[24, 32],
             native_cap_s=60.0, frame_pixels=64 * 64, matmul_n=256, new_tokens=8,
             gen_workers=2, equal_repeats=2)  # 2 workers: the pool path, at CPU size; 2 runs: the median path


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="bench/configs/qwen2_5_vl_7b.json", help="JSON spec of the architecture")
    ap.add_argument("--family", default="qwen2_5_vl", choices=["qwen2_5_vl", "llava_onevision"])
    ap.add_argument("--minutes", type=float, nargs="+", default=[10, 60, 240], help="video lengths")
    ap.add_argument("--reference-minutes", type=float, default=60,
                    help="the length measured first, compared with native and profiled")
    ap.add_argument("--native-frames", type=int, nargs="+", default=[256, 768], help="equal-frame comparison")
    ap.add_argument("--equal-repeats", type=int, default=3,
                    help="native and vidqa runs per equal frame count, alternating; the median speed-up is reported")
    ap.add_argument("--oom-frames", type=int, nargs="+", default=[1536, 2304, 3600, 5400, 7200],
                    help="native frame counts tried in order until one fails")
    ap.add_argument("--native-cap-s", type=float, default=240.0, help="skip a native attempt estimated longer")
    ap.add_argument("--oom-cap-gib", type=float, default=None,
                    help="run the native out-of-memory search as on a GPU of this much memory "
                         "(torch.cuda.set_per_process_memory_fraction)")
    ap.add_argument("--frame-pixels", type=int, default=448 * 448)
    ap.add_argument("--full-size-read", action="store_true",
                    help="frames leave the decoder at the file's size and the processor, on the GPU, resizes them "
                         "(vidqa's default --max-pixels); default: scaled to --frame-pixels while decoding, "
                         "on the CPU (--max-pixels); both paths read alike")
    ap.add_argument("--chunk-frames", type=int, default=16)
    ap.add_argument("--kv-bits", type=int, default=8)
    ap.add_argument("--token-budget", type=int, default=8192)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--time-budget", type=float, default=540.0, help="seconds from process start")
    ap.add_argument("--gen-workers", type=int, default=max(1, min(14, (os.cpu_count() or 2) - 2)))
    ap.add_argument("--matmul-n", type=int, default=8192)
    ap.add_argument("--workdir", default="/tmp/vidqa-bench")
    ap.add_argument("--results", default=None, help="markdown path (default bench/results/gpu_<device>.md)")
    ap.add_argument("--smoke", action="store_true", help="tiny model, tiny video, CPU-sized everything")
    if ap.parse_known_args(argv)[0].smoke:
        ap.set_defaults(**SMOKE)  # flags given explicitly still win
    args = ap.parse_args(argv)
    args.size = (128, 72) if args.smoke else (1280, 720)
    args.read_pixels = None if args.full_size_read else args.frame_pixels  # what the decoder scales to
    if args.reference_minutes not in args.minutes:
        args.minutes = [args.reference_minutes, *args.minutes]
    return args


def result_paths(args, workdir: Path, device_name: str) -> tuple[list[Path], list[Path]]:
    """Where the markdown and the JSON lines go: ``--results`` (smoke: the workdir; else
    ``bench/results/gpu_<device>[_<config>].md``), and ``$OUT/gpu.md`` + ``$OUT/gpu.jsonl`` when set."""
    if args.results:
        md = [Path(args.results)]
    elif args.smoke:
        md = [workdir / "gpu_smoke.md"]
    else:
        stem = Path(args.config).stem
        suffix = "" if stem == "qwen2_5_vl_7b" else f"_{stem}"
        md = [Path(_BENCH) / "results" / f"gpu_{device_name.replace(' ', '_')}{suffix}.md"]
    jsonl = []
    if os.environ.get("OUT"):
        out = Path(os.environ["OUT"])
        md.append(out / "gpu.md")
        jsonl.append(out / "gpu.jsonl")
    return md, jsonl


class Run:
    """One benchmark run: the model, the videos made so far, and the estimates that what was
    measured feeds; :meth:`run` measures in order of importance (see the module docstring)."""

    def __init__(self, args, budget: Budget, workdir: Path, factory: VideoFactory):
        self.args, self.budget, self.workdir, self.factory = args, budget, workdir, factory
        self.device = default_device()
        self.device_name = torch.cuda.get_device_name() if self.device == "cuda" else "cpu"
        self.report = Report(*result_paths(args, workdir, self.device_name), elapsed=budget.elapsed)
        self.seconds_of = {m: int(round(m * 60)) for m in args.minutes}
        self.jobs: dict[float, dict] = {}  # generation submitted, by minutes
        self.videos: dict[float, Path] = {}  # generated, by minutes
        self.estimates = Estimates(args.new_tokens)
        self.reference_shapes: dict = {}  # what the reference ingest's stages ran on (for the profile)
        self.native_warmed = False

    # ---------------------------------------------------------------- helpers
    def guarded(self, task: str, fn, *a, **kw):
        """Runs one measurement; an unexpected failure is reported and the run goes on."""
        try:
            return fn(*a, **kw)
        except Exception as err:  # noqa: BLE001
            self.report.add("error", task=task, error=f"{type(err).__name__}: {str(err)[:400]}",
                            traceback=traceback.format_exc()[-2000:])
            free_memory()
            return None

    def submit_video(self, m: float) -> None:
        self.jobs[m] = self.factory.submit(self.seconds_of[m])

    def finish_video(self, m: float) -> Path:
        g = self.factory.finish(self.jobs[m])
        self.report.add("video", **g)
        if not g["cached"]:
            self.estimates.generation_rates.append(g["wall_s"] / g["frames"])
        self.videos[m] = Path(g["path"])
        return self.videos[m]

    def build_model(self) -> None:
        """The model from ``--config`` (or the tiny one) on the device; reports the setup."""
        import platform

        import transformers

        args = self.args
        t0 = time.perf_counter()
        dtype = default_dtype(self.device)
        self.model, self.processor = build(args.config, args.family, args.frame_pixels, self.device, dtype)
        cuda_sync()
        build_s = time.perf_counter() - t0
        self.weights_gib = gpu_gib(peak=False) if self.device == "cuda" else sum(
            p.numel() * p.element_size() for p in self.model.parameters()) / 2**30
        tc = self.model.config.get_text_config()
        name = "bench/" + (Path(args.config).stem if args.config else f"tiny-{args.family}")
        self.adapter = adapter_class(args.family)(self.model, self.processor, name)
        self.stock_vision = StockVision(self.model, args.family)  # before vidqa's first encode rewrites the tower
        self.report.add(
            "setup", device=self.device_name, model=name, dtype=str(dtype).removeprefix("torch."),
            torch=torch.__version__, transformers=transformers.__version__, python=platform.python_version(),
            video_size=f"{args.size[0]}x{args.size[1]}", frame_pixels=args.frame_pixels,
            read_pixels=args.read_pixels,
            chunk_frames=args.chunk_frames, window_chunks=MemoryConfig.window_chunks, kv_bits=args.kv_bits,
            token_budget=args.token_budget, new_tokens=args.new_tokens, build_s=build_s,
            weights_gib=self.weights_gib, params=sum(p.numel() for p in self.model.parameters()),
            time_budget_s=args.time_budget, cpu_count=os.cpu_count(), gen_workers=self.factory.workers,
            llm_layers=tc.num_hidden_layers)

    def vidqa(self, video: Path, num_frames: int | None, stages: bool = False) -> tuple[dict, dict]:
        return vidqa_run(self.adapter, video, num_frames, self.args, self.workdir, self.weights_gib, stages)

    def native(self, video: Path, num_frames: int) -> dict:
        with self.stock_vision:  # transformers' own tower, not vidqa's rewrites of it
            rec = native_run(self.model, self.processor, self.args.family, video, num_frames, self.args.read_pixels)
        self.warm_vidqa(video)
        return rec

    def warm_vidqa(self, video: Path) -> None:
        """A short vidqa ingest, not reported: vidqa's state as a long-running process has it. The stock
        tower's swap moves the tower's weights, which drops vidqa's vision CUDA graphs
        (``vlm/vision_graph.py``); without this the next vidqa run would pay their capture. Six chunks
        see both graph sizes (a lone chunk and a pair) twice."""
        if self.args.family == "qwen2_5_vl":
            self.guarded("warm-up", self.vidqa, video, WARM_CHUNKS * self.args.chunk_frames)

    # ---------------------------------------------------------------- measurements
    def measure_vidqa(self, m: float, reference: bool = False) -> dict:
        """vidqa on the ``m``-minute video as a user runs it (the wall times), then, if the budget allows,
        once more with the stages timed (the breakdown; synchronising the device at every stage
        boundary stops the host from running ahead, so that ingest takes longer: ``staged_ingest_s``)."""
        rec, shapes = self.vidqa(self.videos[m], None)
        if self.budget.fits(rec["ingest_s"] * 1.2 + 10):
            staged, shapes = self.vidqa(self.videos[m], None, stages=True)
            rec.update(stages=staged["stages"], staged_ingest_s=staged["ingest_s"],
                       offload_background_s=staged["offload_background_s"])
        if reference:
            self.reference_shapes.update(shapes)
        return self.report.add("vidqa", minutes=m, reference=reference, **rec)

    def equal_frames(self, video: Path) -> None:
        """Native and vidqa on the same ``--native-frames`` frames of ``video``."""
        for n in self.args.native_frames:
            est = self.estimates.native(n) + self.estimates.vidqa(n)  # the first run; repeats if they fit
            if not self.budget.fits(est, SAFETY_NATIVE):
                self.report.skip("native_equal", f"needs ~{est:.0f} s, {self.budget.left():.0f} s left", frames=n,
                                 label=str(n))
                continue
            self.guarded(f"native vs vidqa {n} frames", self.native_vs_vidqa, n, video)

    def native_vs_vidqa(self, n: int, video: Path) -> dict:
        """``--equal-repeats`` alternating native and vidqa runs on ``n`` frames, as many as fit the budget
        at the first run's measured time; the record holds the run of the median speed-up (time to
        first answer, native over vidqa) and every run's."""
        if not self.native_warmed:  # first native call: processor and generate paths warmed, not reported
            self.native(video, 8)
            self.native_warmed = True
        runs = []
        for _ in range(max(1, self.args.equal_repeats)):
            t0 = time.monotonic()
            nat = self.native(video, n)
            ours, _ = self.vidqa(video, n)
            runs.append((speedup(nat, ours), nat, ours))
            if nat["status"] != "ok":
                break  # out of memory (or an error) does not change on a second try
            if not self.budget.fits(time.monotonic() - t0, SAFETY_NATIVE):
                break
        if runs[0][1]["status"] == "ok":
            self.estimates.native_points.append((runs[0][1]["frames"], runs[0][1]["total_s"]))
        ordered = sorted(runs, key=lambda r: r[0])
        _, nat, ours = ordered[(len(ordered) - 1) // 2]
        return self.report.add("native_equal", frames=n, native=nat, vidqa=ours,
                               speedups=[round(r[0], 3) for r in runs])

    def other_lengths(self, ref_m: float) -> None:
        """The lengths other than the reference, longest first; a video not made yet is made now."""
        for m in sorted((m for m in self.args.minutes if m != ref_m), reverse=True):
            if m in self.jobs and m not in self.videos:
                continue  # its generation failed (reported)
            seconds = self.seconds_of[m]
            frames = seconds * VIDEO_FPS
            made = m in self.jobs or cached_video_ok(self.factory.path(seconds), seconds)
            est = (0.0 if made else self.estimates.generation(frames)) + self.estimates.vidqa(frames)
            if not self.budget.fits(est):
                self.report.skip("vidqa", f"needs ~{est:.0f} s, {self.budget.left():.0f} s left", minutes=m,
                                 label=minutes_label(m))
                continue
            if m not in self.jobs:
                self.submit_video(m)
                if self.guarded(f"generate {minutes_label(m)}", self.finish_video, m) is None:
                    continue
            self.guarded(f"vidqa {minutes_label(m)}", self.measure_vidqa, m)

    def native_oom_search(self) -> None:
        """Native on more and more frames until one attempt fails, is estimated past the cap, or does not
        fit; with ``--oom-cap-gib``, on that much GPU memory only."""
        cap = self.args.oom_cap_gib
        if cap and self.device == "cuda":
            total = torch.cuda.get_device_properties(0).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, cap * 2**30 / total))
        try:
            self._native_oom_tries(cap)
        finally:
            if cap and self.device == "cuda":
                torch.cuda.set_per_process_memory_fraction(1.0)

    def _native_oom_tries(self, cap: float | None) -> None:
        args, report = self.args, self.report
        for n in args.oom_frames:
            source = next((self.videos[m] for m in sorted(self.videos) if self.seconds_of[m] * VIDEO_FPS >= n), None)
            if source is None:
                report.skip("native_oom", "no generated video has that many frames", frames=n, label=str(n))
                continue
            est = self.estimates.native(n)
            if est > args.native_cap_s:
                report.skip("native_oom", f"estimated {est:.0f} s > cap {args.native_cap_s:.0f} s", frames=n,
                            label=str(n))
                break
            if not self.budget.fits(est + PROFILE_S / SAFETY_NATIVE, SAFETY_NATIVE):
                report.skip("native_oom", f"needs ~{est:.0f} s, {self.budget.left():.0f} s left", frames=n,
                            label=str(n))
                break
            nat = self.guarded(f"native {n} frames", self.native, source, n)
            if nat is None:
                break
            report.add("native_oom", cap_gib=cap, **nat)
            if nat["status"] != "ok":
                break
            self.estimates.native_points.append((nat["frames"], nat["total_s"]))

    def profile(self, ref_m: float) -> None:
        """Device limits measured now, FLOPs of the reference ingest."""
        ref = self.estimates.reference
        if ref is None:
            self.report.skip("profile", "the reference ingest was not measured")
        elif ref.get("stages") is None:
            self.report.skip("profile", "the reference ingest's stages were not timed (time budget)")
        elif not self.budget.fits(PROFILE_S, 1.0):
            self.report.skip("profile", f"{self.budget.left():.0f} s left")
        else:
            self.guarded("profile", self.measure_profile, ref, ref_m)

    def measure_profile(self, ref: dict, ref_m: float) -> dict:
        return self.report.add("profile", minutes=ref_m, **profile_record(
            ref, self.reference_shapes, self.model, self.args.family, self.args.matmul_n, self.device))

    # ---------------------------------------------------------------- the run
    def run(self) -> Report:
        args = self.args
        ref_m = args.reference_minutes
        # The reference video and the shorter ones are made while the model is built; longer ones when
        # they are about to be measured (so that a skipped measurement costs no generation).
        for m in sorted((m for m in args.minutes if m <= ref_m), key=lambda m: m != ref_m):
            self.submit_video(m)
        self.build_model()
        ref_video = self.finish_video(ref_m)  # without it nothing can be measured: a failure ends the run
        for m in self.jobs:
            if m != ref_m:
                self.guarded(f"generate {minutes_label(m)}", self.finish_video, m)

        # warm-up: kernels, Triton compilation, allocator, vision graphs (not reported)
        self.guarded("warm-up", self.vidqa, ref_video, WARM_CHUNKS * args.chunk_frames)

        # 1. the reference length
        self.estimates.reference = self.guarded(f"vidqa {minutes_label(ref_m)}", self.measure_vidqa, ref_m, True)

        # 2. native vs vidqa at equal frame counts
        self.equal_frames(ref_video)

        # 3. the other lengths, longest first
        self.other_lengths(ref_m)
        self.factory.close()  # no more videos to make

        # 4. native out-of-memory search
        self.native_oom_search()

        # 5. profile
        self.profile(ref_m)
        self.report.add("done", elapsed_s=self.budget.elapsed())
        print(markdown(self.report), flush=True)
        return self.report


def main(argv=None) -> Report:
    args = parse_args(argv)
    budget = Budget(args.time_budget, _T0)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    factory = VideoFactory(work, *args.size, scale=4, workers=args.gen_workers)  # forks: before CUDA
    threads = torch.get_num_threads()
    if args.smoke:
        torch.set_num_threads(1)  # the tiny model's ops are microseconds: threads only add waiting
    try:
        return Run(args, budget, work, factory).run()
    finally:
        factory.close()
        torch.set_num_threads(threads)


if __name__ == "__main__":
    main()
