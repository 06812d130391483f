"""The GPU benchmark's results as markdown: a header with the setup, then one section per task
(video generation, vidqa per length, native vs vidqa at equal frames, the native out-of-memory
point, the profile) and a list of what was skipped or failed. A section without results says
``(none yet)``: the file is rewritten after every result, so a killed run still reads whole."""

from __future__ import annotations

import math

from gpu_video import GOP


def _f(x, spec: str = ".1f", none: str = "—") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return none
    return format(x, spec)


def si(x: float, unit: str) -> str:
    """``x`` with an SI prefix: ``si(2.5e12, "FLOP")`` is ``"2.5 TFLOP"``."""
    for prefix, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.1f} {prefix}{unit}"
    return f"{x:.0f} {unit}"


def minutes_label(minutes: float) -> str:
    return f"{minutes:g} min"


def _reading(setup: dict) -> str:
    # Records from before --full-size-read have no read_pixels: their frames were scaled to frame_pixels.
    read_pixels = setup.get("read_pixels", setup["frame_pixels"])
    if read_pixels is None:
        return (f"at full size and resized on the GPU by the processor to at most {setup['frame_pixels']:,} px, "
                "whole merged patches (both paths)")
    return (f"scaled to at most {read_pixels:,} px while decoding (both paths; "
            f"the processor then resizes to at most {setup['frame_pixels']:,} px, whole merged patches)")


def _header(setup: dict) -> list[str]:
    lines = [f"# vidqa on {setup.get('device', '?')}: {setup.get('model', '?')}, "
             f"random {setup.get('dtype', '')} weights", ""]
    if setup:
        lines += [f"torch {setup['torch']}, transformers {setup['transformers']}, Python {setup['python']}; "
                  f"1 fps, frames decoded from the {setup['video_size']} file {_reading(setup)}, "
                  f"chunks of {setup['chunk_frames']} frames, "
                  f"window {setup['window_chunks']} chunks, KV stored at {setup['kv_bits']} bits, "
                  f"{setup['token_budget']:,} visual tokens per question, {setup['new_tokens']} new tokens per answer. "
                  f"Model built in {setup['build_s']:.0f} s; weights {si(setup['weights_gib'] * 2**30, 'B')} "
                  f"({si(setup['params'], '')} parameters). Time budget {setup['time_budget_s']:.0f} s; "
                  f"{setup['cpu_count']} CPU cores.", ""]
    return lines


def _table(head: str, records: list[dict], row, skipped=None) -> list[str]:
    """A markdown table: the ``head`` row, its separator, then ``row(r)`` per record (``skipped(r)``
    for a record of a skipped measurement)."""
    lines = [head, "| " + " | ".join(["---"] * (head.count("|") - 1)) + " |"]
    return lines + [skipped(r) if r.get("skipped") else row(r) for r in records]


def _generation(gens: list[dict]) -> list[str]:
    def row(g):
        return (f"| {minutes_label(g['minutes'])} | {g['frames']:,} | {g['width']}x{g['height']} | {g['mib']:.0f} | "
                f"{'cached' if g['cached'] else _f(g['wall_s'])} | {_f(g['worker_s'])} | {_f(g['join_s'])} |")

    def skipped(g):
        return f"| {minutes_label(g['minutes'])} | — | — | — | skipped: {g['reason']} | — | — |"

    return _table("| video | frames | size | file (MiB) | generated in (s) | sum over workers (s) | join (s) |",
                  gens, row, skipped) + [
        "", f"Rendered at a quarter of the size, upscaled, libx264 ultrafast, GOP {GOP}, in segments by "
            f"{gens[0].get('workers', '?')} process(es) (one x264 thread each), joined without re-encoding. "
            "Videos made together share the pool (the first ones while the model is built): each one's time "
            "runs from its submission to its file being complete."]


def _vidqa(rows: list[dict]) -> list[str]:
    def timing(r):
        s = r.get("stages")
        staged = (f"{s['decode_wait']:.1f} / {s['preprocess']:.1f} / {s['vision']:.1f} / {s['llm_prefill']:.1f} / "
                  f"{s['offload']:.1f} / {s['other']:.1f} ({r['staged_ingest_s']:.1f})"
                  if s and "staged_ingest_s" in r else "— (not measured)")
        return (f"| {minutes_label(r['minutes'])} | {r['frames']:,} | {r['ingest_s']:.1f} | {r['x_real_time']:.0f}x | "
                f"{staged} | {r['ttft_first_s']:.2f} / {r['ttft_followup_s']:.2f} | "
                f"{_f(r['decode_tok_s'], '.0f')} |")

    def memory(r):
        return (f"| {minutes_label(r['minutes'])} | {r['visual_tokens']:,} | {r['attended_per_question']:,.0f} | "
                f"{_f(r['gpu_peak_ingest_gib'], '.2f')} / {_f(r['gpu_peak_gib'], '.2f')} | "
                f"{_f(r['gpu_peak_above_weights_gib'], '.2f')} | "
                f"{r['host_kv_gib']:.2f} | {r['rss_gib']:.1f} / {r['rss_peak_gib']:.1f} |")

    done = [r for r in rows if not r.get("skipped")]
    lines = _table("| video | frames | ingest (s) | x real time "
                   "| stages timed apart: decode wait / preprocess / vision / prefill / offload wait / other (their ingest) (s) "
                   "| TTFT first / follow-up median (s) | decode tok/s |", rows, timing,
                   lambda r: f"| {minutes_label(r['minutes'])} | — | skipped: {r['reason']} | | | | |")
    lines += ["", *_table("| video | visual tokens stored | attended per question "
                          "| peak GPU total: ingest / with questions (GiB) | above weights (GiB) | host KV (GiB) "
                          "| host RSS after ingest / peak (GiB) |", done, memory)]
    if len(done) >= 2:
        ref = next((r for r in done if r.get("reference")), done[0])
        longest = max(done, key=lambda r: r["minutes"])
        if longest is not ref and ref["gpu_peak_gib"]:
            ratio = longest["gpu_peak_gib"] / ref["gpu_peak_gib"]
            lines += ["", f"Peak GPU memory (total), {minutes_label(longest['minutes'])} / "
                          f"{minutes_label(ref['minutes'])}: "
                          f"{ratio:.3f} ({'within' if abs(ratio - 1) <= 0.10 else 'OUTSIDE'} the ±10% target)."]
    background = [f"{minutes_label(r['minutes'])} {r['offload_background_s']:.1f} s" for r in done
                  if r.get("offload_background_s") is not None]
    return lines + ["", "Ingest and the questions as a user runs them: the host queues each chunk's work while the "
                        "GPU still runs the previous one's. The stages come from a second ingest of the same video "
                        "with the device synchronised at every stage boundary (the times add up to that ingest's "
                        "wall time, in brackets; the synchronisation itself makes it longer, and its hooks keep the vision tower off "
                        "its CUDA graph). Decode wait is the time the pipeline waited for the decoder thread; offload wait "
                        "the time it waited for the offload thread, which quantizes and copies each chunk's KV "
                        "to the host in parallel with the other stages"
                    + (f" (its own time: {', '.join(background)})." if background else ".")]


def first_answer_s(ours: dict) -> float:
    """vidqa's time to first answer: ingest + the first question's time to first token."""
    return ours["ingest_s"] + ours["ttft_first_s"]


def speedup(nat: dict, ours: dict) -> float:
    """Native time to first answer over vidqa's; NaN where native failed."""
    return nat["total_s"] / first_answer_s(ours) if nat["status"] == "ok" else float("nan")


def _speedups(n: dict) -> str:
    runs = n.get("speedups") or []
    if len(runs) < 2:
        return f"{speedup(n['native'], n['vidqa']):.2f}x"
    return f"{speedup(n['native'], n['vidqa']):.2f}x (median of {len(runs)}: {min(runs):.2f}-{max(runs):.2f})"


def _native_equal(eq: list[dict]) -> list[str]:
    def row(n):
        nat, ours = n["native"], n["vidqa"]
        return (f"| {nat['frames']} | {nat['status']} | {_f(nat['read_s'])} / {_f(nat.get('processor_s'))} / "
                f"{_f(nat.get('generate_s'))} | {_f(nat['total_s'])} | {_f(nat['gpu_peak_gib'])} | {first_answer_s(ours):.1f} | "
                f"{_f(ours['gpu_peak_gib'])} | {nat.get('visual_tokens', 0):,} / {ours['visual_tokens']:,} | "
                f"{_speedups(n)} |")

    return _table("| frames | native status | native: read / processor / generate (s) "
                  "| native time to first answer (s) | native peak GPU total (GiB) | vidqa time to first answer (s) "
                  "| vidqa peak GPU total (GiB) | visual tokens native / vidqa | speed-up |", eq, row,
                  lambda n: f"| {n['frames']} | skipped: {n['reason']} | | | | | | | |") + [
        "", "Time to first answer: decoding the frames from the file + everything until the first answer token "
            "(vidqa: ingest + first question). Both read the same sampled frames at the same size."]


def _native_oom(oom: list[dict], equal: list[dict]) -> list[str]:
    def row(n):
        status = n["status"] + (f" (in {n['failed_in']})" if n.get("failed_in") else "")
        return (f"| {n['frames']} | {status} | {_f(n['total_s'])} | {_f(n['gpu_peak_gib'])} | "
                f"{n.get('visual_tokens', '—')} |")

    lines = _table("| frames | status | time to first answer (s) | peak GPU total (GiB) | visual tokens |", oom, row,
                   lambda n: f"| {n['frames']} | skipped: {n['reason']} | | | |")
    cap = next((n["cap_gib"] for n in oom if n.get("cap_gib")), None)
    # the equal-frame runs had the whole device: they count only for an uncapped search
    fit = [] if cap else [n["frames"] for n in equal if not n.get("skipped") and n["native"]["status"] == "ok"]
    fit += [n["frames"] for n in oom if not n.get("skipped") and n["status"] == "ok"]
    failed = [n["frames"] for n in oom if not n.get("skipped") and n["status"] != "ok"]
    where = (f" with GPU memory capped at {cap:g} GiB (torch.cuda.set_per_process_memory_fraction), as on a "
             f"{cap:g} GB card" if cap else "")
    return lines + ["", f"Largest that fit{where}: {max(fit) if fit else 'none'}; first that failed: "
                        f"{min(failed) if failed else 'none of those tried'}."]


def _profile(p: dict) -> list[str]:
    if p.get("skipped"):
        return [f"skipped: {p['reason']}"]
    lim = p["limits"]
    bw = (f", pinned copies {lim['d2h_gb_s']:.1f} GB/s device->host and {lim['h2d_gb_s']:.1f} GB/s host->device"
          if lim.get("d2h_gb_s") else "")
    total = next(r["measured_s"] for r in p["rows"] if r["stage"] == "ingest")

    def row(r):
        ratio = r["measured_s"] / r["limit_s"] if r["limit_s"] else None
        return (f"| {r['stage']} | {r['work']} | {_f(r['limit_s'], '.2f')} | {r['measured_s']:.2f} | "
                f"{r['measured_s'] / total:.0%} | {_f(ratio, '.1f')}{'x' if ratio else ''} |")

    return [f"{minutes_label(p['minutes'])} video, {p['frames']:,} frames. Measured in this run: "
            f"{lim['matmul']['dtype']} matmul {lim['matmul']['n']}^3 at {si(lim['matmul']['tflops'] * 1e12, 'FLOP/s')} "
            f"(median){bw}. Vision tower {si(p['vision_gflop_per_frame'] * 1e9, 'FLOP')} per frame; LLM prefill "
            f"(linear) {si(p['llm_gflop_per_token'] * 1e9, 'FLOP')} per token.", "",
            *_table("| stage | work | time at the limit (s) | measured (s) | share of ingest | measured / limit |",
                    p["rows"], row),
            "", "FLOPs count matmuls only (2 per multiply-add), from the configs and the shapes that ran; "
                "attention counts causal pairs in the LLM and whole windows/grids in the vision tower."]


def markdown(report) -> str:
    """The results of ``report`` (a :class:`gpu_report.Report`) as markdown: setup, generation,
    vidqa per length, native comparison, OOM search, profile, skipped measurements."""
    setup = (report.of("setup") or [{}])[-1]
    profile = report.of("profile")
    sections = [
        ("Video generation (not part of ingest)", report.of("video"), _generation),
        ("vidqa ingest and questions", report.of("vidqa"), _vidqa),
        ("Native transformers vs vidqa on the same frames", report.of("native_equal"), _native_equal),
        ("Native transformers: out-of-memory point", report.of("native_oom"),
         lambda oom: _native_oom(oom, report.of("native_equal"))),
        ("Profile of the reference ingest against the device's limits", profile[-1:], lambda p: _profile(p[0])),
    ]
    lines = _header(setup)
    for title, records, render in sections:
        lines += [f"## {title}", "", *(render(records) if records else ["(none yet)"]), ""]
    skipped = [r for r in report.records if r.get("skipped")]
    errors = [r for r in report.records if r.get("section") == "error"]
    if skipped or errors:
        lines += ["## Skipped or failed", ""]
        lines += [f"- {r['section']} {r.get('label', '')}: {r['reason']}" for r in skipped]
        lines += [f"- {r['task']}: {r['error']}" for r in errors]
        lines.append("")
    done = report.of("done")
    if done:
        lines.append(f"Finished at {done[-1]['t_s']:.0f} s of the {setup.get('time_budget_s', 0):.0f} s budget.")
    return "\n".join(lines)
