"""Multiple choice by likelihood (vidqa/option_scoring.py): the scores are the replies' true
log-likelihoods, the cache comes back as it was, and the pipeline answers with the best reply."""

import pytest
import torch

from vidqa.config import MemoryConfig, VidqaConfig, VideoConfig
from vidqa.errors import ConfigError
from vidqa.option_scoring import option_reply, reply_log_likelihoods, truncate_cache
from vidqa.pipeline import VideoQA

from videos import make_video


def _prompt_cache(adapter, text: str):
    """(last logits [V], next position, cache) after prefilling ``text`` alone."""
    from transformers import DynamicCache

    ids = adapter.tokenize(text)
    cache = DynamicCache()
    logits = adapter.forward(adapter.embed_ids(ids), adapter.text_positions(len(ids), 0), cache)
    return ids, logits, len(ids), cache


@pytest.mark.parametrize("family", ["qwen", "llava"])
def test_scores_are_the_replies_log_likelihoods_and_the_cache_is_unchanged(family, request):
    adapter = request.getfixturevalue(f"{family}_adapter")
    prompt = "Question: which colour? Options: (A) red (B) blue Best Option: ("
    ids, logits, n, cache = _prompt_cache(adapter, prompt)
    before = [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers]
    replies = [option_reply(0, "red"), option_reply(1, "dark blue"), option_reply(2, "green")]
    scores = reply_log_likelihoods(adapter, logits, n, cache, replies)
    assert scores.shape == (3,) and torch.isfinite(scores).all() and (scores < 0).all()
    for (k, v), layer in zip(before, cache.layers):  # cut back to the prompt, values untouched
        assert torch.equal(layer.keys, k) and torch.equal(layer.values, v)
    for reply, score in zip(replies, scores):  # the same numbers from one uncached pass
        full = torch.cat([ids, adapter.tokenize(reply)])
        all_logits = adapter.forward(adapter.embed_ids(full), adapter.text_positions(len(full), 0), None,
                                     logits_for="all")
        logp = torch.log_softmax(all_logits.float(), dim=-1)
        expected = logp[n - 1:-1].gather(1, full[n:, None]).sum()
        assert float(score) == pytest.approx(float(expected), abs=2e-3)


def test_truncate_cache_cuts_each_layer_to_its_own_length(qwen_adapter):
    _, _, n, cache = _prompt_cache(qwen_adapter, "a short prompt of a few words")
    lengths = [n - 1 - (i % 2) for i in range(len(cache.layers))]
    truncate_cache(cache, lengths)
    assert [int(layer.keys.shape[-2]) for layer in cache.layers] == lengths
    assert [int(layer.values.shape[-2]) for layer in cache.layers] == lengths


def test_option_reply_is_the_form_the_mlvu_scorer_reads():
    from vidqa.mcq import parse_choice

    options = ["a red circle", "B", "5"]
    for i, o in enumerate(options):
        assert parse_choice(option_reply(i, o), options) == i
    assert option_reply(1, "  blue ") == "B) blue"


def test_the_choice_setting_is_checked():
    assert VidqaConfig().choice == "generate"
    assert VidqaConfig.from_dict({"choice": "likelihood"}).choice == "likelihood"
    with pytest.raises(ConfigError, match="choice must be one of generate, likelihood"):
        VidqaConfig(choice="vote")


def test_pipeline_answers_with_the_likeliest_reply(tmp_path, qwen_adapter, monkeypatch):
    clip = make_video(tmp_path / "clip.mp4", 40, fps=4, width=64, height=48)
    config = VidqaConfig(video=VideoConfig(chunk_frames=4), memory=MemoryConfig(token_budget=60),
                         cache_dir=str(tmp_path / "cache"), choice="likelihood")
    qa = VideoQA(model="tiny-random/qwen2_5_vl", config=config, adapter=qwen_adapter)
    seen = {}

    def record(adapter, logits, position, cache, replies):
        seen["replies"] = replies
        seen["scores"] = reply_log_likelihoods(adapter, logits, position, cache, replies)
        return seen["scores"]

    monkeypatch.setattr("vidqa.option_scoring.reply_log_likelihoods", record)
    pieces = []
    options = ["a cat", "a dog", "a bus"]
    answer = qa.ask(clip, "What is shown?", options=options, stream=pieces.append)
    best = int(torch.argmax(seen["scores"]))
    assert seen["replies"] == ["A) a cat", "B) a dog", "C) a bus"]
    assert answer.choice_index == best and answer.choice == "ABC"[best]
    assert answer.text == seen["replies"][best] and "".join(pieces) == answer.text
    assert answer.tokens["generated"] == len(qwen_adapter.tokenize(answer.text))
    # an open question is still generated
    open_answer = qa.ask(clip, "Describe it.", max_new_tokens=3)
    assert open_answer.choice_index is None and open_answer.tokens["generated"] <= 3


def test_cli_choice_flag_and_environment(tmp_path, capsys, monkeypatch):
    import json

    from vidqa.app.cli import main
    from vidqa.app.settings import resolve

    clip = make_video(tmp_path / "clip.mp4", 24, fps=4, width=64, height=48)
    args = ["ask", str(clip), "What is shown?", "--model", "tiny-random/qwen2_5_vl", "--device", "cpu",
            "--chunk-frames", "4", "--cache-dir", str(tmp_path / "c"), "--json", "--options", "red", "blue"]
    assert main(args + ["--choice", "likelihood"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["text"] in ("A) red", "B) blue") and out["choice"] == out["text"][0]
    with pytest.raises(SystemExit) as refused:  # argparse's usage error
        main(args + ["--choice", "vote"])
    assert refused.value.code == 2 and "invalid choice: 'vote'" in capsys.readouterr().err
    monkeypatch.setenv("VIDQA_CHOICE", "likelihood")
    assert resolve({}).config.choice == "likelihood"
    monkeypatch.setenv("VIDQA_CHOICE", "vote")
    with pytest.raises(ConfigError):
        resolve({})
