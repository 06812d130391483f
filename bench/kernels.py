"""Gathered-block attention at 7B shapes: time, bandwidth, and speed-up over dequantize-then-SDPA.

    python bench/kernels.py                 # on a GPU: 16k..1M tokens, writes bench/results/kernels_<device>.md
    python bench/kernels.py --sweep         # first measure the kernel's tuning knobs at 1M tokens, then the table
    python bench/kernels.py --smoke         # tiny sizes on CPU (reference path only)

Shapes: 28 query heads, 4 KV heads, head dim 128 (Qwen2.5-VL-7B), blocks of 256 tokens, all blocks
selected, int8 KV with group 32. Bandwidth counts the KV bytes (data + scales) the kernel must read;
it is compared with a device-to-device copy measured in the same run. The baseline dequantizes the
selected blocks to bf16 and runs PyTorch SDPA (flash/mem-efficient backend) on them. Times are
medians of CUDA-event-timed repeats after warm-up.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch


import itertools
import json
import os

from vidqa.kernels.block_attention import block_attention  # noqa: E402
from vidqa.kernels.quant import dequantize_kv, quantize_kv  # noqa: E402

# Knobs of block_attention_triton tried by --sweep, per query length (decode, 128-token question).
SWEEP = {
    1: [dict(bm=16, bn=bn, num_warps=w, stages=st, waves=4)
        for bn, w, st in itertools.product((64, 128, 256), (4, 8), (2, 4))],
    128: [dict(bm=bm, bn=bn, num_warps=w, stages=3, waves=2)
          for bm, bn, w in itertools.product((64, 128), (32, 64), (4, 8))],
}

HQ, HKV, D, BLOCK = 28, 4, 128, 256


def timed(fn, repeats: int = 20, warmup: int = 3) -> float:
    """Median seconds of ``fn()``."""
    for _ in range(warmup):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        times = []
        for _ in range(repeats):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            torch.cuda.synchronize()
            times.append(a.elapsed_time(b) / 1000)
        return statistics.median(times)
    import time

    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
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


def sweep(device, n_tokens: int = 1 << 20) -> dict[int, dict]:
    """The fastest knobs per query length at ``n_tokens`` int8 KV tokens, each checked for
    correctness against the reference on a small store first."""
    from vidqa.kernels.block_attention.naive import block_attention_naive
    from vidqa.kernels.block_attention.triton_impl import block_attention_triton

    small_k, small_v, small_table = kv_store(4096, device)
    kq, vq, table = kv_store(n_tokens, device)
    best = {}
    for lq, grid in SWEEP.items():
        q = torch.randn(HQ, lq, D, device=device, dtype=torch.bfloat16)
        tail_k = torch.randn(HKV, lq, D, device=device, dtype=torch.bfloat16)
        tail_v = torch.randn_like(tail_k)
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
                t = timed(lambda: block_attention_triton(q, kq, vq, table, None, tail_k, tail_v, D ** -0.5, **cfg),
                          repeats=10, warmup=2)
            except Exception as e:  # out of shared memory / registers for this shape: not a candidate
                print(json.dumps({"lq": lq, **cfg, "failed": type(e).__name__}), flush=True)
                continue
            results.append((t, cfg))
            print(json.dumps({"lq": lq, **cfg, "ms": round(t * 1e3, 4)}), flush=True)
        best[lq] = min(results, key=lambda r: r[0])[1]
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
            q = torch.randn(HQ, lq, D, device=device, dtype=torch.bfloat16)
            tail_k = torch.randn(HKV, lq, D, device=device, dtype=torch.bfloat16)
            tail_v = torch.randn_like(tail_k)
            if tuning:
                from vidqa.kernels.block_attention.triton_impl import block_attention_triton

                t_kernel = timed(lambda: block_attention_triton(q, kq, vq, table, None, tail_k, tail_v, D ** -0.5,
                                                                **tuning[lq]))
            else:
                t_kernel = timed(lambda: block_attention(q, kq, vq, table, tail_k=tail_k, tail_v=tail_v,
                                                         backend=backend))

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
            rows.append(dict(tokens=n_tokens, lq=lq, kernel_ms=t_kernel * 1e3, base_ms=t_base * 1e3,
                             gbps=kv_bytes / t_kernel / 1e9, copy_gbps=bw_copy / 1e9,
                             frac=kv_bytes / t_kernel / bw_copy, speedup=t_base / t_kernel))
            print(rows[-1], flush=True)
        del kq, vq
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def table(rows: list[dict], device_name: str, tuning: dict | None = None) -> str:
    out = [f"# block_attention on {device_name} (int8 KV, 28/4 heads, d=128, blocks of {BLOCK})", ""]
    if tuning:
        out += [f"Knobs chosen by `--sweep` at 1M tokens: {json.dumps({str(k): v for k, v in tuning.items()})}.", ""]
    out += [
           "| KV tokens | query tokens | kernel (ms) | dequant+SDPA (ms) | speed-up | KV read (GB/s) | of copy bw |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        out.append(f"| {r['tokens']:,} | {r['lq']} | {r['kernel_ms']:.3f} | {r['base_ms']:.3f} | "
                   f"{r['speedup']:.2f}x | {r['gbps']:.0f} | {100 * r['frac']:.0f}% |")
    out.append("")
    out.append(f"Device-to-device copy bandwidth measured in the same run: {rows[0]['copy_gbps']:.0f} GB/s "
               "(read + write).")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--smoke", action="store_true", help="tiny sizes (CPU ok)")
    p.add_argument("--sweep", action="store_true", help="measure the tuning knobs first (GPU)")
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tuning = None
    if args.smoke:
        rows = run([1024], [1], device, backend="auto")
    else:
        tuning = sweep(device) if args.sweep else None
        rows = run([16384, 65536, 262144, 1048576], [1, 128], device, backend="triton", tuning=tuning)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    text = table(rows, name, tuning)
    print(text)
    if not args.smoke:
        out = Path(__file__).resolve().parent / "results" / f"kernels_{name.replace(' ', '_')}.md"
        out.parent.mkdir(exist_ok=True)
        out.write_text(text + "\n")
        if os.environ.get("OUT"):
            Path(os.environ["OUT"], out.name).write_text(text + "\n")


if __name__ == "__main__":
    main()
