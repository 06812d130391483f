"""Ingest time and memory against video length, CPU, tiny model (the memory module's "Show").

    python bench/memory.py --minutes 10 60 180

For each length: generate a synthetic 1-fps video (224x126), ingest it with the tiny random Qwen2.5-VL
(chunks of 16 frames, window 2, recurrent memory 128 entries, 16-bit KV), and record ingest time, the
context each chunk attended to at most (what bounds device memory), host memory held by the memory
and the process's peak RSS, then per-question latency after ingest (median of 5 questions).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path



def main() -> None:
    from vidqa.config import VidqaConfig, VideoConfig
    from vidqa.pipeline import VideoQA
    from vidqa.synth import make_timeline, write_video

    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, nargs="+", default=[10, 60])
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vidqa-membench-"))
    qa = VideoQA(model="tiny-random/qwen2_5_vl", device="cpu",
                 config=VidqaConfig(video=VideoConfig(chunk_frames=16), cache_dir=str(work / "cache"),
                                    max_new_tokens=8))
    rows = []
    for minutes in args.minutes:
        secs = int(minutes * 60)
        video = work / f"v{secs}.mp4"
        write_video(make_timeline(3, secs), video, fps=1.0, width=224, height=126)
        t0 = time.perf_counter()
        memory = qa.ingest(video, use_cache=False)
        ingest = time.perf_counter() - t0
        lat = []
        for i in range(5):
            ans = qa.ask(memory, f"What happened in part {i}?")
            lat.append(ans.timings["total"])
        rows.append((minutes, memory.video["frames"], ingest, memory.stats["peak_context_tokens"],
                     memory.num_visual_tokens, memory.host_bytes / 2**20,
                     resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, statistics.median(lat)))
        print(rows[-1], flush=True)
    print("| video | frames | ingest (s) | frames/s | max context per chunk (tokens) | visual tokens stored | "
          "host memory held (MiB) | peak RSS so far (MiB) | question latency (s) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for m, f, t, ctx, vis, host, rss, q in rows:
        print(f"| {m:g} min | {f} | {t:.1f} | {f / t:.0f} | {ctx:,} | {vis:,} | {host:.1f} | {rss:.0f} | {q:.3f} |")


if __name__ == "__main__":
    main()
