"""Every registered question-agnostic reducer (and the default chain) through the full pipeline on the
tiny Qwen2.5-VL: ingest stores exactly the reduced tokens, and asking attends to them."""

import pytest
from tokenreduce_data import REDUCING

from vidqa.tokenreduce import DEFAULT_CHAIN, REDUCERS

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
    assert answer.tokens["visual_attended"] == memory.num_visual_tokens
