"""Offload of ingest's KV to the host at 7B shapes: the old synchronous pack against the asynchronous one.

    python bench/offload.py            # on a GPU: 32 chunks of Qwen2.5-VL-7B KV at int8, medians of 3 repeats
    python bench/offload.py --bits 16  # full precision
    python bench/offload.py --smoke    # tiny sizes, also on CPU (the CI test runs this)

Each chunk hands ingest keys and values ``[layers, kv_heads, tokens, head_dim]`` (bf16; by default
28 x 4 x 4,100 x 128, Qwen2.5-VL-7B's KV of one 16-frame chunk) and its summary keys (their mean
over tokens, float32 ``[layers, kv_heads, head_dim]``), after a matmul loop on the main stream that
stands in for the chunk's prefill (``--busy-ms``). Modes:

* ``busy``: the matmuls alone -- the floor a perfectly hidden offload reaches;
* ``old``: the pack of before issue #11, written out below: quantize, then ``.to("cpu")`` (at 8/4
  bits ``non_blocking`` into a freshly pinned buffer per tensor, at 16 bits a pageable copy then
  ``pin_memory()``), on the main stream, and the summary's ``.cpu()`` (a host sync per chunk);
* ``new``: ``StoredKV.pack(..., offload=HostOffload.cuda(device))`` and the summary through the
  same offload, as :class:`~vidqa.memory.ingest.StreamingIngest` does, then ``finish()``;
* ``old pack only`` / ``new pack only``: the same without the matmuls (raw offload throughput).

A repeat's wall time runs until every chunk is on the host (device synchronised). Each repeat
starts with an empty pinned-memory cache (``host cache: cold``: a process's first video, whose
every pinned byte is allocated anew); ``warm`` keeps the previous repeat's freed pinned blocks
(a later video of the same process). Reported: medians, ``x old`` (the old path's median over this
one, same busy setting and cache: above 1 is faster),
``offload s`` (the median minus ``busy``'s: what the offload adds to the chunk loop), the host
bytes per second that implies, the CPU time spent inside the pack calls, and the pinned
allocations made and their time (``torch.cuda.host_memory_stats``). ``identical``: the new path's
host bytes equal the old path's, bit for bit. JSON lines are printed and, with a table, written to
``$OUT/offload.jsonl`` and ``$OUT/offload.md`` when ``OUT`` is set.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import time
from pathlib import Path

import torch

from vidqa.kernels.quant import quantize_kv
from vidqa.memory.offload import HostOffload, PinnedArena
from vidqa.memory.storage import StoredKV


def old_pack(x: torch.Tensor, bits: int, group_size: int) -> list[torch.Tensor]:
    """``StoredKV.pack`` as it was before the asynchronous offload (host tensors)."""
    if bits == 16:
        host = x.detach().to("cpu", copy=True)
        if torch.cuda.is_available():
            host = host.pin_memory()
        return [host]
    q = quantize_kv(x.detach(), bits=bits, group_size=math.gcd(group_size, x.shape[-1]))
    # QuantizedKV.to("cpu"): a fresh pinned buffer per tensor, copied on the main stream
    return [t.to("cpu", non_blocking=True) for t in (q.data, q.scale, q.zero) if t is not None]


def old_chunk(k, v, args, offload=None) -> list[torch.Tensor]:
    return [*old_pack(k, args.bits, args.group), *old_pack(v, args.bits, args.group),
            k.float().mean(dim=2).cpu()]


def new_chunk(k, v, args, offload) -> list:
    keys = StoredKV.pack(k, args.bits, args.group, offload=offload)
    values = StoredKV.pack(v, args.bits, args.group, offload=offload)
    return [keys, values, offload.copy([k.float().mean(dim=2)])]


def host_tensors(out: list) -> list[torch.Tensor]:
    """The host tensors of one chunk's result, either path (waits for landing copies)."""
    flat = []
    for item in out:
        if isinstance(item, StoredKV):
            flat += list(item.tensors().values())
        elif isinstance(item, torch.Tensor):
            flat.append(item)
        else:
            flat += item.wait()
    return flat


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def host_stats(device) -> tuple[int, float]:
    """(pinned blocks allocated so far, seconds spent allocating them)."""
    if device.type != "cuda" or not hasattr(torch.cuda, "host_memory_stats"):  # older torch: no pinned stats
        return 0, 0.0
    s = torch.cuda.host_memory_stats()
    return int(s.get("num_host_alloc", 0)), float(s.get("host_alloc_time.total", 0)) / 1e6


def busy_loop(args, device):
    """A function queueing about ``args.busy_ms`` of matmuls on the main stream, and its reps."""
    a = torch.randn(args.busy_dim, args.busy_dim, device=device,
                    dtype=torch.bfloat16 if device.type == "cuda" else torch.float32)
    for _ in range(3):
        a @ a
    sync(device)
    t0, n = time.perf_counter(), 10
    for _ in range(n):
        a @ a
    sync(device)
    reps = max(1, round(args.busy_ms / 1e3 / ((time.perf_counter() - t0) / n)))

    def busy():
        for _ in range(reps):
            a @ a
    return busy, reps


def make_offload(args, device) -> HostOffload:
    """``HostOffload.cuda(device)`` with the arguments' slab size and bound; synchronous on CPU."""
    if device.type == "cuda":
        return HostOffload(PinnedArena(args.slab_mib << 20), torch.cuda.Stream(device), args.max_in_flight)
    return HostOffload(PinnedArena(args.slab_mib << 20, pin=False), max_in_flight=args.max_in_flight)


def run_once(mode: str, args, device, pool, busy, cold: bool):
    """One repeat: (wall s, CPU s inside the chunk offloads, pinned allocations, their s, results)."""
    gc.collect()
    sync(device)
    if cold and device.type == "cuda" and hasattr(torch._C, "_host_emptyCache"):
        torch._C._host_emptyCache()  # freed pinned blocks go back to the system: allocated anew
    allocs0, alloc_s0 = host_stats(device)
    t0 = time.perf_counter()
    offload = make_offload(args, device) if mode.startswith("new") else None
    chunk = new_chunk if offload is not None else old_chunk
    results, in_pack = [], 0.0
    for c in range(args.chunks):
        if busy is not None:
            busy()
        if mode == "busy":
            continue
        k, v = pool[c % len(pool)]
        t = time.perf_counter()
        results.append(chunk(k, v, args, offload))
        in_pack += time.perf_counter() - t
    if offload is not None:
        offload.finish()
    sync(device)
    wall = time.perf_counter() - t0
    allocs1, alloc_s1 = host_stats(device)
    return wall, in_pack, allocs1 - allocs0, alloc_s1 - alloc_s0, results


def markdown(rows: list[dict], header: dict) -> str:
    lines = [f"# KV offload, {header['device']}", "",
             f"{header['chunks']} chunks of keys + values `[{header['shape']}]` {header['dtype']} at "
             f"{header['bits']} bits (group {header['group']}), {header['offload_mib_per_chunk']:.1f} MiB to the "
             f"host per chunk; busy: {header['busy_reps']} matmuls of {header['busy_dim']}^2 per chunk "
             f"(~{header['busy_ms']} ms). Medians of {header['repeats']} repeats. Identical bytes, new vs old: "
             f"{header['identical']}.", "",
             "| mode | host cache | median s | x old | offload s | GB/s | CPU in pack s | pinned allocs | pinning s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        cell = lambda v, f: "" if v is None else format(v, f)  # noqa: E731
        lines.append(f"| {r['mode']} | {r['cache']} | {r['median_s']:.3f} | {cell(r['x_old'], '.2f')} | "
                     f"{cell(r['offload_s'], '.3f')} | {cell(r['gb_per_s'], '.1f')} | {r['in_pack_s']:.3f} | "
                     f"{r['pinned_allocs']} | {r['pinning_s']:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--chunks", type=int, default=32)
    p.add_argument("--layers", type=int, default=28)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--tokens", type=int, default=4100, help="KV entries per chunk")
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--bits", type=int, default=8, choices=(16, 8, 4))
    p.add_argument("--group", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--busy-ms", type=float, default=100.0, help="main-stream work per chunk (the prefill)")
    p.add_argument("--busy-dim", type=int, default=8192)
    p.add_argument("--slab-mib", type=int, default=256)
    p.add_argument("--max-in-flight", type=int, default=8)
    p.add_argument("--cache", choices=("cold", "warm", "both"), default="both")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, 3 chunks, 2 repeats")
    args = p.parse_args(argv)
    if args.smoke:
        args.chunks, args.layers, args.kv_heads, args.tokens, args.head_dim = 3, 2, 2, 37, 32
        args.repeats, args.busy_ms, args.busy_dim, args.slab_mib = 2, 1.0, 64, 1
    device = torch.device(args.device)
    shape = (args.layers, args.kv_heads, args.tokens, args.head_dim)
    gen = torch.Generator(device=device).manual_seed(0)
    pool = [tuple(torch.randn(shape, device=device, dtype=torch.bfloat16, generator=gen) for _ in range(2))
            for _ in range(2)]  # two chunks' (keys, values), as fresh prefill output would alternate
    busy, reps = busy_loop(args, device)
    # bytes each chunk leaves on the host, and whether the new path stores exactly the old bytes
    old = host_tensors(old_chunk(*pool[0], args))
    offload = make_offload(args, device)
    new = host_tensors(new_chunk(*pool[0], args, offload))
    offload.finish()
    sync(device)  # the old path's copies at 8/4 bits are non-blocking
    identical = len(old) == len(new) and all(a.dtype == b.dtype and torch.equal(a, b) for a, b in zip(old, new))
    per_chunk = sum(t.numel() * t.element_size() for t in old)
    del old, new, offload
    header = dict(device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                  chunks=args.chunks, shape=", ".join(map(str, shape)), dtype="bf16", bits=args.bits,
                  group=args.group, offload_mib_per_chunk=per_chunk / 2**20, busy_ms=args.busy_ms,
                  busy_dim=args.busy_dim, busy_reps=reps, repeats=args.repeats, slab_mib=args.slab_mib,
                  identical=identical)
    print(json.dumps(header), flush=True)
    caches = ("cold", "warm") if args.cache == "both" else (args.cache,)
    modes = [("busy", True), ("old", True), ("new", True), ("old pack only", False), ("new pack only", False)]
    rows = []
    for cache in caches:
        medians = {}
        for mode, with_busy in modes:
            runs = [run_once(mode, args, device, pool, busy if with_busy else None, cache == "cold")[:4]
                    for _ in range(args.repeats)]
            wall = statistics.median(r[0] for r in runs)
            medians[mode] = wall
            base = medians.get("old" if with_busy else "old pack only")
            extra = wall - medians["busy"] if with_busy else wall
            row = dict(mode=mode, cache=cache, chunks=args.chunks, median_s=wall, repeats_s=[r[0] for r in runs],
                       x_old=base / wall if base and mode != "busy" else None,
                       offload_s=extra if mode != "busy" else None,
                       gb_per_s=per_chunk * args.chunks / extra / 1e9 if mode != "busy" and extra > 0 else None,
                       in_pack_s=statistics.median(r[1] for r in runs),
                       pinned_allocs=int(statistics.median(r[2] for r in runs)),
                       pinning_s=statistics.median(r[3] for r in runs))
            rows.append(row)
            print(json.dumps(row), flush=True)
    text = markdown(rows, header)
    print(text)
    if os.environ.get("OUT"):
        out = Path(os.environ["OUT"])
        out.mkdir(parents=True, exist_ok=True)
        (out / "offload.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [header, *rows]))
        (out / "offload.md").write_text(text + "\n")
    return rows


if __name__ == "__main__":
    main()
