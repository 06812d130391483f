"""Trainer promises: it feeds the model what inference feeds it, and it learns."""

import random

import numpy as np
import pytest
import torch

from vidqa.synth.train import (HEIGHT, WIDTH, batch_logits, blur_clips, letter_hits, patchify, question_rows, row_loss,
                               to_model_frames, video_template)
from vidqa.synth.train_data import DESCRIBE, ClipBatches, batch_layout, make_clip


def _small_batch(chunks=2, clips=2, seed=3):
    layout = dict(batch_layout(random.Random(seed)), chunks=chunks)
    items = [make_clip(100 + i, chunks, layout["offset"]) for i in range(clips)]
    qa = [questions[:2] + questions[-1:] for _, _, questions, _ in items]
    return {"frames": torch.from_numpy(np.stack([f for f, _, _, _ in items])), "times": items[0][1], "qa": qa,
            "token_labels": torch.from_numpy(np.stack([lab for _, _, _, lab in items])), **layout}


def test_clips_have_every_task_and_a_description():
    tasks = set()
    for seed in range(12):
        frames, times, questions, labels = make_clip(seed, 3, 600.0)
        assert frames.shape == (48, 126, 224, 3) and frames.dtype == np.uint8
        assert times[0] == 600.0 and times[-1] == 647.0 and labels.shape == (24, 4, 8, 3)
        assert questions[-1].prompt == DESCRIBE and questions[-1].target.startswith("a ")
        for q in questions[:-1]:
            assert q.target.startswith(f"{q.letter}) ") and f"({q.letter}) {q.target[3:]}" in q.prompt
        tasks |= {q.task for q in questions}
    assert tasks >= {"findNeedle", "count", "order", "anomaly_reco", "plotQA", "grounding", "describe"}


def test_grounding_options_move_with_the_offset():
    _, _, near, _ = make_clip(5, 2, 0.0)
    _, _, far, _ = make_clip(5, 2, 3600.0)
    g0 = [q for q in near if q.task == "grounding"]
    g1 = [q for q in far if q.task == "grounding"]
    assert g0 and len(g0) == len(g1)
    assert g0[0].target[3:].startswith("00:00:") and g1[0].target[3:].startswith("01:00:")


def test_model_frames_match_what_the_processor_makes_of_a_448x252_video():
    """Rendering at 224x126 and resizing on the device stands in for decoding 448x252 and the processor."""
    from vidqa.synth.model import build_model_and_processor
    from vidqa.synth.render import render_frame
    from vidqa.synth.timeline import make_timeline

    _, processor = build_model_and_processor()
    tl = make_timeline(4, 16)
    big = np.stack([render_frame(tl, float(t), 448, 252) for t in range(4)])
    small = np.stack([render_frame(tl, float(t), 224, 126) for t in range(4)])
    ref = processor.video_processor(videos=[big], return_tensors="pt", do_sample_frames=False,
                                    cap_pixels_per_frame=False)
    assert ref["video_grid_thw"].tolist() == [[2, HEIGHT // 14, WIDTH // 14]]
    ours = patchify(to_model_frames(torch.from_numpy(small[None])), processor)
    assert ours.shape == ref["pixel_values_videos"].shape
    # Normalised units (std ~0.27 per level-255 range): the two paths differ by edge sharpness only.
    assert (ours - ref["pixel_values_videos"]).abs().mean() < 0.12


def test_patchify_equals_the_processor():
    from vidqa.synth.model import build_model_and_processor

    _, processor = build_model_and_processor()
    frames = np.random.default_rng(0).integers(0, 256, (4, HEIGHT, WIDTH, 3), dtype=np.uint8)
    ref = processor.video_processor(videos=[frames], return_tensors="pt", do_sample_frames=False,
                                    cap_pixels_per_frame=False)["pixel_values_videos"]
    torch.testing.assert_close(patchify(torch.from_numpy(frames[None]), processor), ref, atol=1e-5, rtol=1e-5)


def test_rows_over_a_shared_video_cache_equal_whole_sequences(synth_adapter):
    """Each question row answered over its clip's cached video equals the full sequence run at once,
    and the layout is the one ingest builds (same ids, same positions)."""
    a = synth_adapter
    batch = _small_batch()
    with torch.no_grad():
        logits, labels, tasks = batch_logits(a, batch, "cpu")
    frames = to_model_frames(batch["frames"])
    ids, is_visual, positions, next_pos, _ = video_template(a, batch, (8, 16))
    q_ids, q_labels, q_pos, clip_of_row, _ = question_rows(a, batch, next_pos)
    assert torch.equal(q_labels, labels)
    for r in range(len(tasks)):
        clip = int(clip_of_row[r])
        toks = a.encode(frames[clip].numpy().astype(np.uint8), batch["times"], 0)
        video = a.embed_ids(ids).clone()
        video[is_visual] = toks.embeds
        embeds = torch.cat([video, a.embed_ids(q_ids[r])])
        pos = torch.cat([positions, q_pos[:, r]], dim=1)
        with torch.no_grad():
            full = a.forward(embeds, pos, None, logits_for="all")
        torch.testing.assert_close(logits[r], full[len(ids):], atol=2e-4, rtol=1e-4)


def test_layout_equals_streaming_ingest_prompt(synth_adapter):
    """The trainer's token ids around the chunks are the ones ingest feeds (prefix, <mm:ss>, markers)."""
    a = synth_adapter
    batch = dict(_small_batch(chunks=2), gap=0, chunk_gaps=[0, 0])
    ids, is_visual, positions, _, _ = video_template(a, batch, (8, 16))
    expect = [a.tokenize(a.prompt_prefix())]
    for c in range(2):
        expect += [a.tokenize(a.chunk_open(batch["times"][16 * c])), torch.zeros(256, dtype=torch.long),
                   a.tokenize(a.chunk_close())]
    assert torch.equal(ids, torch.cat(expect))
    assert int(is_visual.sum()) == 512
    assert positions.shape == (3, len(ids)) and bool((positions[:, 1:] >= 0).all())


def _fit(seed: int, steps: int, logits_of):
    """``steps`` AdamW steps of a fresh synth-tiny on one fixed batch: (losses, last logits, labels,
    rows, adapter); ``logits_of(adapter)`` gives (logits, labels, rows)."""
    from vidqa.synth.model import build_model_and_processor
    from vidqa.vlm.qwen2_5_vl import Qwen2_5_VLAdapter

    model, processor = build_model_and_processor(seed=seed)
    a = Qwen2_5_VLAdapter(model, processor, "synth-tiny")
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(steps):
        logits, labels, rows = logits_of(a)
        loss = row_loss(logits, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses, logits.detach(), labels, rows, a


def test_a_few_steps_lower_the_loss():
    """Sanity of the whole step: on one fixed batch, 25 AdamW steps cut the loss well down."""
    batch = _small_batch(chunks=1, clips=2)
    losses, logits, labels, tasks, a = _fit(1, 25, lambda a: batch_logits(a, batch, "cpu"))
    assert losses[-1] < 0.5 * losses[0], losses
    hits = letter_hits(logits, labels, tasks, a)
    assert {kind for kind, _, _ in hits} <= {"mc", "hint"} and all(isinstance(ok, bool) for _, _, ok in hits)


def test_batches_share_one_layout_and_keep_questions_bounded():
    data = iter(ClipBatches(0, frames_per_batch=64))
    for _ in range(3):
        b = next(data)
        n, t = b["frames"].shape[:2]
        assert t == 16 * b["chunks"] and n == max(1, 64 // t) and len(b["qa"]) == n
        assert all(1 <= len(q) <= 10 for q in b["qa"])


def test_augmentation_is_mild_and_seeded():
    frames, _, _, _ = make_clip(2, 1, 0.0)
    x = torch.from_numpy(frames[None, :4]).repeat(3, 1, 1, 1, 1)
    plain = to_model_frames(x)
    a = to_model_frames(x, augment=True, generator=torch.Generator().manual_seed(0))
    b = to_model_frames(x, augment=True, generator=torch.Generator().manual_seed(0))
    assert a.shape == plain.shape == (3, 4, HEIGHT, WIDTH, 3) and torch.equal(a, b)
    assert float(a.min()) >= 0 and float(a.max()) <= 255
    diff = (a - plain).abs().mean(dim=(1, 2, 3, 4))
    assert bool((diff < 12).all()) and float(diff.max()) > 0.1  # changed, but the content is intact


def test_blur_uses_each_clips_own_kernel():
    """The grouped convolution equals blurring each clip on its own (rows, then columns, edges replicated)."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 5, 9, 11, generator=g) * 255
    kernel = torch.rand(3, 5, generator=g)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    out = blur_clips(x, kernel)
    for i in range(3):
        planes = x[i][:, None]  # [P, 1, H, W]
        ref = torch.nn.functional.conv2d(torch.nn.functional.pad(planes, (2, 2, 0, 0), mode="replicate"),
                                         kernel[i].view(1, 1, 1, 5))
        ref = torch.nn.functional.conv2d(torch.nn.functional.pad(ref, (0, 0, 2, 2), mode="replicate"),
                                         kernel[i].view(1, 1, 5, 1))
        torch.testing.assert_close(out[i], ref[:, 0])
    assert not torch.allclose(out[0], blur_clips(x, kernel.flip(0))[0])  # the kernel of clip 0 matters


def test_every_question_is_also_asked_open_and_hinted():
    from vidqa.synth.train_data import pick_questions

    _, _, questions, _ = make_clip(7, 3, 0.0)
    batch = pick_questions({"all_qa": [questions]}, random.Random(0))
    rows = batch["qa"][0]
    mc = [q for q in rows if q.kind == "mc"]
    assert len(mc) == 3 and len(rows) in (9, 10)
    for q in mc:
        open_, hint = q.variant("open"), q.variant("hint")
        assert open_.prompt == q.question and open_.prefix == "" and open_.target == q.answer
        assert f"The answer is {q.answer}." in hint.prompt and hint.target == q.target and "Options:" in hint.prompt
        assert open_ in rows and hint in rows


def test_letter_hits_reads_the_letter_at_the_answer(synth_adapter):
    a = synth_adapter
    _, _, questions, _ = make_clip(1, 1, 0.0)
    q = next(x for x in questions if x.kind == "mc")
    batch = {"qa": [[q, q.variant("hint")]], "question_gap": 0}
    ids, labels, _, _, rows = question_rows(a, batch, 0)
    logits = torch.zeros(2, ids.shape[1], len(a.tokenizer))
    first = int((labels[0] != -100).nonzero()[0])
    right = a.tokenizer.convert_tokens_to_ids(q.letter.lower())
    wrong = a.tokenizer.convert_tokens_to_ids("d" if q.letter != "D" else "a")
    logits[0, first - 1, right] = 1.0  # row 0 predicts the right letter, row 1 a wrong one
    logits[1, first - 1, wrong] = 1.0
    assert letter_hits(logits, labels, rows, a) == [("mc", q.task, True), ("hint", q.task, False)]


def test_text_warmup_rows_are_hinted_and_learnable():
    """The warm-up's rows need no video, carry their answer in the question, and a few steps on one
    batch lower their loss."""
    from vidqa.synth.train import text_logits
    from vidqa.synth.train_data import HintedRows

    rows = next(iter(HintedRows(0, rows=12)))
    assert len(rows) == 12 and all(r.kind == "hint" and f"The answer is {r.answer}." in r.prompt for r in rows)
    losses, *_ = _fit(2, 15, lambda a: text_logits(a, rows, "cpu"))
    assert losses[-1] < 0.5 * losses[0], losses


def test_export_writes_a_loadable_folder_with_its_card(tmp_path):
    """Trainer weights -> save_pretrained folder that plain transformers loads to the same weights."""
    import json as _json

    from safetensors.torch import save_file
    from transformers import Qwen2_5_VLForConditionalGeneration

    from vidqa.synth.export import export
    from vidqa.synth.model import build_model_and_processor
    from vidqa.synth.train import save_weights

    model, _ = build_model_and_processor(seed=5)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    save_weights(model, ckpt / "model.safetensors")
    acc = {"findNeedle": 40.0, "m_avg": 40.0, "questions": 10, "hinted_letter_acc": 90.0}
    (ckpt / "training.json").write_text(_json.dumps({"steps": 3, "train_seconds": 1.0, "heldout_accuracy": acc}))
    folder = export(ckpt, tmp_path / "out")
    loaded = Qwen2_5_VLForConditionalGeneration.from_pretrained(folder)
    name = "model.language_model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(loaded.state_dict()[name], model.state_dict()[name].to(torch.bfloat16).to(loaded.dtype))
    card = (folder / "README.md").read_text()
    assert "| findNeedle | 40.0 |" in card and "synthetic world only" in card and "held-out clips of" not in card
    long = {"findNeedle": 70.0, "m_avg": 70.0, "questions": 8, "hinted_letter_acc": 90.0}
    (ckpt / "training.json").write_text(_json.dumps({"steps": 3, "train_seconds": 1.0, "heldout_accuracy": acc,
                                                     "max_chunks": 32, "heldout_accuracy_long": long}))
    card = (export(ckpt, tmp_path / "long") / "README.md").read_text()
    assert "half the batches clips of 7-32 chunks" in card
    assert "On held-out clips of 7-32 chunks (8 questions): findNeedle 70.0; M-Avg 70.0." in card
    counts = {"1-2": 90.0, "3-4": 50.0, "5+": 40.0, "all": 70.0, "questions": 12}
    (ckpt / "training.json").write_text(_json.dumps({"steps": 3, "train_seconds": 1.0, "heldout_accuracy": acc,
                                                     "count_share": 1.0, "count_evidence": "first",
                                                     "heldout_count_accuracy": counts}))
    card = (export(ckpt, tmp_path / "counts") / "README.md").read_text()
    assert "count targets in 100% of the batches, count evidence: first sights" in card
    assert "(12 questions), by the true count: 1-2 90.0, 3-4 50.0, 5+ 40.0, all 70.0." in card
    save_file({"nonsense": torch.zeros(1)}, str(ckpt / "model.safetensors"))
    with pytest.raises(ValueError, match="does not match"):
        export(ckpt, tmp_path / "bad")


def test_count_target_clips_ask_the_counts_an_hour_gives():
    """Random clips count 1-3; with count targets a 6-chunk clip shows some pair 4-6 times and asks
    about it, and held-out batches (comparable across stages) never ask for targets."""
    from vidqa.synth.train_data import COUNT_TARGETS_IN_CLIPS

    counts = set()
    for seed in range(20):
        _, _, questions, _ = make_clip(seed, 6, 0.0, True, COUNT_TARGETS_IN_CLIPS)
        counts |= {int(q.target[3:]) for q in questions if q.task == "count" and q.kind == "mc"}
    assert max(counts) >= 5
    rng = random.Random(0)
    assert all(batch_layout(rng, held_out=True)["count_targets"] is None for _ in range(50))
    train = [batch_layout(rng)["count_targets"] for _ in range(200)]
    assert 60 < sum(t == COUNT_TARGETS_IN_CLIPS for t in train) < 140


def test_long_clips_come_in_half_the_batches_only_when_asked():
    """``max_chunks`` above 6: about half the training batches (every held-out one) have 7..max_chunks
    chunks, the rest 1-6; at the
    default every batch keeps 1-6 chunks (the draws of every earlier stage)."""
    from vidqa.synth.train_data import MAX_CHUNKS

    rng = random.Random(0)
    default = [batch_layout(rng)["chunks"] for _ in range(200)]
    assert max(default) == MAX_CHUNKS and min(default) == 1
    long = [batch_layout(rng, max_chunks=32)["chunks"] for _ in range(400)]
    beyond = [c for c in long if c > MAX_CHUNKS]
    assert 140 < len(beyond) < 260 and max(beyond) > 24 and max(long) <= 32
    for layout in (batch_layout(random.Random(s), max_chunks=32) for s in range(30)):
        assert len(layout["chunk_gaps"]) == layout["chunks"]
    held_out = [batch_layout(rng, held_out=True, max_chunks=32)["chunks"] for _ in range(50)]
    assert min(held_out) > MAX_CHUNKS


def test_eval_only_scores_a_resumed_model_on_short_and_long_clips(tmp_path, monkeypatch):
    """``--eval-only`` loads ``--resume`` and writes held-out accuracy on the stages' clips and on
    long ones, without training (the weights on disk are unchanged)."""
    import json

    from vidqa.synth import train
    from vidqa.synth.model import build_model_and_processor

    monkeypatch.setattr(train, "EVAL_FRAMES_PER_BATCH", 64)  # one or a few clips per batch on CPU
    model, _ = build_model_and_processor(0)
    train.save_weights(model, tmp_path / "model.safetensors")
    before = (tmp_path / "model.safetensors").read_bytes()
    assert train.main(["--out", str(tmp_path), "--resume", str(tmp_path), "--eval-only", "--eval-batches", "1",
                       "--workers", "0", "--max-chunks", "8", "--count-eval-batches", "1"]) == 0
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["heldout_count_accuracy"]["questions"] > 0
    for key in ("heldout_accuracy", "heldout_accuracy_long"):
        acc = result[key]
        assert acc["questions"] > 0 and 0 <= acc["m_avg"] <= 100
    assert (tmp_path / "model.safetensors").read_bytes() == before
    with pytest.raises(SystemExit):
        train.main(["--out", str(tmp_path), "--eval-only"])


def test_count_share_sets_how_many_batches_hold_count_targets():
    from vidqa.synth.train_data import COUNT_TARGETS_IN_CLIPS

    rng = random.Random(3)
    assert all(batch_layout(rng, count_share=1.0)["count_targets"] == COUNT_TARGETS_IN_CLIPS for _ in range(50))
    assert all(batch_layout(rng, count_share=0.0)["count_targets"] is None for _ in range(50))
    # the default draws are those of every earlier stage
    assert [batch_layout(random.Random(9)) for _ in range(5)] == \
        [batch_layout(random.Random(9), count_share=0.5) for _ in range(5)]


def test_count_accuracy_asks_count_questions_by_true_count(synth_adapter, monkeypatch):
    """Counting on held-out clips with pairs shown 1-6 times: every question is a count one, the
    buckets split the questions by their answer, and the same seed gives the same clips."""
    from vidqa.synth import count_eval

    batch = count_eval.count_batch(random.Random(0), 2, 3)
    assert all(q.task == "count" and q.kind == "mc" for qs in batch["qa"] for q in qs)
    assert batch["frames"].shape[:2] == (2, 48) and batch["count_targets"] == count_eval.COUNT_TARGETS_IN_CLIPS
    again = count_eval.count_batch(random.Random(0), 2, 3)
    assert [q.question for qs in batch["qa"] for q in qs] == [q.question for qs in again["qa"] for q in qs]
    acc = count_eval.count_accuracy(synth_adapter, "cpu", 1, clips_per_batch=2, chunks=3)
    assert acc["questions"] == sum(len(qs) for qs in batch["qa"]) > 0
    assert 0 <= acc["all"] <= 100 and set(acc) - {"all", "questions"} <= {"1-2", "3-4", "5+"}
