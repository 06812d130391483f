"""The ``vidqa`` command line: ``ask``, ``ingest``, ``ui``, ``eval``, ``synth``.

Thin: it resolves settings (:mod:`vidqa.app.settings`), calls :class:`~vidqa.pipeline.VideoQA`,
and prints. Every user error is one line on stderr with the error type's exit code; a traceback
only with ``--debug``.
"""

from __future__ import annotations

import argparse
import json
import sys

from vidqa.errors import VidqaError

EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130


def _add_model_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model and sampling (defaults < --config file < VIDQA_* env < flags)")
    g.add_argument("--model", help="hub id, local folder, 'synth-tiny' or tiny-random/<family> "
                                   "(default: Qwen/Qwen2.5-VL-3B-Instruct)")
    g.add_argument("--device", help="cuda, cuda:1 or cpu (default: cuda when available)")
    g.add_argument("--config", help="YAML or TOML settings file")
    g.add_argument("--fps", type=float, help="frames sampled per second of video (default 1.0)")
    g.add_argument("--num-frames", type=int, help="sample exactly this many frames instead of --fps")
    g.add_argument("--max-frames", type=int, help="cap on sampled frames (default 14400)")
    g.add_argument("--chunk-frames", type=int, help="frames encoded and prefilled together (even; default 16)")
    g.add_argument("--max-pixels", type=int, help="pixels per frame before encoding (default: the model's)")
    g.add_argument("--decoder", choices=["auto", "pyav", "decord"], help="video decoder (default auto)")
    g.add_argument("--decode-workers", type=int, help="decoders reading sparse samples in parallel "
                                                      "(default: up to 4, one per core)")
    g.add_argument("--reducers", help="token reducer chain, e.g. 'temporal:keep_ratio=0.5,tome:keep_ratio=0.5'")
    g.add_argument("--token-budget", type=int, help="visual tokens given to the LLM per question (default 8192)")
    g.add_argument("--window-chunks", type=int, help="recent chunks each chunk attends to while ingesting (default 2)")
    g.add_argument("--kv-bits", type=int, choices=[4, 8, 16], help="stored KV precision (default 16)")
    g.add_argument("--compress-ratio", type=float, help="fraction of retrieved visual KV kept per layer (default 1)")
    g.add_argument("--positions", choices=["original", "compact"], help="positions of retrieved KV (default original)")
    g.add_argument("--retrieval", choices=["mass", "mean"], help="block score: the attention the question would pay "
                                                              "a block (mass, default) or ReKV's mean-key score")
    g.add_argument("--retrieval-window", type=int, help="last prompt tokens whose queries score blocks "
                                                        "(default 0: every token; 1: the answer position)")
    g.add_argument("--answer-weight", type=float, help="weight of the answer position's attention share in the "
                                                       "block score, blended with the window's (0..1)")
    g.add_argument("--layer-keep", help="in-LLM pruning (PyramidDrop), e.g. '8:0.5,16:0.25': visual KV kept from "
                                        "those layers on (default off)")
    g.add_argument("--choice", choices=["generate", "likelihood"],
                   help="multiple choice: the greedy reply's letter (generate, default) or the option whose "
                        "whole reply the model finds likeliest (likelihood)")
    g.add_argument("--cache-dir", help="where ingested memories are saved (default ~/.cache/vidqa)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vidqa", description="Question answering over long videos with vision-language models.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    ask = sub.add_parser("ask", help="answer a question about a video",
                         description="Answer a question about a video; the answer streams to stdout.")
    ask.add_argument("video", help="video file")
    ask.add_argument("question", help="the question")
    ask.add_argument("--options", nargs="+", metavar="TEXT", help="ask as multiple choice with these options")
    ask.add_argument("--json", action="store_true", help="print one JSON object instead of streaming text")
    ask.add_argument("--max-new-tokens", type=int, help="answer length limit (default 64)")
    ask.add_argument("--no-cache", action="store_true", help="neither read nor write the saved memory")
    _add_model_flags(ask)

    ing = sub.add_parser("ingest", help="ingest a video and save its memory for later questions")
    ing.add_argument("video", help="video file")
    ing.add_argument("--json", action="store_true", help="print a JSON summary")
    _add_model_flags(ing)

    ui = sub.add_parser("ui", help="start the web app")
    ui.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1; 0.0.0.0 exposes it)")
    ui.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    ui.add_argument("--allowed-dir", action="append", default=[], help="folder whose videos may be opened by path")
    ui.add_argument("--max-upload-mb", type=int, default=2048, help="upload size limit in MB")
    _add_model_flags(ui)

    # These two own their flags (see `vidqa eval --help`, `vidqa synth --help`); main() hands them the rest.
    sub.add_parser("eval", help="batch evaluation on MLVU-format question files", add_help=False)
    sub.add_parser("synth", help="generate a synthetic long video with questions", add_help=False)
    return parser


def _settings(args):
    from vidqa.app.settings import resolve

    flags = {k: getattr(args, k, None) for k in (
        "config", "model", "device", "fps", "num_frames", "max_frames", "chunk_frames", "max_pixels",
        "decoder", "decode_workers", "reducers", "token_budget", "window_chunks", "kv_bits", "compress_ratio",
        "positions", "retrieval", "retrieval_window", "answer_weight", "layer_keep", "max_new_tokens", "choice", "cache_dir")}
    return resolve(flags)


class _ProgressBar:
    """A tqdm bar on stderr created on the first update, so that an early error prints alone."""

    def __init__(self, desc: str):
        self.desc, self.bar = desc, None

    def __call__(self, done: int, total: int, info: dict) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(desc=self.desc, unit="frame", total=total, file=sys.stderr, leave=False,
                            dynamic_ncols=True)
        self.bar.total = total
        self.bar.n = done
        self.bar.set_postfix(tokens=f"{info.get('tokens_kept', 0)}/{info.get('tokens_in', 0)}", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _make_qa(settings):
    from vidqa.pipeline import VideoQA

    return VideoQA(model=settings.model, config=settings.config, device=settings.device)


def cmd_ask(args) -> int:
    settings = _settings(args)
    if args.no_cache:
        import tempfile

        settings.config.cache_dir = tempfile.mkdtemp(prefix="vidqa-nocache-")
    qa = _make_qa(settings)
    bar = _ProgressBar("ingest")
    try:
        memory = qa.ingest(args.video, progress=bar, use_cache=not args.no_cache)
    finally:
        bar.close()
    if args.json:
        answer = qa.ask(memory, args.question, options=args.options)
        out = answer.to_dict()
        out.update(video=args.video, question=args.question, options=args.options, model=qa.model_name)
        print(json.dumps(out))
        return 0
    answer = qa.ask(memory, args.question, options=args.options,
                    stream=lambda piece: (sys.stdout.write(piece), sys.stdout.flush()))
    sys.stdout.write("\n")
    if answer.choice is not None:
        print(f"choice: ({answer.choice}) {args.options[answer.choice_index]}")
    spans = ", ".join(f"{_clock(a)}-{_clock(b)}" for a, b in answer.spans)
    print(f"evidence: {spans}  |  visual tokens attended {answer.tokens['visual_attended']} of "
          f"{answer.tokens['visual_stored']} stored  |  first token {answer.timings['ttft']:.2f}s",
          file=sys.stderr)
    return 0


def cmd_ingest(args) -> int:
    settings = _settings(args)
    qa = _make_qa(settings)
    bar = _ProgressBar("ingest")
    try:
        memory = qa.ingest(args.video, progress=bar)
    finally:
        bar.close()
    summary = {"video": args.video, "memory": str(qa.memory_path(__import__("pathlib").Path(args.video))),
               "blocks": len(memory.blocks), "visual_tokens": memory.num_visual_tokens,
               "host_bytes": memory.host_bytes, "from_cache": bool(memory.stats.get("loaded_from_cache"))}
    print(json.dumps(summary) if args.json else
          f"ingested {args.video}: {summary['blocks']} blocks, {summary['visual_tokens']} visual tokens, "
          f"{summary['host_bytes'] / 2**20:.1f} MiB -> {summary['memory']}")
    return 0


def cmd_ui(args) -> int:
    from vidqa.app.ui import launch

    settings = _settings(args)
    launch(settings, host=args.host, port=args.port, allowed_dirs=args.allowed_dir,
           max_upload_mb=args.max_upload_mb)
    return 0


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    debug = "--debug" in argv[:1]
    rest = argv[1:] if debug else argv
    if rest and rest[0] in DELEGATED:
        return _run(lambda: DELEGATED[rest[0]]()(rest[1:]) or 0, debug)
    args = parser.parse_args(argv)
    return _run(lambda: _dispatch(parser, args), args.debug)


def _evaluate_main():
    from vidqa.app.evaluate import evaluate_main

    return evaluate_main


def _synth_main():
    from vidqa.synth.cli import synth_main

    return synth_main


DELEGATED = {"eval": _evaluate_main, "synth": _synth_main}


def _dispatch(parser, args) -> int:
    if args.command == "ask":
        return cmd_ask(args)
    if args.command == "ingest":
        return cmd_ingest(args)
    if args.command == "ui":
        return cmd_ui(args)
    parser.print_help()
    return 2


def _run(fn, debug: bool) -> int:
    try:
        return fn()
    except VidqaError as err:
        if debug:
            raise
        print(f"vidqa: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("vidqa: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:  # noqa: BLE001 -- the last line of defence: one line, not a traceback
        if debug:
            raise
        first = str(err).splitlines()[0] if str(err) else ""
        print(f"vidqa: internal error: {type(err).__name__}: {first[:200]} (run with --debug for details)",
              file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
