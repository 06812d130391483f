"""bench/quality.py end to end on a tiny random model: the variants see what they claim to see."""

import json

from bench_scripts import load_bench


def test_variants_attend_what_they_claim(tmp_path):
    quality = load_bench("quality")
    budget = 400
    assert quality.main(["--model", "tiny-random/qwen2_5_vl", "--minutes", "1", "--token-budget", str(budget),
                         "--per-task", "1", "--variants", "vidqa", "uniform", "full", "--out", str(tmp_path)]) == 0
    rows = {r["variant"]: r for r in json.loads((tmp_path / "quality.json").read_text())}
    assert set(rows) == {"vidqa", "uniform", "full"}
    assert all(r["questions"] >= 5 and set(r["tasks"]) <= set(quality.HELD_OUT_TASKS) for r in rows.values())
    assert rows["vidqa"]["frames"] == rows["full"]["frames"] == 60  # every frame at 1 fps
    assert rows["full"]["visual_attended_median"] == rows["full"]["visual_stored"] > budget
    assert rows["vidqa"]["visual_attended_median"] <= budget < rows["full"]["visual_attended_median"]
    # uniform: fewer frames spread over the whole minute, all attended, within the budget
    assert rows["uniform"]["frames"] < 60 and rows["uniform"]["visual_attended_median"] == rows["uniform"]["visual_stored"]
    assert rows["uniform"]["visual_attended_median"] <= budget
    text = (tmp_path / "quality.md").read_text()
    assert "| 1 min | uniform |" in text and "M-Avg" in text
