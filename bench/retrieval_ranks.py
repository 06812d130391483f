"""Does block retrieval find the evidence? Ranks of the blocks showing it, under each block score.

    python bench/retrieval_ranks.py --model synth-tiny --minutes 60 --videos 6 --out /tmp/ranks

Apart from whether the model then reads it: for every findNeedle question of held-out synthetic
videos (the seeds of ``bench/quality.py``), the memory's blocks are scored against the question as
``recall`` scores them, and the best rank of a block that shows the needle is recorded for

* ``mass``  -- the default (:mod:`vidqa.memory.retrieve`): attention mass of each grid's mean and
  most distinct keys;
* ``mean``  -- ReKV's mean dot product against each grid's mean key;
* ``exact`` -- the attention mass over every visual KV entry of the video (what full attention would
  pay each block; the reference the representatives approximate, too costly for real model sizes).

All three from the queries of the last ``--retrieval-window`` prompt tokens, as ``recall`` uses them
(default 0: every token of the prompt; 1: the answer position).

Reports, per score, how many needle blocks rank within the blocks the default budget retrieves, within
the top 10 and top 3, and the median rank. A count question's evidence is every appearance of the
(colour, shape) it names: per score, how many count questions have a block of every appearance
within the budget, and the share of appearances that do. Writes ``<out>/ranks.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from quality_evidence import evidence_intervals  # noqa: E402
from vidqa.app.mlvu import load_mlvu  # noqa: E402
from vidqa.config import MemoryConfig, VidqaConfig  # noqa: E402
from vidqa.kernels.block_score import attention_mass  # noqa: E402
from vidqa.mcq import MC_ANSWER_PREFIX, format_mc_question  # noqa: E402
from vidqa.memory.recall import question_queries, window_queries  # noqa: E402
from vidqa.memory.retrieve import score_blocks  # noqa: E402
from vidqa.synth.cli import generate  # noqa: E402
from vidqa.synth.train_data import HELD_OUT_SEED_BASE  # noqa: E402
from vidqa.synth.world import Timeline  # noqa: E402

SCORES = ("mass", "mean", "exact")


def exact_scores(queries, memory, device) -> torch.Tensor:
    """``[num_blocks]``: attention mass over every visual entry of the video, summed per block."""
    keys = [b.keys.unpack(device, torch.float32)[:, :, b.visual] for b in memory.blocks]
    owner = torch.cat([torch.full((k.shape[2],), i) for i, k in enumerate(keys)])
    every = torch.cat(keys, dim=2).permute(2, 0, 1, 3)  # [N, L, Hkv, Dh]
    mass = attention_mass(torch.stack([q.float() for q in queries]), every).cpu()
    return torch.zeros(len(memory.blocks)).scatter_add(0, owner, mass)


def evidence_ranks(qa, folder: Path) -> list[dict]:
    """One row per findNeedle and count question of the video in ``folder``: per score, the best rank
    of a block showing each of its evidence intervals."""
    questions = load_mlvu(folder / "questions.json", video_root=folder)
    timeline = Timeline.from_json((folder / "timeline.json").read_text())
    memory = qa.ingest(questions[0].video)
    a, mc = qa.adapter, qa.config.memory
    retrieved = mc.token_budget // max(1, max(b.num_visual for b in memory.blocks))
    rows = []
    for q in questions:
        intervals = evidence_intervals(q.task, timeline, q.question)
        if not intervals:
            continue
        showing = [[i for i, b in enumerate(memory.blocks) if b.t_start < end and b.t_end > start]
                   for start, end in intervals]
        prompt = format_mc_question(q.question, q.candidates) if q.candidates else q.question
        ids = a.tokenize(a.prompt_conversation([], prompt, MC_ANSWER_PREFIX if q.candidates else ""))
        queries = window_queries(question_queries(a, memory, a.embed_ids(ids), max(1, mc.recent_blocks)),
                                 mc.retrieval_window)
        row = {"video": folder.name, "task": q.task, "question": q.question, "blocks": len(memory.blocks),
               "retrieved": retrieved}
        for name in SCORES:
            scores = exact_scores(queries, memory, a.device) if name == "exact" else \
                score_blocks(queries, memory.blocks, memory.retrieval_cache, name)
            order = torch.argsort(scores, descending=True, stable=True)
            rank = torch.empty_like(order)
            rank[order] = torch.arange(len(order))
            ranks = [int(min(rank[i] for i in blocks)) for blocks in showing if blocks]
            row[name] = ranks[0] if q.task == "findNeedle" else ranks
        rows.append(row)
    return rows


def summary(rows: list[dict]) -> dict:
    needles = [r for r in rows if r["task"] == "findNeedle"]
    counts = [r for r in rows if r["task"] == "count"]
    out = {}
    for name in SCORES:
        ranks = [r[name] for r in needles]
        out[name] = {"within_budget": sum(r[name] < r["retrieved"] - 1 for r in needles),  # the newest block is forced
                     "top10": sum(x < 10 for x in ranks), "top3": sum(x < 3 for x in ranks),
                     "median_rank": statistics.median(ranks) if ranks else None, "questions": len(ranks)}
        if counts:
            inside = [[x < r["retrieved"] - 1 for x in r[name]] for r in counts]
            out[name]["count"] = {"questions": len(counts), "all_within_budget": sum(all(i) for i in inside),
                                  "appearances_within_budget": round(100 * sum(map(sum, inside)) /
                                                                     max(1, sum(map(len, inside))), 1)}
    return out


def main(argv=None) -> int:
    from vidqa.pipeline import VideoQA

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="synth-tiny")
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--videos", type=int, default=6)
    ap.add_argument("--seed", type=int, default=HELD_OUT_SEED_BASE + 1)
    ap.add_argument("--per-task", type=int, default=6)
    ap.add_argument("--retrieval-window", type=int, default=MemoryConfig.retrieval_window,
                    help="last prompt tokens whose queries score (0: every token)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    out = Path(args.out)
    qa = VideoQA(model=args.model, config=VidqaConfig(memory=MemoryConfig(retrieval_window=args.retrieval_window),
                                                      cache_dir=str(out / "cache")))
    rows = []
    for k in range(args.videos):  # the same folders and seeds as bench/quality.py
        folder = out / (f"video_{args.minutes:g}min" + (f"_{k}" if k else ""))
        if not (folder / "questions.json").exists():
            generate(folder, args.minutes * 60, args.seed + k, per_task=args.per_task)
        rows += evidence_ranks(qa, folder)
        print(json.dumps(summary(rows)), flush=True)
    result = {"model": args.model, "minutes": args.minutes, "retrieval_window": args.retrieval_window,
              "summary": summary(rows), "rows": rows}
    (out / "ranks.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["summary"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
