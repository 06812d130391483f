"""Gathered-block attention at 7B shapes: time, bandwidth, and speed-up over dequantize-then-SDPA.

    python bench/kernels.py                 # on a GPU: 16k..1M tokens, writes bench/results/kernels_<device>.md
    python bench/kernels.py --sweep         # first measure the kernel's tuning knobs at 1M tokens, then the table
    python bench/kernels.py --profile       # also: torch.profiler over 20 decode calls at 64k and 1M tokens
    python bench/kernels.py --smoke         # tiny sizes on CPU (reference path only; with --profile too)

Shapes: 28 query heads, 4 KV heads, head dim 128 (Qwen2.5-VL-7B), blocks of 256 tokens, all blocks
selected, int8 KV with group 32. Bandwidth counts the KV bytes (data + scales) the kernel must read;
it is compared with a device-to-device copy measured in the same run. The baseline dequantizes the
selected blocks to bf16 and runs PyTorch SDPA (flash/mem-efficient backend) on them. Times are
medians of CUDA-event-timed repeats after warm-up; such a call time also holds whatever host time
the call takes beyond its GPU time (the GPU waits for the launches). "graph" replays the call
captured in a CUDA graph back to back, which leaves out the host: the two differ by the per-call host
overhead. ``--profile`` shows where that overhead goes (top ops by CPU and by CUDA time, kernel time
per call against the event-timed call); printed, and written to ``$OUT`` when that is set.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import statistics
import time
from pathlib import Path

import torch

from vidqa.kernels.block_attention import block_attention
from vidqa.kernels.quant import dequantize_kv, quantize_kv

# Knobs of block_attention_triton tried by --sweep, per query length (decode, 128-token question).
# stages 3/5/7 keep 1/2/3 KV tiles in flight (the table lookup takes half the stages, see triton_impl);
# bn=256 with 4 warps spills registers, so it is left out. dequant "f32" is the earlier float32
# dequantization, kept in the sweep as the same-run baseline of "f16". Each list holds the default.
SWEEP = {
    1: [dict(bm=16, bn=bn, num_warps=w, stages=st, waves=4, dequant=dq)
        for dq, bn, w, st in itertools.product(("f16", "f32"), (64, 128), (4, 8), (3, 5))]
       + [dict(bm=16, bn=bn, num_warps=4, stages=st, waves=wv, dequant="f16")
          for bn, st, wv in itertools.product((64, 128), (5, 7), (2, 8))]
       + [dict(bm=16, bn=256, num_warps=8, stages=3, waves=4, dequant="f16")],
    128: [dict(bm=bm, bn=bn, num_warps=w, stages=3, waves=2, dequant="f16")
          for bm, bn, w in itertools.product((64, 128), (32, 64), (4, 8))]
         + [dict(bm=64, bn=64, num_warps=8, stages=5, waves=4, dequant=dq) for dq in ("f16", "f32")],
}

HQ, HKV, D, BLOCK = 28, 4, 128, 256
PROFILE_TOKENS = (65536, 1048576)


def timed(fn, repeats: int = 20, warmup: int = 3, calls: int = 1) -> float:
    """Median seconds per call of ``fn()``, over ``repeats`` runs of ``calls`` calls enqueued back to
    back (``calls=1``: one call alone, its host launch included when the host is the slower side)."""
    for _ in range(warmup):
        fn()
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        if cuda:
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        if cuda:
            b.record()
            torch.cuda.synchronize()
            times.append(a.elapsed_time(b) / 1000 / calls)
        else:
            times.append((time.perf_counter() - t) / calls)
    return statistics.median(times)


def pipelined(fn) -> float:
    """Seconds per call of 50 calls enqueued back to back: what a loop over layers sees without a
    graph, the host's launch time hidden wherever the GPU is the slower side (NaN without CUDA)."""
    return timed(fn, repeats=5, warmup=1, calls=50) if torch.cuda.is_available() else float("nan")


def graph_timed(fn, replays: int = 20, repeats: int = 5) -> float:
    """Seconds per call of ``fn`` captured in a CUDA graph and replayed ``replays`` times back to back
    (median over ``repeats``): GPU time without host launch overhead. NaN without CUDA or when the
    call cannot be captured (a host synchronisation inside it), with the reason printed."""
    if not torch.cuda.is_available():
        return float("nan")
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up (compilation, allocator) off the capture
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
    except Exception as e:  # noqa: BLE001 - any capture failure only means "no graph number"
        print(json.dumps({"graph": "not capturable", "error": f"{type(e).__name__}: {e}"[:300]}), flush=True)
        torch.cuda.synchronize()
        return float("nan")
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(replays):
            graph.replay()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) / 1000 / replays)
    del graph
    return statistics.median(times)


def copy_bandwidth(device) -> float:
    """Bytes/s of a device-to-device copy (read + write counted)."""
    n = 1 << 28 if device.type == "cuda" else 1 << 22
    x = torch.empty(n, dtype=torch.uint8, device=device)
    y = torch.empty_like(x)
    t = timed(lambda: y.copy_(x), repeats=10)
    return 2 * n / t


def kv_store(n_tokens: int, device):
    nb = n_tokens // BLOCK
    k = torch.randn(nb, HKV, BLOCK, D, device=device, dtype=torch.bfloat16)
    v = torch.randn_like(k)
    kq, vq = quantize_kv(k, 8, 32), quantize_kv(v, 8, 32)
    return kq, vq, torch.arange(nb, device=device, dtype=torch.int32)


def inputs(lq: int, device):
    """Query and the question's own (tail) keys/values for ``lq`` query tokens."""
    q = torch.randn(HQ, lq, D, device=device, dtype=torch.bfloat16)
    tail_k = torch.randn(HKV, lq, D, device=device, dtype=torch.bfloat16)
    return q, tail_k, torch.randn_like(tail_k)


def attention_call(q, kq, vq, table, tail_k, tail_v, backend: str, cfg: dict | None):
    """The call being measured: the public op, or the Triton kernel with knobs ``cfg``."""
    if cfg:
        from vidqa.kernels.block_attention.triton_impl import block_attention_triton

        return lambda: block_attention_triton(q, kq, vq, table, None, tail_k, tail_v, D ** -0.5, **cfg)
    return lambda: block_attention(q, kq, vq, table, tail_k=tail_k, tail_v=tail_v, backend=backend)


def sweep(device, n_tokens: int = 1 << 20) -> dict[int, dict]:
    """The fastest knobs per query length at ``n_tokens`` int8 KV tokens, each checked for
    correctness against the reference on a small store first. Prints every config, then the best
    per query length."""
    from vidqa.kernels.block_attention.naive import block_attention_naive
    from vidqa.kernels.block_attention.triton_impl import block_attention_triton

    small_k, small_v, small_table = kv_store(4096, device)
    kq, vq, table = kv_store(n_tokens, device)
    best = {}
    for lq, grid in SWEEP.items():
        q, tail_k, tail_v = inputs(lq, device)
        ref, _ = block_attention_naive(q, dequantize_kv(small_k).to(torch.bfloat16), dequantize_kv(small_v).to(torch.bfloat16),
                                       small_table, None, tail_k, tail_v, D ** -0.5)
        results = []
        for cfg in grid:
            try:
                o, _ = block_attention_triton(q, small_k, small_v, small_table, None, tail_k, tail_v, D ** -0.5, **cfg)
                err = float((o - ref.float()).abs().max())
                if not err < 5e-2:
                    print(json.dumps({"lq": lq, **cfg, "error": err}), flush=True)
                    continue
                t = timed(attention_call(q, kq, vq, table, tail_k, tail_v, "triton", cfg), repeats=10, warmup=2)
            except Exception as e:  # out of shared memory / registers for this shape: not a candidate
                print(json.dumps({"lq": lq, **cfg, "failed": type(e).__name__}), flush=True)
                continue
            results.append((t, cfg))
            print(json.dumps({"lq": lq, **cfg, "ms": round(t * 1e3, 4)}), flush=True)
        if not results:
            raise RuntimeError(f"no config of the sweep ran for lq={lq}")
        t, best[lq] = min(results, key=lambda r: r[0])
        print(json.dumps({"best": {"lq": lq, "tokens": n_tokens, **best[lq], "ms": round(t * 1e3, 4)}}), flush=True)
    del kq, vq
    torch.cuda.empty_cache()
    return best


def run(lengths: list[int], lqs: list[int], device, backend: str, tuning: dict | None = None) -> list[dict]:
    rows = []
    bw_copy = copy_bandwidth(device)
    for n_tokens in lengths:
        kq, vq, table = kv_store(n_tokens, device)
        nb = table.numel()
        kv_bytes = kq.nbytes + vq.nbytes
        for lq in lqs:
            q, tail_k, tail_v = inputs(lq, device)
            call = attention_call(q, kq, vq, table, tail_k, tail_v, backend, tuning[lq] if tuning else None)
            t_kernel = timed(call)
            t_graph = graph_timed(call)
            t_pipe = pipelined(call)

            def baseline():
                kk = dequantize_kv(kq).to(torch.bfloat16).permute(1, 0, 2, 3).reshape(HKV, nb * BLOCK, D)
                vv = dequantize_kv(vq).to(torch.bfloat16).permute(1, 0, 2, 3).reshape(HKV, nb * BLOCK, D)
                kk = torch.cat([kk, tail_k], 1).repeat_interleave(HQ // HKV, 0)
                vv = torch.cat([vv, tail_v], 1).repeat_interleave(HQ // HKV, 0)
                mask = torch.ones(lq, kk.shape[1], dtype=torch.bool, device=device)
                mask[:, -lq:] = torch.ones(lq, lq, dtype=torch.bool, device=device).tril()
                return torch.nn.functional.scaled_dot_product_attention(q[None], kk[None], vv[None], attn_mask=mask)

            try:
                t_base = timed(baseline, repeats=5)
            except torch.cuda.OutOfMemoryError:
                t_base = float("nan")
                torch.cuda.empty_cache()
            rows.append(dict(tokens=n_tokens, lq=lq, kernel_ms=t_kernel * 1e3, graph_ms=t_graph * 1e3,
                             pipelined_ms=t_pipe * 1e3, pipelined_frac=kv_bytes / t_pipe / bw_copy,
                             base_ms=t_base * 1e3, gbps=kv_bytes / t_kernel / 1e9, copy_gbps=bw_copy / 1e9,
                             frac=kv_bytes / t_kernel / bw_copy, graph_frac=kv_bytes / t_graph / bw_copy,
                             speedup=t_base / t_kernel))
            print(rows[-1], flush=True)
        del kq, vq
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def _fmt(x: float, spec: str, suffix: str = "") -> str:
    return "n/a" if math.isnan(x) else f"{x:{spec}}{suffix}"


def table(rows: list[dict], device_name: str, tuning: dict | None = None) -> str:
    out = [f"# block_attention on {device_name} (int8 KV, 28/4 heads, d=128, blocks of {BLOCK})", ""]
    if tuning:
        out += [f"Knobs chosen by `--sweep` at 1M tokens: {json.dumps({str(k): v for k, v in tuning.items()})}.", ""]
    out += [
        "| KV tokens | query tokens | kernel (ms) | back-to-back (ms) | graph (ms) | dequant+SDPA (ms) | speed-up "
        "| KV read (GB/s) | of copy bw | of copy bw (back-to-back) | of copy bw (graph) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        pipe, pipe_frac = r.get("pipelined_ms", float("nan")), r.get("pipelined_frac", float("nan"))
        out.append(f"| {r['tokens']:,} | {r['lq']} | {r['kernel_ms']:.3f} | {_fmt(pipe, '.3f')} | "
                   f"{_fmt(r['graph_ms'], '.3f')} | {r['base_ms']:.3f} | {r['speedup']:.2f}x | {r['gbps']:.0f} | "
                   f"{100 * r['frac']:.0f}% | {_fmt(100 * pipe_frac, '.0f', '%')} | "
                   f"{_fmt(100 * r['graph_frac'], '.0f', '%')} |")
    out.append("")
    out.append(f"Device-to-device copy bandwidth measured in the same run: {rows[0]['copy_gbps']:.0f} GB/s "
               "(read + write). \"kernel\" is the event-timed call (host overhead included when the host is "
               "the slower side, as for one call alone); \"back-to-back\" 50 calls enqueued without waiting, per call; "
               "\"graph\" the same call replayed from a CUDA graph (GPU time only).")
    return "\n".join(out)


def profile(lengths, device, backend: str, tuning: dict | None = None, calls: int = 20) -> str:
    """torch.profiler over ``calls`` decode calls per KV length: top ops by CPU and by CUDA time, and
    the kernels' time per call against the event-timed call, the graph-replayed call and the host's
    wall time per call (launches queued without waiting)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    sort_dev = "self_device_time_total"
    report = []
    for n_tokens in lengths:
        kq, vq, table = kv_store(n_tokens, device)
        q, tail_k, tail_v = inputs(1, device)
        call = attention_call(q, kq, vq, table, tail_k, tail_v, backend, tuning[1] if tuning else None)
        t_event = timed(call)
        t_graph = graph_timed(call)
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(calls):
            call()
        t_host = (time.perf_counter() - t0) / calls  # launch time when the host is the slower side
        if cuda:
            torch.cuda.synchronize()
        with torch_profile(activities=activities) as prof:
            for _ in range(calls):
                call()
            if cuda:
                torch.cuda.synchronize()
        events = prof.events()
        dev_events = [e for e in events if e.device_type != DeviceType.CPU]
        kernel_s = sum(e.device_time_total for e in dev_events) / 1e6 / calls
        n_launch = len(dev_events) / calls
        averages = prof.key_averages()
        head = {"tokens": n_tokens, "lq": 1, "calls": calls, "event_ms": round(t_event * 1e3, 4),
                "graph_ms": None if math.isnan(t_graph) else round(t_graph * 1e3, 4),
                "host_wall_ms": round(t_host * 1e3, 4),
                "kernels_ms": round(kernel_s * 1e3, 4) if cuda else None,
                "gpu_ops_per_call": n_launch if cuda else None,
                "host_overhead_ms": round((t_event - kernel_s) * 1e3, 4) if cuda else None}
        report += [f"## decode at {n_tokens:,} KV tokens", "", json.dumps(head), "",
                   "Top ops by self CPU time:", averages.table(sort_by="self_cpu_time_total", row_limit=12), ""]
        if cuda:
            report += ["Top ops by self CUDA time:", averages.table(sort_by=sort_dev, row_limit=12), ""]
        print(json.dumps(head), flush=True)
        del kq, vq
        if cuda:
            torch.cuda.empty_cache()
    return "\n".join(report)


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser()
    p.add_argument("--smoke", action="store_true", help="tiny sizes (CPU ok)")
    p.add_argument("--sweep", action="store_true", help="measure the tuning knobs first (GPU)")
    p.add_argument("--profile", action="store_true", help="torch.profiler over decode calls at 64k and 1M tokens")
    args = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tuning = None
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    if args.smoke:
        backend = "auto"
        rows = run([1024], [1], device, backend=backend)
    else:
        backend = "triton"
        tuning = sweep(device) if args.sweep else None
        rows = run([16384, 65536, 262144, 1048576], [1, 128], device, backend=backend, tuning=tuning)
    text = table(rows, name, tuning)
    print(text)
    stem = f"kernels_{name.replace(' ', '_')}"
    if not args.smoke:
        out = Path(__file__).resolve().parent / "results" / f"{stem}.md"
        out.parent.mkdir(exist_ok=True)
        out.write_text(text + "\n")
        if os.environ.get("OUT"):
            Path(os.environ["OUT"]).mkdir(parents=True, exist_ok=True)
            Path(os.environ["OUT"], out.name).write_text(text + "\n")
    if args.profile:
        prof = (profile([1024], device, backend, calls=3) if args.smoke
                else profile(list(PROFILE_TOKENS), device, backend, tuning))
        prof = f"# block_attention decode profile on {name}\n\n{prof}"
        print(prof)
        if os.environ.get("OUT"):
            Path(os.environ["OUT"]).mkdir(parents=True, exist_ok=True)
            Path(os.environ["OUT"], f"{stem}_profile.txt").write_text(prof + "\n")
        text += "\n\n" + prof
    return text


if __name__ == "__main__":
    main()
