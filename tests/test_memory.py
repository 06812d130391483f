"""Memory promises: streaming ingest + recall equals the full-context forward; bounded context;
retrieval finds a planted needle; compression at full budget is the identity."""

import pytest
import torch
from transformers import DynamicCache

from vidqa.config import MemoryConfig
from vidqa.errors import ConfigError
from vidqa.memory import StreamingIngest, recall
from vidqa.memory.compress import compress_layer
from vidqa.memory.retrieve import select_blocks

from memory_data import ingest, random_chunks
from sequences import one_shot_sequence


@pytest.mark.parametrize("fixture", ["qwen_adapter", "llava_adapter"])
def test_streaming_ingest_and_recall_equal_full_forward(request, fixture):
    adapter = request.getfixturevalue(fixture)
    chunks = random_chunks(adapter, 4)
    config = MemoryConfig(window_chunks=10, recurrent_tokens=0, token_budget=10**6)
    memory = ingest(adapter, chunks, config)
    question = adapter.prompt_question("What happened?")
    q_ids = adapter.tokenize(question)
    rec = recall(adapter, memory, adapter.embed_ids(q_ids), config)
    ours = adapter.forward(adapter.embed_ids(q_ids), adapter.text_positions(len(q_ids), rec.next_position), rec.cache)
    embeds, positions = one_shot_sequence(adapter, [t for t, _, _ in chunks], "What happened?")
    full = adapter.forward(embeds, positions, DynamicCache())
    torch.testing.assert_close(ours, full, atol=1e-5, rtol=1e-5)
    assert rec.blocks == [0, 1, 2, 3]


def test_window_bounds_the_context_whatever_the_length(qwen_adapter):
    config = MemoryConfig(window_chunks=1, recurrent_tokens=2, recurrent_capacity=4)
    peaks = []
    for n in (5, 12):
        memory = ingest(qwen_adapter, random_chunks(qwen_adapter, n), config)
        peaks.append(memory.stats["peak_context_tokens"])
        assert len(memory.blocks) == n
    assert peaks[0] == peaks[1]  # bounded: sinks + capacity + window + chunk, not the history


@pytest.mark.parametrize("fixture", ["qwen_adapter", "llava_adapter"])
def test_compact_positions_shift_blocks_together(request, fixture):
    """Re-rotation by a delta is invertible; compact recall closes the gap of a skipped block."""
    adapter = request.getfixturevalue(fixture)
    chunks = random_chunks(adapter, 3)
    config = MemoryConfig(window_chunks=10, recurrent_tokens=0, token_budget=10**6, positions="compact")
    memory = ingest(adapter, chunks, config)
    block = memory.blocks[1]
    dev = adapter.device
    moved = adapter.rotate_keys(block.keys.unpack(dev), -7)
    back = adapter.rotate_keys(moved, 7)
    torch.testing.assert_close(back, block.keys.unpack(dev), atol=1e-5, rtol=1e-5)
    # Compact with no gaps between blocks is the identity on positions, so logits are unchanged.
    q_ids = adapter.tokenize(adapter.prompt_question("Q"))
    rec = recall(adapter, memory, adapter.embed_ids(q_ids), config)
    assert rec.next_position == memory.next_position
    # Dropping the middle block: compact shifts block 2 down by block 1's span.
    small = MemoryConfig(**{**config.__dict__, "token_budget": memory.blocks[0].num_visual + memory.blocks[2].num_visual,
                            "first_blocks": 1, "recent_blocks": 1})
    rec2 = recall(adapter, memory, adapter.embed_ids(q_ids), small)
    assert rec2.blocks == [0, 2]
    span1 = memory.blocks[1].end - memory.blocks[1].start
    assert rec2.next_position == memory.next_position - span1


def test_retrieval_finds_a_planted_needle():
    """Summary keys built so that one block aligns with the question's queries: it is chosen."""
    from vidqa.memory.blocks import KVBlock
    from vidqa.memory.retrieve import score_blocks
    from vidqa.memory.storage import StoredKV

    torch.manual_seed(0)
    layers, hkv, dh, hq = 2, 2, 16, 4
    needle_dir = torch.randn(layers, hkv, dh)
    blocks = []
    for i in range(20):
        summary = torch.randn(layers, hkv, dh) * 0.1 + (3 * needle_dir if i == 13 else 0)
        kv = StoredKV(torch.zeros(layers, hkv, 5, dh), 16, torch.float32)
        blocks.append(KVBlock(kv, kv, torch.ones(5, dtype=torch.bool), summary, i * 5, i * 5 + 5,
                              float(i), float(i + 1), torch.tensor([i]), 5))
    queries = [needle_dir[l].repeat_interleave(hq // hkv, 0)[:, None, :].expand(hq, 3, dh) for l in range(layers)]
    scores = score_blocks(queries, blocks)
    assert int(scores.argmax()) == 13
    chosen = select_blocks(scores, blocks, token_budget=10, first_blocks=0, recent_blocks=1)
    assert chosen == [13, 19]


def test_ingest_keeps_each_grids_mean_visual_key(qwen_adapter):
    """The grid record's keys are the mean of each grid's visual keys, per layer and KV head."""
    memory = ingest(qwen_adapter, random_chunks(qwen_adapter, 2), MemoryConfig(kv_bits=16))
    for b in memory.blocks:
        keys = b.keys.unpack("cpu", torch.float32)[:, :, b.visual]  # [L, Hkv, n_visual, Dh]
        g = b.grids
        assert g.keys.shape == (g.t.numel(), *keys.shape[:2], keys.shape[-1]) and g.t.numel() >= 2
        for j, t in enumerate(g.t.tolist()):
            torch.testing.assert_close(g.keys[j], keys[:, :, g.entry_t == t].mean(dim=2))


def test_retrieval_scores_a_block_by_its_best_grid():
    """A moment that fills one grid of eight decides its block's score under both scores, although the
    block's mean key (diluted by seven ordinary grids) loses to a block a little closer everywhere."""
    from vidqa.memory.blocks import GridRecord, KVBlock
    from vidqa.memory.retrieve import score_blocks
    from vidqa.memory.storage import StoredKV

    torch.manual_seed(1)
    layers, hkv, dh, hq, grids = 2, 2, 16, 4, 8
    needle = torch.randn(layers, hkv, dh)
    blocks = []
    for i in range(3):
        reps = torch.randn(grids, layers, hkv, dh) * 0.1
        if i == 0:
            reps[5] += 4 * needle  # the moment, in one grid
        if i == 1:
            reps += 0.8 * needle  # a little closer in every grid: the higher mean
        kv = StoredKV(torch.zeros(layers, hkv, grids, dh), 16, torch.float32)
        record = GridRecord(t=torch.arange(grids) + 8 * i, frame=torch.arange(grids), time=torch.zeros(grids).double(),
                            embeds=torch.zeros(grids, 4), entry_t=torch.arange(grids) + 8 * i, keys=reps)
        blocks.append(KVBlock(kv, kv, torch.ones(grids, dtype=torch.bool), reps.mean(0), 0, grids, 0.0, 1.0,
                              torch.arange(grids), grids, grids=record))
    queries = [needle[l].repeat_interleave(hq // hkv, 0)[:, None, :].expand(hq, 3, dh) for l in range(layers)]
    means = [b.summary for b in blocks]
    assert max(range(3), key=lambda i: float((means[i] * needle).sum())) == 1  # the mean alone picks block 1
    for method in ("mass", "mean"):
        assert int(score_blocks(queries, blocks, method=method).argmax()) == 0, method
    cache = {}
    first = score_blocks(queries, blocks, cache)
    gathered = cache["mass"][1]
    assert torch.equal(score_blocks(queries, blocks, cache), first) and cache["mass"][1] is gathered  # reused
    assert not torch.equal(score_blocks(queries, blocks, cache, "mean"), first)  # a second method: its own entry
    # kept where the queries are; queries on another device gather them there again
    assert gathered.device == queries[0].device
    meta = [q.to("meta") for q in queries]
    try:
        score_blocks(meta, blocks, cache)
    except (NotImplementedError, RuntimeError):
        pass  # meta tensors cannot be scored; what matters is that the cache was not reused for them
    assert cache["mass"][1].device.type == "meta" and cache["mass"][1] is not gathered
    blocks[0].grids = None  # without grid keys a block falls back to its summary
    for method in ("mass", "mean"):
        assert int(score_blocks(queries, blocks, method=method).argmax()) == 1, method


def _needle_chunk(n: int, dh: int, layers: int, hkv: int, needle: torch.Tensor | None, seed: int):
    """Visual keys ``[L, Hkv, n, Dh]`` of one 2-grid chunk: shared background plus noise, and, with
    ``needle``, one token of grid 1 replaced by it."""
    g = torch.Generator().manual_seed(seed)
    background = torch.ones(layers, hkv, 1, dh)
    keys = background + 0.05 * torch.randn(layers, hkv, n, dh, generator=g)
    if needle is not None:
        keys[:, :, n - 3] = needle
    return keys


def test_distinct_keys_keep_the_outlier_of_each_grid():
    """``most_distinct`` returns, per grid, the entries farthest from the grid's mean, at most all but one."""
    from vidqa.memory.blocks import GridRecord

    layers, hkv, dh, n = 2, 2, 8, 12
    needle = -3 * torch.ones(layers, hkv, dh)
    keys = _needle_chunk(n, dh, layers, hkv, needle, 0)
    entry_t = torch.tensor([4] * 6 + [5] * 6)
    record = GridRecord(t=torch.tensor([4, 5]), frame=torch.tensor([0, 2]), time=torch.zeros(2).double(),
                        embeds=torch.zeros(2, 3), entry_t=entry_t)
    means = record._grid_means(keys)
    picked, grid = record.most_distinct(keys, means, 1)
    assert grid.tolist() == [0, 1] and picked.shape == (2, layers, hkv, dh)
    torch.testing.assert_close(picked[1], needle)  # grid 1's outlier is the needle
    picked, grid = record.most_distinct(keys, means, 10)
    assert grid.tolist() == [0] * 5 + [1] * 5  # never the whole grid: the mean stands for one entry at least
    single = GridRecord(t=torch.tensor([0]), frame=torch.tensor([0]), time=torch.zeros(1).double(),
                        embeds=torch.zeros(1, 3), entry_t=torch.tensor([0]))
    picked, grid = single.most_distinct(keys[:, :, :1], single._grid_means(keys[:, :, :1]), 2)
    assert picked.shape[0] == 0 and grid.numel() == 0


def test_mass_retrieval_finds_one_needle_token_the_mean_keys_miss():
    """Twenty blocks whose grids look alike; one token of block 7 is the thing the question asks about,
    and block 12 is a little closer to the question in all its tokens. The mean-key score picks block
    12; the attention mass over mean and distinct keys picks block 7, as full attention does."""
    from vidqa.kernels.block_score import attention_mass
    from vidqa.memory.blocks import GridRecord, KVBlock
    from vidqa.memory.retrieve import score_blocks
    from vidqa.memory.storage import StoredKV

    layers, hkv, dh, hq, n = 2, 2, 8, 4, 12
    query_dir = torch.zeros(layers, hkv, dh)
    query_dir[..., 0] = 1.0
    needle = torch.ones(layers, hkv, dh)
    needle[..., 0] = 12.0  # one token that the question's direction sees sharply
    blocks, all_keys = [], []
    for i in range(20):
        keys = _needle_chunk(n, dh, layers, hkv, needle if i == 7 else None, i)
        if i == 12:
            keys[..., 0] += 2.5  # every token a little closer
        entry_t = torch.tensor([2 * i] * 6 + [2 * i + 1] * 6)
        record = GridRecord(t=torch.tensor([2 * i, 2 * i + 1]), frame=torch.tensor([2 * i, 2 * i + 1]),
                            time=torch.zeros(2).double(), embeds=torch.zeros(2, 3), entry_t=entry_t)
        means = record._grid_means(keys)
        record.keys = means.permute(2, 0, 1, 3).contiguous()
        record.distinct_keys, record.distinct_grid = record.most_distinct(keys, means, 2)
        kv = StoredKV(keys.clone(), 16, torch.float32)
        blocks.append(KVBlock(kv, kv, torch.ones(n, dtype=torch.bool), keys.mean(2), i * n, i * n + n,
                              float(i), float(i + 1), torch.tensor([i]), n, grids=record))
        all_keys.append(keys)
    queries = [query_dir[l].repeat_interleave(hq // hkv, 0)[:, None, :].expand(hq, 2, dh) * 2 for l in range(layers)]
    assert int(score_blocks(queries, blocks, method="mean").argmax()) == 12
    mass = score_blocks(queries, blocks, method="mass")
    assert int(mass.argmax()) == 7
    # the reference: full attention over every token of the video, summed per block
    every = torch.cat(all_keys, dim=2).permute(2, 0, 1, 3)  # [N, L, Hkv, Dh]
    exact = attention_mass(torch.stack(queries), every).view(20, n).sum(1)
    assert int(exact.argmax()) == 7 and abs(float(mass.sum()) - 1) < 1e-5


def test_attention_mass_is_softmax_attention_summed():
    """With one representative per entry and no weights, the mass is the attention itself, averaged
    over layers, heads and question tokens; a log weight of log(n) counts an entry n times."""
    from vidqa.kernels.block_score import attention_mass

    torch.manual_seed(3)
    layers, hq, hkv, lq, dh, r = 2, 4, 2, 3, 8, 10
    q, keys = torch.randn(layers, hq, lq, dh), torch.randn(r, layers, hkv, dh)
    expect = torch.zeros(r)
    for l in range(layers):
        k = keys[:, l].repeat_interleave(hq // hkv, 1).permute(1, 0, 2)  # [Hq, R, Dh]
        expect += (q[l] @ k.transpose(1, 2) / dh ** 0.5).softmax(-1).sum(dim=(0, 1))
    torch.testing.assert_close(attention_mass(q, keys), expect / (layers * hq * lq))
    doubled = torch.cat([keys, keys[:1]])  # entry 0 twice == entry 0 with weight 2
    twice = attention_mass(q, doubled)
    weighted = attention_mass(q, keys, torch.tensor([2.0] + [1.0] * (r - 1)).log())
    torch.testing.assert_close(weighted[0], twice[0] + twice[-1])
    torch.testing.assert_close(weighted[1:], twice[1:-1])


def test_select_blocks_meets_the_budget_exactly():
    from vidqa.memory.blocks import KVBlock
    from vidqa.memory.storage import StoredKV

    kv = StoredKV(torch.zeros(1, 1, 4, 2), 16, torch.float32)
    blocks = [KVBlock(kv, kv, torch.ones(4, dtype=torch.bool), torch.zeros(1, 1, 2), 0, 4, 0.0, 1.0,
                      torch.tensor([0]), 4) for _ in range(10)]
    scores = torch.arange(10.0)
    chosen = select_blocks(scores, blocks, token_budget=12, recent_blocks=0)
    assert chosen == [7, 8, 9]
    assert sum(blocks[i].num_visual for i in chosen) <= 12


def test_compression_at_full_budget_is_identity_and_merging_preserves_mass():
    torch.manual_seed(1)
    keys, values = torch.randn(2, 10, 8), torch.randn(2, 10, 8)
    visual = torch.tensor([False, False] + [True] * 8)
    queries = torch.randn(4, 3, 8)
    k, v, keep = compress_layer(keys, values, visual, queries, keep_visual=8)
    assert torch.equal(k, keys) and torch.equal(v, values) and keep.tolist() == list(range(10))
    k, v, keep = compress_layer(keys, values, visual, queries, keep_visual=3, merge=True)
    assert k.shape == (2, 5, 8) and keep[:2].tolist() == [0, 1]  # text always kept
    # each kept visual value is the mean of itself and what merged into it: total mass preserved
    kept_vis = keep[2:]
    from vidqa.memory.compress import importance  # noqa: F401  (same scores, recomputed inside)
    # sum over kept of value*count == sum over all visual values
    flat = keys.transpose(0, 1).reshape(10, -1)
    evicted = [i for i in range(2, 10) if i not in kept_vis.tolist()]
    sim = torch.nn.functional.normalize(flat[evicted], dim=-1) @ torch.nn.functional.normalize(flat[kept_vis], dim=-1).T
    counts = torch.ones(len(kept_vis))
    counts.index_add_(0, sim.argmax(-1), torch.ones(len(evicted)))
    torch.testing.assert_close((v[:, 2:] * counts.view(1, -1, 1)).sum(1), values[:, 2:].sum(1), atol=1e-5, rtol=1e-5)


def test_recall_with_small_budget_attends_fewer_tokens(qwen_adapter):
    adapter = qwen_adapter
    chunks = random_chunks(adapter, 4)
    config = MemoryConfig(window_chunks=2, token_budget=40, compress_ratio=0.5)
    memory = ingest(adapter, chunks, config)
    q = adapter.embed_ids(adapter.tokenize(adapter.prompt_question("Where?")))
    rec = recall(adapter, memory, q, config)
    chosen_visual = sum(memory.blocks[i].num_visual for i in rec.blocks)
    assert len(rec.blocks) < 4
    assert rec.visual_attended == -(-chosen_visual // 2)
    text_entries = memory.sink_keys.shape[2] + sum(memory.blocks[i].num_tokens - memory.blocks[i].num_visual
                                                    for i in rec.blocks)
    assert rec.cache.layers[0].keys.shape[2] == text_entries + rec.visual_attended


def test_blocks_are_scored_by_the_last_prompt_tokens(qwen_adapter, monkeypatch):
    """The last ``retrieval_window`` prompt tokens' queries score the blocks (1: the answer position's
    alone, the last column of what the question's pass computes); 0, the default, keeps every token's."""
    import importlib

    recall_module = importlib.import_module("vidqa.memory.recall")  # the package's `recall` is the function

    adapter = qwen_adapter
    config = MemoryConfig(window_chunks=2, token_budget=40)
    memory = ingest(adapter, random_chunks(adapter, 4), config)
    q = adapter.embed_ids(adapter.tokenize(adapter.prompt_question("Where is the red circle?")))
    seen = []
    real = recall_module.score_blocks
    monkeypatch.setattr(recall_module, "score_blocks",
                        lambda queries, *a, **k: seen.append(queries) or real(queries, *a, **k))
    full = recall_module.question_queries(adapter, memory, q, max(1, config.recent_blocks))
    for window, width in ((1, 1), (3, 3), (0, q.shape[0])):
        seen.clear()
        recall(adapter, memory, q, MemoryConfig(**{**config.__dict__, "retrieval_window": window}))
        (used,) = seen
        assert len(used) == len(full) and all(u.shape[1] == width for u in used)
        for u, f in zip(used, full):
            torch.testing.assert_close(u, f[:, -width:])
    for bad in (-1, True, 1.0):
        with pytest.raises(ConfigError, match="retrieval_window"):
            MemoryConfig(retrieval_window=bad)


def test_blended_score_adds_the_shares_of_the_window_and_of_the_answer_position():
    """``answer_weight`` w: (1 - w) * the window's share + w * the answer position's; a peaked answer share
    lifts its block above the spread window's favourite, and w = 0 / 1 rank as either alone."""
    from vidqa.memory.retrieve import blend_shares

    window = torch.tensor([4.0, 3.0, 2.0, 1.0])  # spread: block 0 first
    answer = torch.tensor([0.0, 0.0, 0.0, 9.0])  # peaked on block 3
    torch.testing.assert_close(blend_shares(window, answer, 0.5),
                               torch.tensor([0.2, 0.15, 0.1, 0.55]))
    assert blend_shares(window, answer, 0.0).argmax() == 0 and blend_shares(window, answer, 1.0).argmax() == 3
    assert blend_shares(window, answer, 0.5).sum().item() == pytest.approx(1.0)
    torch.testing.assert_close(blend_shares(torch.zeros(2), torch.zeros(2), 0.5), torch.tensor([0.5, 0.5]))
    for bad in (-0.1, 1.5, True, "0.5"):
        with pytest.raises(ConfigError, match="answer_weight"):
            MemoryConfig(answer_weight=bad)
    with pytest.raises(ConfigError, match="answer_weight"):
        MemoryConfig(answer_weight=0.5, retrieval="mean")


def test_recall_with_answer_weight_scores_from_the_window_and_from_the_answer_position(qwen_adapter, monkeypatch):
    """With ``answer_weight`` the blocks are scored twice (the window's queries, then the last token's)
    and chosen by the blend of the two."""
    import importlib

    from vidqa.memory.retrieve import blend_shares

    recall_module = importlib.import_module("vidqa.memory.recall")
    adapter = qwen_adapter
    config = MemoryConfig(window_chunks=2, token_budget=40, answer_weight=0.5)
    memory = ingest(adapter, random_chunks(adapter, 5), config)
    q = adapter.embed_ids(adapter.tokenize(adapter.prompt_question("How many red circles were there?")))
    seen = []
    real = recall_module.score_blocks
    monkeypatch.setattr(recall_module, "score_blocks",
                        lambda queries, *a, **k: seen.append((queries[0].shape[1], real(queries, *a, **k))) or seen[-1][1])
    rec = recall(adapter, memory, q, config)
    (width_all, window), (width_answer, answer) = seen
    assert (width_all, width_answer) == (q.shape[0], 1)
    torch.testing.assert_close(rec.scores, blend_shares(window, answer, 0.5))
    args = importlib.import_module("vidqa.app.cli").build_parser().parse_args(
        ["ask", "v.mp4", "q?", "--answer-weight", "0.25"])
    assert importlib.import_module("vidqa.app.cli")._settings(args).config.memory.answer_weight == 0.25


def test_retrieval_window_flag_reaches_the_config_and_leaves_the_memory_key_alone():
    from vidqa.app.cli import _settings, build_parser
    from vidqa.config import VidqaConfig

    args = build_parser().parse_args(["ask", "v.mp4", "q?", "--retrieval-window", "1"])
    assert _settings(args).config.memory.retrieval_window == 1
    assert _settings(build_parser().parse_args(["ask", "v.mp4", "q?"])).config.memory.retrieval_window == 0
    assert VidqaConfig(memory=MemoryConfig(retrieval_window=1)).ingest_key() == VidqaConfig().ingest_key()


@pytest.mark.parametrize("fixture", ["qwen_adapter", "llava_adapter"])
def test_rotating_keys_by_a_delta_equals_prefilling_at_the_shifted_position(request, fixture):
    adapter = request.getfixturevalue(fixture)
    tokens, layout, _ = random_chunks(adapter, 1)[0]
    keys = []
    for start in (40, 40 + 123):
        cache = DynamicCache()
        adapter.forward(tokens.embeds, adapter.visual_positions(tokens, layout, start), cache)
        keys.append(torch.stack([layer.keys[0] for layer in cache.layers]))
    torch.testing.assert_close(adapter.rotate_keys(keys[0], 123), keys[1], atol=1e-4, rtol=1e-4)


def test_forward_equals_stock_attention_on_uniform_caches(qwen_adapter):
    """adapter.forward (bottom-right causal SDPA, no mask tensor) equals transformers' own masked
    SDPA path over the same two-part prefill; the model is restored to its own implementation."""
    a = qwen_adapter
    ids = a.tokenize("a question long enough to be split in two prefills")
    e, p = a.embed_ids(ids), a.text_positions(len(ids), 0)
    stock = a.text_config._attn_implementation
    ref_cache, cache = DynamicCache(), DynamicCache()
    with torch.no_grad():
        for part in (slice(0, 20), slice(20, None)):
            out = a.language_model(inputs_embeds=e[part][None], position_ids=p[:, part].unsqueeze(1),
                                   past_key_values=ref_cache, use_cache=True)
    ref = a.model.lm_head(out.last_hidden_state[0, -1:]).float()[-1]
    a.forward(e[:20], p[:, :20], cache)
    got = a.forward(e[20:], p[:, 20:], cache)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    assert a.text_config._attn_implementation == stock != "vidqa_sdpa"  # restored after each forward


@pytest.mark.parametrize("hq,hkv,q_len,k_len", [(4, 2, 1, 9), (4, 2, 5, 5), (4, 2, 3, 11), (2, 2, 4, 7)])
def test_bottom_right_sdpa_equals_masked_reference(hq, hkv, q_len, k_len):
    from vidqa.memory.attention import bottom_right_sdpa

    g = torch.Generator().manual_seed(q_len * 100 + k_len)
    q = torch.randn(1, hq, q_len, 16, generator=g)
    k, v = torch.randn(1, hkv, k_len, 16, generator=g), torch.randn(1, hkv, k_len, 16, generator=g)
    out, _ = bottom_right_sdpa(None, q, k, v, attention_mask="ignored", scaling=0.3)
    kk, vv = k.repeat_interleave(hq // hkv, 1), v.repeat_interleave(hq // hkv, 1)
    logits = (q @ kk.transpose(-1, -2)) * 0.3
    visible = torch.arange(k_len)[None, :] <= torch.arange(q_len)[:, None] + k_len - q_len
    ref = logits.masked_fill(~visible, float("-inf")).softmax(-1) @ vv
    torch.testing.assert_close(out, ref.transpose(1, 2), atol=1e-5, rtol=1e-5)


def test_pyramid_pruning_keeps_fewer_entries_in_deeper_layers(qwen_adapter):
    """layer_keep "1:0.25": layer 0 keeps every retrieved visual entry, layer 1 a quarter -- the
    ones the question attends to most there -- and the answer runs over the uneven cache."""

    a = qwen_adapter
    chunks = random_chunks(a, 3)
    full_cfg = MemoryConfig(window_chunks=10, recurrent_tokens=0, token_budget=10**6)
    memory = ingest(a, chunks, full_cfg)
    q = a.embed_ids(a.tokenize(a.prompt_question("Where?")))
    same = recall(a, memory, q, MemoryConfig(**{**full_cfg.__dict__, "layer_keep": "1:1.0"}))
    assert not same.uneven
    rec = recall(a, memory, q, MemoryConfig(**{**full_cfg.__dict__, "layer_keep": "1:0.25"}))
    n_vis = memory.num_visual_tokens
    lengths = [layer.keys.shape[2] for layer in rec.cache.layers]
    assert rec.uneven and lengths[0] - lengths[1] == n_vis - -(-n_vis // 4)
    logits = a.forward(q, a.text_positions(q.shape[0], rec.next_position), rec.cache)
    assert torch.isfinite(logits).all()
    with pytest.raises(Exception):
        MemoryConfig(layer_keep="8:2")


def test_offload_thread_fills_every_block_and_bounds_its_queue(qwen_adapter, monkeypatch):
    """Blocks are stored by the background offload thread; at most OFFLOAD_QUEUE chunks wait for it,
    and finish() returns only when every block is on the host."""
    import threading

    from vidqa.memory import ingest as ingest_mod
    from vidqa.memory.storage import StoredKV

    pack, threads, gate = StoredKV.pack, set(), threading.Event()

    def slow_pack(x, bits=16, group_size=32, **kwargs):
        threads.add(threading.current_thread().name)
        gate.wait(5)  # held back until the main thread has queued more chunks than the queue allows
        return pack(x, bits, group_size, **kwargs)

    monkeypatch.setattr(StoredKV, "pack", staticmethod(slow_pack))
    chunks = random_chunks(qwen_adapter, ingest_mod.OFFLOAD_QUEUE + 3)
    ing = StreamingIngest(qwen_adapter, MemoryConfig(window_chunks=1))
    for i, (tokens, layout, t_end) in enumerate(chunks):
        if i == ingest_mod.OFFLOAD_QUEUE:
            assert len(ing._pending) == ingest_mod.OFFLOAD_QUEUE and ing.blocks[0].keys is None
            gate.set()  # from here on the queue must drain as the ingest goes
        ing.add_chunk(tokens, layout, t_end)
        assert len(ing._pending) <= ingest_mod.OFFLOAD_QUEUE
    memory = ing.finish(model="m", video={}, config_key="k", stats={})
    assert all(b.keys is not None and b.values is not None for b in memory.blocks)
    assert threads == {n for n in threads if n.startswith("vidqa-offload")} and threads
    assert memory.stats["offload_wait_s"] > 0


def test_an_offload_error_reaches_the_caller(qwen_adapter, monkeypatch):
    from vidqa.memory.storage import StoredKV

    def broken(x, bits=16, group_size=32, **kwargs):
        raise RuntimeError("host memory exhausted")

    monkeypatch.setattr(StoredKV, "pack", staticmethod(broken))
    chunks = random_chunks(qwen_adapter, 2)
    with pytest.raises(RuntimeError, match="host memory exhausted"):
        ingest(qwen_adapter, chunks, MemoryConfig())
