"""Every registered question-agnostic reducer (and the default chain) through the full pipeline on the
tiny Qwen2.5-VL: ingest stores exactly the reduced tokens, and asking attends to them -- or, with a
question-aware budget in the chain, to exactly its budget, from the config and from the CLI."""

import json

import pytest
from tokenreduce_data import REDUCING

from vidqa.tokenreduce import DEFAULT_CHAIN, REDUCERS, build_chain

SPECS = [f"{name}:" + ":".join(f"{k}={v}" for k, v in REDUCING[name].items())
         for name in sorted(REDUCERS) if not REDUCERS[name].question_aware]
SPECS += [DEFAULT_CHAIN, "temporal:threshold=0.9:merge=true,pool:full_every=2"]


@pytest.mark.parametrize("spec", SPECS)
def test_reducers_run_through_the_full_pipeline(spec, qwen_adapter, tmp_path):
    from videos import make_video

    from vidqa.config import VideoConfig, VidqaConfig
    from vidqa.pipeline import VideoQA

    clip = make_video(tmp_path / "c.mp4", 16, fps=4, width=64, height=48)
    config = VidqaConfig(video=VideoConfig(chunk_frames=4), reducers=spec, cache_dir=str(tmp_path / "c"),
                         max_new_tokens=2)
    qa = VideoQA(model="tiny-random/qwen2_5_vl", config=config, adapter=qwen_adapter)
    memory = qa.ingest(clip)
    assert memory.stats["visual_tokens_kept"] < memory.stats["visual_tokens_in"]
    assert memory.num_visual_tokens == memory.stats["visual_tokens_kept"]
    answer = qa.ask(memory, "What?")
    _, aware = build_chain(spec).split()
    budget = aware.reducers[0].total(memory.num_visual_tokens) if aware else memory.num_visual_tokens
    assert answer.tokens["visual_attended"] == budget


def test_a_question_aware_budget_reaches_ask_from_the_config_and_the_cli(qwen_adapter, tmp_path, capsys):
    from videos import make_video

    from vidqa.app.cli import main
    from vidqa.config import VideoConfig, VidqaConfig
    from vidqa.pipeline import VideoQA

    clip = make_video(tmp_path / "c.mp4", 48, fps=4, width=64, height=48)  # 12 s: 3 chunks of 2 grids
    spec = "temporal:keep_ratio=0.5,budget:token_budget=12"
    config = VidqaConfig(video=VideoConfig(chunk_frames=4), reducers=spec, cache_dir=str(tmp_path / "c"),
                         max_new_tokens=2)
    qa = VideoQA(model="tiny-random/qwen2_5_vl", config=config, adapter=qwen_adapter)
    memory = qa.ingest(clip)
    answer = qa.ask(memory, "What?")
    assert memory.num_visual_tokens > 12 and answer.tokens["visual_attended"] == 12
    assert answer.spans and all(0 <= s < e <= 12.0 for s, e in answer.spans)
    # the budget is a question-time knob: the memory of the agnostic chain alone serves it
    assert VidqaConfig(video=config.video, reducers="temporal:keep_ratio=0.5").ingest_key() == config.ingest_key()

    args = ["ask", str(clip), "What?", "--model", "tiny-random/qwen2_5_vl", "--device", "cpu", "--chunk-frames", "4",
            "--cache-dir", str(tmp_path / "c"), "--max-new-tokens", "2", "--json"]
    assert main(args + ["--reducers", spec.replace("12", "7")]) == 0
    assert json.loads(capsys.readouterr().out)["tokens"]["visual_attended"] == 7
    # a memory keeps no frames: the open_clip scorer is refused before any work
    assert main(args + ["--reducers", "budget:scorer=clip"]) == 2
    assert "frames" in capsys.readouterr().err
