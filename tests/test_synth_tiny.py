"""The bundled model (assets/models/synth-tiny) perceives its world: accuracy well above chance,
teacher-forced on held-out clips and end to end through vidqa on a 10-minute held-out video."""

import json

import pytest

from bench_scripts import load_bench
from vidqa.vlm.loading import assets_dir

BUNDLED = assets_dir() / "models" / "synth-tiny"
pytestmark = pytest.mark.skipif(not (BUNDLED / "config.json").exists(), reason="the bundled model is not in assets/")
CHANCE = 25.0  # four options


@pytest.fixture(scope="module")
def bundled():
    from vidqa.vlm import load_adapter

    return load_adapter("synth-tiny", device="cpu")


def test_loads_with_plain_transformers_as_saved():
    """save_pretrained's folder is a standard checkpoint: config, weights under 16 MB, processor."""
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(BUNDLED)
    processor = AutoProcessor.from_pretrained(BUNDLED)
    assert (BUNDLED / "model.safetensors").stat().st_size < 16 * 2**20
    assert 6e6 < sum(p.numel() for p in model.parameters()) < 9e6
    assert processor.tokenizer.convert_tokens_to_ids("<|video_pad|>") == model.config.video_token_id
    card = (BUNDLED / "README.md").read_text()
    assert "synthetic world only" in card and "M-Avg" in card


def test_loaded_adapter_knows_its_weights(bundled):
    """The saved-memory key includes the weights' fingerprint (a retrained stage ingests anew)."""
    from vidqa.vlm.loading import weights_fingerprint

    assert bundled.weights_id == weights_fingerprint(BUNDLED) and len(bundled.weights_id) == 16


def test_held_out_clips_teacher_forced(bundled):
    """Three held-out batches (seeds no training run used), prefilled as streaming ingest prefills a
    video: letter accuracy far above 25%, the needle found and read, and the lookup from a given
    answer to its letter right.

    Measured with the shipped stage-11 model: M-Avg 67.5, findNeedle 100% of 20, count 91.7%, hinted
    letters 99.2% (stage 8: 85.6%, time answers broken by the rotary-base change; stages 9-11 mended
    it); the same with full causal prefill. Order (23.5%), plotQA and grounding stay near chance."""
    from vidqa.config import MemoryConfig
    from vidqa.synth.train import evaluate

    acc = evaluate(bundled, "cpu", batches=3, streaming=MemoryConfig())
    assert acc["questions"] >= 100
    assert acc["m_avg"] >= CHANCE + 30, acc
    assert acc["findNeedle"] >= 90, acc
    assert acc["hinted_letter_acc"] >= 90, acc


def test_ten_minute_video_through_the_pipeline(tmp_path):
    """The fast quality benchmark: a held-out 10-minute video, its questions answered by vidqa's
    default pipeline (streaming ingest, retrieval within 8,192 visual tokens) with the bundled model."""
    quality = load_bench("quality")
    assert quality.main(["--model", "synth-tiny", "--minutes", "10", "--per-task", "10", "--variants", "vidqa",
                         "--out", str(tmp_path)]) == 0
    (row,) = json.loads((tmp_path / "quality.json").read_text())
    samples = [json.loads(line) for line in (tmp_path / "10min" / "vidqa" / "samples_rank0.jsonl").read_text().splitlines()]
    pooled = 100 * sum(bool(s["correct"]) for s in samples) / len(samples)
    assert row["questions"] == len(samples) >= 40 and row["unparsed"] == 0
    assert row["visual_attended_median"] <= 8192 < row["visual_stored"]
    # Measured 20 of 48 (41.7%; M-Avg 51.1%) with the shipped stage-11 model, which trained on clips of
    # at most 96 s: a modest margin (chance reaches 35% of 48 with probability ~6%); the teacher-forced test
    # above is the strong one.
    assert pooled >= CHANCE + 10, (pooled, row["tasks"])
