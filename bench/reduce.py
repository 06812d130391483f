"""Visual tokens per minute of video before/after each reducer and the default chain, and CPU time
per 1,000 frames (tokenreduce's "Show").

    python bench/reduce.py            # the demo video's timeline (4 min) and a 1-hour synthetic video
    python bench/reduce.py --smoke    # 2 minutes, a few seconds

Tokens have the shape Qwen2.5-VL-7B gives 448x448 frames at 1 fps: 448 / 14 = 32 patches a side,
2x2 merge -> 16 x 16 = 256 tokens per temporal grid of 2 frames, D = 3584, so 7,680 tokens a minute.
Their content comes from the synthetic world (:mod:`vidqa.synth`: scene cuts, a slow camera pan,
pixel noise, moving objects, text cards, anomalies) rendered at 112x112, so each token covers a 7x7
block (a 28x28 block of the 448 frame seen 4x smaller) in both frames of its grid: those 294 values,
centred, go through a fixed random Gaussian projection to 3584 dims, plus a fixed per-location vector
(ViT features carry position). Similar pictures give similar tokens, which is all the reducers use.

Ingest is simulated as the pipeline runs it: chunks of 16 frames through a stream of each
question-agnostic reducer. The query-aware ``budget`` runs on what ingest stored: on its own over
5-minute windows of raw tokens (an hour of raw 7B tokens is 3.3 GB even in bf16), in the default chain
over the whole video's stored tokens. The "question" is the mean token of the grid at 40% of the video
plus noise. CPU time is process time with one torch thread, reducer calls only (rendering and
projection excluded). Columns:

* stored/min -- tokens per minute kept at ingest (what the memory prefills and keeps);
* attended/min -- tokens per minute after the question-aware step (equal to stored without one);
* changed x -- kept fraction among *changed* tokens (their 7x7x2 pixels moved by more than 0.1 of
  full scale on average from the previous grid: moving objects, cards, cuts, panned texture edges;
  about a fifth of all), over the kept fraction overall: > 1 means the reducer keeps what is new;
* onset x -- the same for all tokens of grids where an object, card or anomaly appears (how the
  budget is spread over time);
* cuts -- for temporal reducers, scene cuts found (segment start within one grid of the true cut) /
  true cuts, and extra segment starts.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch


from vidqa.synth import Timeline, make_timeline, render_frame  # noqa: E402
from vidqa.tokenreduce import DEFAULT_CHAIN, build_chain  # noqa: E402
from vidqa.tokens import VisualTokens  # noqa: E402

SIDE, BLOCK, DIM = 16, 7, 3584  # tokens per side, pixels per token side at 112 px, Qwen2.5-VL-7B width
FPS, CHUNK_FRAMES, WINDOW_S = 1.0, 16, 300
CHANGED = 0.1  # mean absolute pixel change (0..1) that makes a token "changed"

INGEST_SPECS = ["temporal:keep_ratio=0.25", "temporal:threshold=0.9", "tome:keep_ratio=0.5",
                "tome:keep_ratio=0.5:window=2", "pool:keep_ratio=0.5"]
WINDOWED_SPECS = ["budget:keep_ratio=0.25"]


class TokenMaker:
    """Frames ``[2k, 112, 112, 3]`` uint8 -> :class:`VisualTokens` of ``k`` grids (see module docstring)
    and which of them changed since the previous grid (bool ``[k * 256]``; called in time order)."""

    def __init__(self, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        features = 2 * BLOCK * BLOCK * 3
        self.proj = torch.randn(features, DIM, generator=g) / features**0.5
        pos = torch.randn(SIDE * SIDE, DIM, generator=g)
        self.pos = 0.3 * pos / pos.norm(dim=-1, keepdim=True) * 18.0  # ~0.3 of a content token's norm
        self.last = None

    def __call__(self, frames: np.ndarray, first_frame: int, fps: float) -> tuple[VisualTokens, torch.Tensor]:
        k = len(frames) // 2
        x = frames[: 2 * k].astype(np.float32) / 255 - 0.5
        x = x.reshape(k, 2, SIDE, BLOCK, SIDE, BLOCK, 3).transpose(0, 2, 4, 1, 3, 5, 6).reshape(k, SIDE * SIDE, -1)
        before = np.concatenate([x[:1] + 1 if self.last is None else self.last, x[:-1]])
        changed = torch.from_numpy(np.abs(x - before).mean(-1) > CHANGED).flatten()
        self.last = x[-1:]
        x = x.reshape(k * SIDE * SIDE, -1)
        embeds = torch.from_numpy(x) @ self.proj + self.pos.repeat(k, 1)
        t, h, w = torch.meshgrid(torch.arange(k) + first_frame // 2, torch.arange(SIDE), torch.arange(SIDE),
                                 indexing="ij")
        grid = torch.stack([t.flatten(), h.flatten(), w.flatten()], 1)
        return VisualTokens(embeds=embeds, frame=grid[:, 0] * 2, time=grid[:, 0].double() * 2 / fps, grid=grid,
                            size=torch.ones(len(grid)), grid_hw=(SIDE, SIDE)), changed


@dataclass
class Row:
    name: str
    stored: int = 0
    attended: int = 0
    cpu: float = 0.0
    onset_kept: int = 0
    changed_kept: int = 0
    starts: list[int] = field(default_factory=list)


def frames_of(timeline: Timeline, start: int, n: int) -> np.ndarray:
    return np.stack([render_frame(timeline, (start + i) / FPS, 112, 112) for i in range(n)])


def timed(row: Row, fn, *args):
    t0 = time.process_time()
    out = fn(*args)
    row.cpu += time.process_time() - t0
    return out


def run(timeline: Timeline, label: str) -> list[str]:
    torch.set_num_threads(1)
    n_frames = int(timeline.duration * FPS) // 2 * 2
    make = TokenMaker()
    onset = {int(e.start * FPS) // 2 for e in timeline.objects + timeline.cards + timeline.anomalies}
    onset = torch.tensor(sorted(onset))
    cuts = [int(s.start * FPS) // 2 for s in timeline.scenes[1:]]
    q_grid = int(0.4 * n_frames) // 2 * 2
    q_tokens = TokenMaker()(frames_of(timeline, q_grid, 2), q_grid, FPS)[0].embeds
    question = q_tokens.mean(0, keepdim=True) + 0.5 * q_tokens.norm(dim=-1).mean() / DIM**0.5 * torch.randn(
        4, DIM, generator=torch.Generator().manual_seed(1))
    context = {"question_embeds": question}

    rows = {spec: Row(spec) for spec in INGEST_SPECS + WINDOWED_SPECS}
    streams = {spec: build_chain(spec).stream() for spec in INGEST_SPECS}
    windowed = {spec: build_chain(spec) for spec in WINDOWED_SPECS}
    agnostic, aware = build_chain(DEFAULT_CHAIN).split()
    default = Row(f"default: {DEFAULT_CHAIN}")
    default_stream, stored = agnostic.stream(), []
    pending: list[VisualTokens] = []
    total = 0

    changed: list[torch.Tensor] = []  # per chunk, in order: global index t * 256 + h * 16 + w

    def count(row: Row, out: VisualTokens, attended: bool = False):
        flat = torch.cat(changed)
        index = (out.grid[:, 0] * SIDE + out.grid[:, 1]) * SIDE + out.grid[:, 2]
        row.onset_kept += int(torch.isin(out.grid[:, 0], onset).sum())
        row.changed_kept += int(flat[index].sum())
        if attended:
            row.attended += len(out)
        else:
            row.stored += len(out)

    def flush_window():
        if not pending:
            return
        window = VisualTokens.cat(pending)
        for spec, chain in windowed.items():
            out = timed(rows[spec], chain, window, context)
            rows[spec].stored += len(window)
            count(rows[spec], out, attended=True)
        pending.clear()

    for start in range(0, n_frames, CHUNK_FRAMES):
        tokens, new = make(frames_of(timeline, start, min(CHUNK_FRAMES, n_frames - start)), start, FPS)
        changed.append(new)
        total += len(tokens)
        for spec, stream in streams.items():
            out = timed(rows[spec], stream, tokens)
            count(rows[spec], out)
            rows[spec].starts += out.extra.get("segment_starts", [])
        kept = timed(default, default_stream, tokens)
        default.stored += len(kept)
        stored.append(kept.to(dtype=torch.bfloat16))
        pending.append(tokens)
        if (start + CHUNK_FRAMES) % int(WINDOW_S * FPS) == 0:
            flush_window()
    flush_window()
    video = VisualTokens.cat(stored)  # keeps the segment starts of every chunk
    count(default, timed(default, aware, video, context), attended=True)
    default.starts = video.extra.get("segment_starts", [])

    minutes = n_frames / FPS / 60
    onset_tokens = int(torch.isin(torch.arange(total // SIDE**2), onset).sum()) * SIDE * SIDE
    changed_tokens = int(torch.cat(changed).sum())
    lines = [f"### {label}: {minutes:g} min at {FPS:g} fps, {n_frames} frames, {total:,} tokens "
             f"({total / minutes:,.0f} per minute), {len(cuts)} scene cuts", "",
             "| reducer | stored/min | attended/min | reduction | CPU s / 1,000 frames | changed x | onset x | cuts |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |",
             f"| none | {total / minutes:,.0f} | {total / minutes:,.0f} | 1.0x | 0 | 1.00 | 1.00 | |"]
    for row in list(rows.values()) + [default]:
        attended = row.attended or row.stored
        found = sum(any(abs(s - c) <= 1 for s in row.starts) for c in cuts)
        extra = len([s for s in row.starts if s > 0 and all(abs(s - c) > 1 for c in cuts)])
        cut_text = f"{found}/{len(cuts)}, +{extra}" if row.starts else ""
        share = attended / total
        lines.append(f"| {row.name} | {row.stored / minutes:,.0f} | {attended / minutes:,.0f} | "
                     f"{total / attended:.1f}x | {row.cpu / n_frames * 1000:.2f} | "
                     f"{row.changed_kept / changed_tokens / share:.2f} | {row.onset_kept / onset_tokens / share:.2f} | "
                     f"{cut_text} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="one 2-minute synthetic video")
    ap.add_argument("--minutes", type=float, nargs="*", default=[60.0], help="synthetic video lengths")
    args = ap.parse_args()
    videos = []
    if args.smoke:
        videos.append((make_timeline(5, 120), "synthetic, seed 5"))
    else:
        demo = Path(__file__).resolve().parent.parent / "assets" / "demo_timeline.json"
        if demo.exists():
            videos.append((Timeline.from_json(demo.read_text()), "demo video (assets/demo_timeline.json)"))
        videos += [(make_timeline(5, m * 60), "synthetic, seed 5") for m in args.minutes]
    for timeline, label in videos:
        t0 = time.perf_counter()
        lines = run(timeline, label)
        print("\n".join(lines) + f"\n\n(wall time {time.perf_counter() - t0:.0f} s)\n", flush=True)


if __name__ == "__main__":
    main()
