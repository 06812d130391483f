"""Gathered-block attention at 7B shapes: time, bandwidth, and speed-up over dequantize-then-SDPA.

    python bench/kernels.py                 # on a GPU: 16k..1M tokens, writes bench/results/kernels_<device>.md
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


from vidqa.kernels.block_attention import block_attention  # noqa: E402
from vidqa.kernels.quant import dequantize_kv, quantize_kv  # noqa: E402

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


def run(lengths: list[int], lqs: list[int], device, backend: str) -> list[dict]:
    rows = []
    bw_copy = copy_bandwidth(device)
    for n_tokens in lengths:
        nb = n_tokens // BLOCK
        k = torch.randn(nb, HKV, BLOCK, D, device=device, dtype=torch.bfloat16)
        v = torch.randn_like(k)
        kq, vq = quantize_kv(k, 8, 32), quantize_kv(v, 8, 32)
        del k, v
        table = torch.arange(nb, device=device, dtype=torch.int32)
        kv_bytes = kq.nbytes + vq.nbytes
        for lq in lqs:
            q = torch.randn(HQ, lq, D, device=device, dtype=torch.bfloat16)
            tail_k = torch.randn(HKV, lq, D, device=device, dtype=torch.bfloat16)
            tail_v = torch.randn_like(tail_k)
            t_kernel = timed(lambda: block_attention(q, kq, vq, table, tail_k=tail_k, tail_v=tail_v, backend=backend))

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


def table(rows: list[dict], device_name: str) -> str:
    out = [f"# block_attention on {device_name} (int8 KV, 28/4 heads, d=128, blocks of {BLOCK})", "",
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
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.smoke:
        rows = run([1024], [1], device, backend="auto")
    else:
        rows = run([16384, 65536, 262144, 1048576], [1, 128], device, backend="triton")
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    text = table(rows, name)
    print(text)
    if not args.smoke:
        out = Path(__file__).resolve().parent / "results" / f"kernels_{name.replace(' ', '_')}.md"
        out.parent.mkdir(exist_ok=True)
        out.write_text(text + "\n")


if __name__ == "__main__":
    main()
