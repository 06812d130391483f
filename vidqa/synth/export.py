"""Turning trainer weights into the bundled model folder, with its model card.

    python -m vidqa.synth.export CHECKPOINT_DIR assets/models/synth-tiny [--log run.jsonl ...]

``CHECKPOINT_DIR`` holds the trainer's ``model.safetensors`` and ``training.json``
(:mod:`vidqa.synth.train`). The architecture, tokenizer and processor are rebuilt by
:func:`vidqa.synth.model.build_model_and_processor` -- the same builders the trainer used -- and
written with ``save_pretrained``, so the folder loads with plain ``transformers`` and vidqa's Qwen
adapter drives it unchanged (``--model synth-tiny``). ``--log`` names the training logs of every
stage (their final summary lines go into the card's training history).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vidqa.synth.train_data import COUNT_SHARE, MAX_CHUNKS

CARD = """\
# synth-tiny

A {params:.1f}M-parameter Qwen2.5-VL (`Qwen2_5_VLForConditionalGeneration`: {vision} vision blocks
{vision_width} wide, {layers} language-model layers {width} wide, a {vocab}-word tokenizer) trained
from scratch by `python -m vidqa.synth.train` on vidqa's **synthetic world only**: coloured shapes,
word cards, scene backgrounds and anomalies rendered by `vidqa/synth/`. It knows nothing else. Do not
expect it to answer about real videos; it exists so that vidqa's pipeline (streaming memory, token
reduction, KV compression and retrieval) can be tested for answer quality offline.

## Training
{history}

Clips of 1-6 chunks of 16 frames (1 fps, 224x112 model frames), placed at random times in a
virtual video of up to 3 hours with random position gaps, so that the model sees the timestamps and
positions that long videos give it. Every MLVU-style question the clip supports is asked three
ways (multiple choice, open-ended, and with the answer given away), plus a description of the clip.
The first stage trains the letter lookup on text alone (`--text-warmup-steps`). From stage 4 a
linear probe reads each visual token's shape, colour and card word (`--token-loss`; the probe is not
shipped). From stage 6 the rotary base is Qwen2.5-VL's 1e6 (1e4 before) and the answer position is
taught where to look: at language-model layer 3 its attention should fall on the tokens showing what
the question names (`--lookup-loss`), that layer should already carry the open answer
(`--readout-loss`), and layer 4 should attend to the correct option (`--option-loss`); see
`vidqa/synth/lookup_loss.py`. Stages 6-7 (look-up loss alone) put 94% of the answer position's
attention on the needle with findNeedle still at 37%; stage 8, with the other two, took it to 94%.
From stage 9 each clip is prefilled as vidqa's streaming ingest prefills a video (`--prefill
streaming`: every chunk sees the prompt, pooled entries of the chunks before its window and the last
two chunks, not the whole clip; `vidqa/synth/streaming_prefill.py`), and the accuracy below is
measured the same way. A stage trained with `--max-chunks` also saw, in half its batches, clips of up
to that many chunks, as many as retrieval gives the model at an hour (~30 blocks); its held-out
accuracy on such long clips is given beside the table. A stage trained with `--count-share 1.0
--count-evidence first` counted: every clip showed two (colour, shape) pairs 1-6 times,
and a count question's look-up evidence was the first sight of each appearance rather than all of
it, so that the attention it draws grows with the count and not with how long each appearance lasts
(`first_sightings` in `vidqa/synth/lookup_loss.py`). The card's held-out clips mostly ask for counts
of 1; counting by true count is measured on other held-out clips (`vidqa/synth/count_eval.py`) and
given beside the table.

## Accuracy
Held-out synthetic clips (seeds above 10,000,000, never used in training), multiple choice,
teacher-forced letter accuracy (%) of the final stage, 4 options (chance 25%):

{accuracy}

Long-video accuracy through vidqa's pipeline, against uniform frame sampling at the same visual-token
budget, is measured by `bench/quality.py` (results: `bench/results/quality_synth_tiny_cpu.md`).

## Use
```bash
vidqa ask assets/demo.mp4 "What colour was the diamond that appeared in the video?" \\
    --options red green purple orange --model synth-tiny
```
"""


def _summary_lines(logs: list[Path]) -> list[dict]:
    out = []
    for log in logs:
        rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        warm = max((r["warmup_step"] for r in rows if "warmup_step" in r), default=0)
        # The warm-up may stop early at its time limit: the last logged step is what ran.
        out += [{**r, "text_warmup_done": r.get("text_warmup_done", warm)} for r in rows if "heldout_accuracy" in r]
    return out


AUX_LOSSES = {"token_loss": "token", "lookup_loss": "look-up", "readout_loss": "read-out", "option_loss": "option"}


def _aux(stage: dict) -> str:
    """The auxiliary loss weights a stage trained with and how it prefilled its clips, e.g.
    ``", losses token 0.5, look-up 0.5, streaming prefill (window 2)"``."""
    used = [f"{name} {stage[key]}" for key, name in AUX_LOSSES.items() if stage.get(key)]
    text = f", losses {', '.join(used)}" if used else ""
    if stage.get("prefill") == "streaming":
        text += f", streaming prefill (window {stage.get('window_chunks')})"
    if stage.get("max_chunks", MAX_CHUNKS) > MAX_CHUNKS:
        text += f", half the batches clips of {MAX_CHUNKS + 1}-{stage['max_chunks']} chunks"
    if stage.get("count_share", COUNT_SHARE) != COUNT_SHARE:
        text += f", count targets in {stage['count_share']:.0%} of the batches"
    if stage.get("count_evidence", "all") != "all":
        text += f", count evidence: {stage['count_evidence']} sights"
    return text


def model_card(model, info: dict, history: list[dict]) -> str:
    cfg = model.config
    text, vision = cfg.text_config, cfg.vision_config
    stages = history or [info]
    lines = []
    for i, s in enumerate(stages, 1):
        acc = s["heldout_accuracy"]
        warm = s.get("text_warmup_done", s.get("text_warmup_steps", 0))
        lines.append(f"{i}. {s.get('device', '?')}: " + (f"{warm} text warm-up steps, then " if warm else "") +
                     f"{s['steps']} video steps of {s.get('frames_per_batch', '?')} frames in {s['train_seconds']:.0f} s"
                     f"{' (resumed)' if s.get('resumed_from') else ''}{_aux(s)}; held-out M-Avg {acc['m_avg']}%.")
    acc = info["heldout_accuracy"]
    table = ["| task | accuracy |", "| --- | --- |"]
    table += [f"| {k} | {v} |" for k, v in acc.items() if k not in ("questions", "m_avg", "hinted_letter_acc")]
    table += [f"| **M-Avg** | **{acc['m_avg']}** |", "",
              f"{acc['questions']} questions; with the answer given in the question, the letter is right "
              f"{acc['hinted_letter_acc']}% of the time."]
    long = info.get("heldout_accuracy_long")
    if long:
        table += ["", f"On held-out clips of {MAX_CHUNKS + 1}-{info['max_chunks']} chunks ({long['questions']} questions): "
                  + ", ".join(f"{k} {v}" for k, v in long.items() if k not in ("questions", "m_avg", "hinted_letter_acc"))
                  + f"; M-Avg {long['m_avg']}."]
    counts = info.get("heldout_count_accuracy")
    if counts:
        table += ["", f"Counting on held-out clips of 6 chunks that show two pairs 1-6 times each ({counts['questions']} "
                  "questions), by the true count: " + ", ".join(f"{k} {v}" for k, v in counts.items() if k != "questions")
                  + "."]
    return CARD.format(params=sum(p.numel() for p in model.parameters()) / 1e6, vision=vision.depth,
                       vision_width=vision.hidden_size, layers=text.num_hidden_layers, width=text.hidden_size,
                       vocab=text.vocab_size, history="\n".join(lines), accuracy="\n".join(table))


def export(checkpoint: Path, folder: Path, logs: list[Path] = ()) -> Path:
    """Writes ``folder`` (config, bf16 weights, tokenizer, processor, training.json, README.md)."""
    import torch
    from safetensors.torch import load_file

    from vidqa.synth.model import build_model_and_processor
    from vidqa.synth.train import save_pretrained

    model, processor = build_model_and_processor(0)
    state = load_file(str(checkpoint / "model.safetensors"))
    missing, unexpected = model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise ValueError(f"checkpoint does not match the architecture: missing {missing}, unexpected {unexpected}")
    info = json.loads((checkpoint / "training.json").read_text())
    history = _summary_lines(list(logs))
    info["history"] = history
    save_pretrained(model.to(torch.bfloat16), processor, folder, info)
    (folder / "README.md").write_text(model_card(model, info, history))
    return folder


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vidqa.synth.export", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("folder", type=Path)
    ap.add_argument("--log", type=Path, nargs="*", default=[], help="training logs of every stage, in order")
    args = ap.parse_args(argv)
    print(export(args.checkpoint, args.folder, args.log))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
