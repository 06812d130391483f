"""bench/retrieval_ranks.py on the bundled model and a held-out minute: one rank per needle, one per
counted appearance, and a summary that adds them up."""

import json

from bench_scripts import load_bench

from vidqa.synth.world import Timeline


def test_ranks_cover_every_needle_and_every_counted_appearance(tmp_path):
    ranks = load_bench("retrieval_ranks")
    evidence = load_bench("quality_evidence")
    assert ranks.main(["--model", "synth-tiny", "--minutes", "1", "--videos", "1", "--per-task", "3",
                       "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "ranks.json").read_text())
    timeline = Timeline.from_json((tmp_path / "video_1min" / "timeline.json").read_text())
    rows = result["rows"]
    needles = [r for r in rows if r["task"] == "findNeedle"]
    counts = [r for r in rows if r["task"] == "count"]
    assert needles and counts
    for row in rows:
        for name in ranks.SCORES:
            got = [row[name]] if row["task"] == "findNeedle" else row[name]
            assert all(0 <= x < row["blocks"] for x in got)
    for row in counts:  # every appearance of a minute lies in one of its blocks
        assert len(row["mass"]) == len(evidence.count_intervals(timeline, row["question"])) >= 1
    summary = result["summary"]
    for name in ranks.SCORES:
        inside = [[x < r["retrieved"] - 1 for x in r[name]] for r in counts]
        assert summary[name]["questions"] == len(needles)
        assert summary[name]["count"]["questions"] == len(counts)
        assert summary[name]["count"]["all_within_budget"] == sum(all(i) for i in inside)
    # The trained model's full attention finds the needle in a minute: the measurement means something.
    assert all(r["exact"] == 0 for r in needles)
