"""The reference ingest against the device's physical limits: bf16 matmul throughput and pinned
host<->device copy bandwidth measured in the same run, the work each stage did (FLOPs counted from
the shapes that ran, bytes moved), and per stage the time that work takes at the limit."""

from __future__ import annotations

import torch
from gpu_flops import llm_flops, qwen_vision_flops, siglip_vision_flops
from gpu_markdown import si
from kernels import timed

from vidqa.vlm.loading import default_dtype


def matmul_tflops(n: int, iters: int, device: str) -> dict:
    """Median throughput of ``n^3`` matmuls (bf16 on CUDA, timed with CUDA events; fp32 on CPU)."""
    dtype = default_dtype(device)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    dt = timed(lambda: a @ b, repeats=iters, warmup=3)  # the first calls pick kernels and warm clocks
    return {"n": n, "dtype": str(dtype).removeprefix("torch."), "median_s": dt, "tflops": 2 * n ** 3 / dt / 1e12}


def host_copy_bandwidth(nbytes: int, iters: int) -> dict:
    """Median GB/s of device->host and host->device copies of ``nbytes`` between pinned host memory
    and the GPU (CUDA events); empty on CPU."""
    if not torch.cuda.is_available():
        return {}
    dev = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    host = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
    out = {}
    for name, (dst, src) in {"d2h_gb_s": (host, dev), "h2d_gb_s": (dev, host)}.items():
        out[name] = nbytes / timed(lambda: dst.copy_(src, non_blocking=True), repeats=iters, warmup=1) / 1e9
    return out


def ingest_work(shapes: dict, model, family: str) -> dict:
    """FLOPs of the vision tower and the LLM prefill of one measured ingest, and the bytes it moved,
    from the shapes its :class:`StageTimer` recorded (``vidqa_run``'s second result)."""
    vc = model.config.vision_config
    vision = {"linear": 0, "attention": 0, "total": 0}
    for call in shapes["vision_calls"]:
        f = qwen_vision_flops(vc, call) if family == "qwen2_5_vl" else siglip_vision_flops(vc, call)
        for k in vision:
            vision[k] += f[k]
    llm = llm_flops(model.config.get_text_config(), [tuple(c) for c in shapes["llm_calls"]])
    return {"vision": vision, "llm": llm, "frames_bytes": shapes["bytes"]["frames"],
            "offload_bytes": shapes["bytes"]["offload"]}


def profile_table(ref: dict, work: dict, limits: dict) -> list[dict]:
    """Per stage of the reference ingest: the work, the time at the device's limit and the measured time."""
    tf = limits["matmul"]["tflops"] * 1e12
    d2h, h2d = limits.get("d2h_gb_s"), limits.get("h2d_gb_s")
    st = ref["stages"]
    vis, llm = work["vision"], work["llm"]
    rows = [
        {"stage": "decode wait (decoder thread, CPU)", "work": f"{ref['frames']} frames", "limit_s": None,
         "measured_s": st["decode_wait"]},
        {"stage": "preprocess (frames to the device, resize, normalise)",
         "work": f"{si(work['frames_bytes'], 'B')} host->device",
         "limit_s": work["frames_bytes"] / (h2d * 1e9) if h2d else None, "measured_s": st["preprocess"]},
        {"stage": "vision tower",
         "work": f"{si(vis['total'], 'FLOP')} ({vis['attention'] / max(1, vis['total']):.0%} attention)",
         "limit_s": vis["total"] / tf, "measured_s": st["vision"]},
        {"stage": "LLM prefill", "work": f"{si(llm['total'], 'FLOP')} over {llm['tokens']:,} tokens "
                                         f"({llm['attention'] / max(1, llm['total']):.0%} attention)",
         "limit_s": llm["total"] / tf, "measured_s": st["llm_prefill"]},
        {"stage": "waiting for the offload thread (quantize + copy to host)",
         "work": f"{si(work['offload_bytes'], 'B')} device->host",
         "limit_s": work["offload_bytes"] / (d2h * 1e9) if d2h else None, "measured_s": st["offload"]},
        {"stage": "other (Python, context assembly, summaries)", "work": "", "limit_s": None,
         "measured_s": st["other"]},
    ]
    limit = sum(r["limit_s"] or 0.0 for r in rows)
    rows.append({"stage": "ingest", "work": "stages timed one after another", "limit_s": limit,
                 "measured_s": ref.get("staged_ingest_s", ref["ingest_s"])})
    if "staged_ingest_s" in ref:  # the same ingest as a user runs it: the host queues ahead of the GPU
        rows.append({"stage": "ingest as run", "work": "stages overlapped (no synchronisation)", "limit_s": limit,
                     "measured_s": ref["ingest_s"]})
    return rows


def profile_record(ref: dict, shapes: dict, model, family: str, matmul_n: int, device: str) -> dict:
    """The profile record of the reference ingest ``ref`` (``vidqa_run``'s record and ``shapes``):
    the limits measured now, the table of :func:`profile_table`, the FLOPs, and FLOPs per frame/token."""
    limits = {"matmul": matmul_tflops(matmul_n, 10, device), **host_copy_bandwidth(1 << 30, 5)}
    work = ingest_work(shapes, model, family)
    llm_tokens = max(1, work["llm"]["tokens"])
    return dict(frames=ref["frames"], limits=limits, rows=profile_table(ref, work, limits),
                vision_flops=work["vision"], llm_flops=work["llm"],
                vision_gflop_per_frame=work["vision"]["total"] / ref["frames"] / 1e9,
                llm_gflop_per_token=work["llm"]["linear"] / llm_tokens / 1e9)
