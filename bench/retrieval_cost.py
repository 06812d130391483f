"""Cost of block scoring per question at 7B size (Qwen2.5-VL-7B: 28 layers, 28 query / 4 KV heads,
head dim 128) for 1 h and 4 h of video (225 blocks of 8 grids per hour), mass vs mean, with the
queries of a whole 48-token prompt (the default) and of the answer position alone
(``MemoryConfig.retrieval_window`` 1)."""
import itertools, json, statistics, sys, time
import torch
from vidqa.memory.blocks import GridRecord, KVBlock
from vidqa.memory.retrieve import score_blocks
from vidqa.memory.storage import StoredKV

L, HQ, HKV, D = 28, 28, 4, 128
dev = "cuda"
out = {}
for hours in (1, 4):
    nb, g = 225 * hours, 8
    kv = StoredKV(torch.zeros(L, HKV, 1, D), 16, torch.float32)
    blocks = []
    for i in range(nb):
        rec = GridRecord(t=torch.arange(g) + g * i, frame=torch.arange(g), time=torch.zeros(g).double(),
                         embeds=torch.zeros(g, 4), entry_t=(torch.arange(g * 32) // 32) + g * i,
                         keys=torch.randn(g, L, HKV, D), distinct_keys=torch.randn(2 * g, L, HKV, D),
                         distinct_grid=torch.arange(g).repeat_interleave(2))
        blocks.append(KVBlock(kv, kv, torch.ones(g * 32, dtype=torch.bool), torch.randn(L, HKV, D), 0, 1, 0., 1.,
                              torch.arange(g), g * 32, grids=rec))
    prompt = [torch.randn(HQ, 48, D, device=dev, dtype=torch.bfloat16) for _ in range(L)]
    for lq, method in itertools.product((48, 1), ("mean", "mass")):
        q = [x[:, -lq:] for x in prompt]
        cache = {}
        score_blocks(q, blocks, cache, method); torch.cuda.synchronize()  # first: gathers the representatives
        times = []
        for _ in range(7):
            torch.cuda.synchronize(); t0 = time.perf_counter()
            score_blocks(q, blocks, cache, method); torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        reps = cache[method][1]
        out[f"{hours}h_{method}_q{lq}"] = {"median_s": round(statistics.median(times), 4),
                                           "representatives": len(reps), "rep_mib": round(reps.numel() * 4 / 2**20)}
        print(json.dumps({f"{hours}h_{method}_q{lq}": out[f"{hours}h_{method}_q{lq}"]}), flush=True)
