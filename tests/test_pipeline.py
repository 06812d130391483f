"""End to end: VideoQA and the CLI on a generated video with a tiny random model."""

import json

import pytest

from vidqa.app.cli import main
from vidqa.config import MemoryConfig, VidqaConfig, VideoConfig
from vidqa.errors import QuestionError
from vidqa.pipeline import VideoQA

from videos import make_video


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("clip") / "clip.mp4", 80, fps=4, width=64, height=48)


@pytest.fixture
def qa(tmp_path, qwen_adapter):
    config = VidqaConfig(video=VideoConfig(chunk_frames=4), memory=MemoryConfig(token_budget=60),
                         cache_dir=str(tmp_path / "cache"), max_new_tokens=6)
    return VideoQA(model="tiny-random/qwen2_5_vl", config=config, adapter=qwen_adapter)


def test_ingest_then_two_questions_reuse_the_memory(qa, clip, monkeypatch):
    memory = qa.ingest(clip)
    assert len(memory.blocks) == 5 and memory.video["frames"] == 20
    calls = []
    monkeypatch.setattr(qa.adapter, "encode", lambda *a, **k: calls.append(1))
    first = qa.ask(clip, "What happens?")
    second = qa.ask(clip, "And then?", options=["a cat", "a dog", "a bus"])
    assert not calls  # no encoding work for follow-up questions
    assert first.tokens["visual_stored"] == memory.num_visual_tokens
    assert first.tokens["visual_attended"] <= 60 + max(b.num_visual for b in memory.blocks)
    assert first.spans and all(0 <= a < b <= 20.01 for a, b in first.spans)
    assert second.tokens["generated"] <= 6 and second.timings["ttft"] >= 0


def test_saved_memory_is_reused_by_a_new_process_object(qa, clip, qwen_adapter, monkeypatch):
    qa.ingest(clip)
    fresh = VideoQA(model="tiny-random/qwen2_5_vl", config=qa.config, adapter=qwen_adapter)
    monkeypatch.setattr(qwen_adapter, "encode", lambda *a, **k: (_ for _ in ()).throw(AssertionError("re-encoded")))
    memory = fresh.ingest(clip)
    assert memory.stats.get("loaded_from_cache")


def test_other_weights_under_the_same_name_do_not_reuse_a_memory(qa, clip, qwen_adapter, monkeypatch):
    """A model retrained under the same name (the bundled model after a new stage) ingests again: the
    saved memory's key includes the weights' fingerprint, which follows the weight files' bytes."""
    from vidqa.vlm.loading import weights_fingerprint

    qa.ingest(clip)
    before = qa.memory_path(clip)
    assert before.exists()
    monkeypatch.setattr(qwen_adapter, "weights_id", "retrained")
    fresh = VideoQA(model="tiny-random/qwen2_5_vl", config=qa.config, adapter=qwen_adapter)
    assert fresh.memory_path(clip) != before
    assert not fresh.ingest(clip).stats.get("loaded_from_cache")

    folder = clip.parent / "model"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"weights, stage 1")
    (folder / "README.md").write_text("card")
    first = weights_fingerprint(folder)
    (folder / "README.md").write_text("another card")  # not weights: same fingerprint
    assert weights_fingerprint(folder) == first
    (folder / "model.safetensors").write_bytes(b"weights, stage 2")
    assert weights_fingerprint(folder) != first


def test_streaming_pieces_concatenate_to_the_answer(qa, clip):
    pieces = []
    answer = qa.ask(clip, "Describe.", stream=pieces.append)
    assert "".join(pieces) == answer.text


def test_bad_questions(qa, clip):
    with pytest.raises(QuestionError):
        qa.ask(clip, "   ")
    with pytest.raises(QuestionError):
        qa.ask(clip, "x" * 100_000)
    with pytest.raises(QuestionError):
        qa.ask(clip, "Which?", options=["only one"])


def test_cli_ask_json_and_errors(clip, tmp_path, capsys):
    args = ["ask", str(clip), "What is shown?", "--model", "tiny-random/qwen2_5_vl", "--device", "cpu",
            "--chunk-frames", "4", "--cache-dir", str(tmp_path / "c"), "--max-new-tokens", "4"]
    assert main(args + ["--json", "--options", "red", "blue"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["options"] == ["red", "blue"] and out["tokens"]["generated"] <= 4
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "evidence:" in captured.err
    assert main(["ask", str(tmp_path / "nope.mp4"), "q", "--model", "tiny-random/qwen2_5_vl"]) == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith("vidqa: error:") and "no such file" in err and "\n" not in err
    assert main(["ask", str(clip), "q", "--model", "nobody"]) == 4
    assert "unknown model" in capsys.readouterr().err
    assert main(["ask", str(clip), "q", "--model", "tiny-random/qwen2_5_vl", "--fps", "-1"]) == 2


def test_cli_ingest_then_ask_reuses_cache(clip, tmp_path, capsys):
    common = ["--model", "tiny-random/qwen2_5_vl", "--device", "cpu", "--chunk-frames", "4",
              "--cache-dir", str(tmp_path / "c")]
    assert main(["ingest", str(clip), "--json"] + common) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(["ingest", str(clip), "--json"] + common) == 0
    second = json.loads(capsys.readouterr().out)
    assert not first["from_cache"] and second["from_cache"] and first["memory"] == second["memory"]


def test_out_of_gpu_memory_halves_the_chunk_and_goes_on(qa, clip, monkeypatch):
    import torch

    real = qa.adapter.forward

    def tight(embeds, positions, cache, logits_for="last"):
        if embeds.shape[0] > 60:  # a full 4-frame chunk does not fit, half of one does
            raise torch.cuda.OutOfMemoryError("simulated")
        return real(embeds, positions, cache, logits_for)

    monkeypatch.setattr(qa.adapter, "forward", tight)
    memory = qa.ingest(clip, use_cache=False)
    assert len(memory.blocks) == 10 and memory.video["frames"] == 20  # every frame, in 2-frame pieces
    assert [int(f) for b in memory.blocks for f in b.frames] == list(range(0, 20, 2))


def test_out_of_gpu_memory_everywhere_is_a_clear_error_and_saves_nothing(qa, clip, monkeypatch):
    import torch

    from vidqa.errors import ResourceError

    def never(*a, **k):
        raise torch.cuda.OutOfMemoryError("simulated")

    monkeypatch.setattr(qa.adapter, "encode", never)
    with pytest.raises(ResourceError, match="max-pixels"):
        qa.ingest(clip)
    assert not qa.memory_path(clip).exists()


@pytest.mark.parametrize("family", ["qwen2_5_vl", "llava_onevision"])
def test_follow_up_prompt_is_the_models_own_chat_format(family, request):
    """The text after the video for a follow-up equals the chat template's rendering of the turns."""
    adapter = request.getfixturevalue(f"{'qwen' if family == 'qwen2_5_vl' else 'llava'}_adapter")
    history = [("What is shown?", "A red circle."), ("And then?", "A card.")]
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": history[0][0]}]}]
    for q, a in history:
        if messages[-1]["role"] == "assistant":
            messages.append({"role": "user", "content": [{"type": "text", "text": q}]})
        messages.append({"role": "assistant", "content": [{"type": "text", "text": a}]})
    messages.append({"role": "user", "content": [{"type": "text", "text": "Which colour?"}]})
    rendered = adapter.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    text = adapter.prompt_conversation(history, "Which colour?")
    assert rendered.endswith(text) and text.startswith(adapter.prompt_question(history[0][0]))
    assert adapter.prompt_conversation([], "Which colour?", "B") == adapter.prompt_question("Which colour?", "B")


def test_ask_with_history_shows_the_earlier_turns(qa, clip):
    from vidqa.pipeline import MAX_HISTORY_CHARS, recent_turns

    plain = qa.ask(clip, "Which colour?")
    history = [("What is shown?", "A red circle.")]
    follow = qa.ask(clip, "Which colour?", history=history)
    conversation = qa.adapter.prompt_conversation(history, "Which colour?")
    assert follow.tokens["question"] == len(qa.adapter.tokenize(conversation)) > plain.tokens["question"]
    long = [("q" * 6000, "a" * 3000)] * 3  # 9,000 characters a turn: one fits, two do not
    assert 9000 + 26 <= MAX_HISTORY_CHARS < 2 * 9000
    assert recent_turns(long + history) == [long[-1]] + history
    assert recent_turns(long) == long[-1:]
    with pytest.raises(QuestionError):
        qa.ask(clip, "Which colour?", history=[("only a question",)])


def test_only_the_most_recent_memories_stay_in_the_process(qa, tmp_path, monkeypatch):
    from vidqa import pipeline

    clips = [make_video(tmp_path / f"v{i}.mp4", 16 + 4 * i, fps=4, width=64, height=48) for i in range(3)]
    for c in clips:
        qa.ingest(c)
    assert len(qa._memories) == pipeline.MEMORIES_IN_PROCESS == 2
    assert [k[0] for k in qa._memories] == [str(c.resolve()) for c in clips[1:]]
    again = qa.ingest(clips[0])  # dropped from the process: back from the on-disk cache, not ingested again
    assert again.stats.get("loaded_from_cache")
    assert qa.ingest(clips[0]) is again and qa.ingest(clips[2]) is qa._memories[next(reversed(qa._memories))]
