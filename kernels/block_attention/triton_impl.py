"""Triton attention over gathered KV blocks, reading fp16/bf16/fp32, int8 or int4 KV in place.

Parallel layout (flash-decoding, Dao et al. 2023): program ``(kv head, row tile, split)``. Rows are
the flattened (query head in the GQA group, query position) axis, so every KV byte is read once per
KV head, not once per query head (decode with 7 query heads per KV head fills 7 rows of one tile).
The selected blocks are divided among ``SPLITS`` programs so that even a single decoding query
keeps every SM busy; each writes a partial output and log-sum-exp, merged by one small kernel,
``_combine_kernel`` (:func:`~vidqa.kernels.block_attention.naive.combine_partials` math), so that a
call is two launches and no host synchronisation (CUDA-graph capturable). Keys/values are
dequantized in registers; softmax is online, so no attention matrix is materialised. int4 is two
half-width dot products over the even and odd channels, which is exactly how the bytes are packed.

Pipelining: every KV address depends on a load of the block table, one level of indirection, and
Triton divides ``num_stages`` between the table load and the KV loads, so ``stages=3`` keeps one KV
tile buffered, 5 two, 7 three. Nothing inside the loop may be a plain (waited-on) load for the
pipeliner to overlap the copies with compute: scales are read with a constexpr row stride (vector
loads) and the loads are masked by the block size, not by ``block_lens``.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634


@triton.jit
def _scales(s_ptr, sbase, offs_n, valid, NG: tl.constexpr, W: tl.constexpr, DT: tl.constexpr = tl.float32):
    """The ``[BN, NG]`` group scales (or zero points) of a tile, expanded to ``[BN, W]`` (``W / NG``
    adjacent columns per group). A token's ``NG`` scales are adjacent and tokens follow each other
    (the row stride is the constexpr ``NG``), so the load is vectorised and the pipeliner can issue it
    asynchronously ahead of use like the data; a runtime stride would make it a scalar load waited on in
    every iteration."""
    s = tl.load(s_ptr + sbase + offs_n[:, None] * NG + tl.arange(0, NG)[None, :], mask=valid[:, None],
                other=0.0).to(DT)
    return tl.reshape(tl.broadcast_to(s[:, :, None], (s.shape[0], NG, W // NG)), (s.shape[0], W))


@triton.jit
def _load_int8_f16(ptr, s_ptr, base, sbase, offs_n, valid, stride_t, D: tl.constexpr, G: tl.constexpr):
    """A float16 [BN, D] tile of int8 data times its fp16 group scales, without an int-to-float
    conversion instruction: ``x + 128 + 0x6400`` read as fp16 bits is exactly ``1024 + (x + 128)``
    (10 mantissa bits hold 0..255), so ``- 1152`` gives ``x`` exactly. Integer-to-float conversions
    issue at a quarter of the rate of adds on Hopper, and converting every loaded byte through them
    (the float32 path) is what held decode below the memory bandwidth."""
    d = tl.arange(0, D)
    x = tl.load(ptr + base + offs_n[:, None] * stride_t + d[None, :], mask=valid[:, None], other=0)
    h = (x.to(tl.int16) + 25728).to(tl.float16, bitcast=True) - 1152.0
    return h * _scales(s_ptr, sbase, offs_n, valid, D // G, D, tl.float16)


@triton.jit
def _load_full(ptr, s_ptr, base, sbase, offs_n, valid, stride_t,
               D: tl.constexpr, G: tl.constexpr, QUANT: tl.constexpr):
    """A float32 [BN, D] tile of fp data, or of int8 data times its group scales."""
    d = tl.arange(0, D)
    x = tl.load(ptr + base + offs_n[:, None] * stride_t + d[None, :], mask=valid[:, None], other=0).to(tl.float32)
    if QUANT:
        x = x * _scales(s_ptr, sbase, offs_n, valid, D // G, D)
    return x


@triton.jit
def _load_int4(ptr, s_ptr, z_ptr, base, sbase, offs_n, valid, stride_t,
               D: tl.constexpr, G: tl.constexpr, ODD: tl.constexpr):
    """A float32 [BN, D/2] tile of the even (ODD=0) or odd channels of packed int4 data. Channels
    ``2i`` and ``2i + 1`` both lie in group ``i // (G/2)``: the expanded scales serve both halves."""
    dh = tl.arange(0, D // 2)
    byte = tl.load(ptr + base + offs_n[:, None] * stride_t + dh[None, :], mask=valid[:, None], other=0)
    s = _scales(s_ptr, sbase, offs_n, valid, D // G, D // 2)
    z = _scales(z_ptr, sbase, offs_n, valid, D // G, D // 2)
    nib = (byte >> (4 * ODD)) & 15
    return nib.to(tl.float32) * s + z


@triton.jit
def _dot(a, b, LOWP: tl.constexpr):
    """bf16 tensor-core product for bf16/fp16 inputs; exact fp32 ("ieee") for fp32 inputs."""
    if LOWP:
        return tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16))
    return tl.dot(a, b, input_precision="ieee")


# Counts that change from call to call are not specialised on (each value class would compile anew).
@triton.jit(do_not_specialize=["n_sel", "per_split", "Lt"])
def _block_attn_kernel(Q, K, V, KS, KZ, VS, VZ, TABLE, LENS, TK, TV, O, LSE,
                       n_sel, per_split, Lq, T, Lt, GROUP,
                       sqh, sql, skb, skh, skt, ssb, ssh, sth, stl,
                       sos, soh, sol, sls, slh, sll,
                       qk_scale,
                       D: tl.constexpr, G: tl.constexpr, MODE: tl.constexpr, HAS_TAIL: tl.constexpr,
                       HAS_LENS: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, LOWP: tl.constexpr,
                       STAGES: tl.constexpr, F16: tl.constexpr):
    kvh = tl.program_id(0)
    rows = tl.program_id(1) * BM + tl.arange(0, BM)
    split = tl.program_id(2)
    row_ok = rows < GROUP * Lq
    head = kvh * GROUP + rows // Lq
    pos = rows % Lq
    m_i = tl.full((BM,), float("-inf"), tl.float32)
    l_i = tl.zeros((BM,), tl.float32)
    dh = tl.arange(0, D // 2)
    d = tl.arange(0, D)
    qrow = Q + head[:, None] * sqh + pos[:, None] * sql
    if MODE == 4:
        qa = tl.load(qrow + 2 * dh[None, :], mask=row_ok[:, None], other=0.0).to(tl.float32)
        qb = tl.load(qrow + 2 * dh[None, :] + 1, mask=row_ok[:, None], other=0.0).to(tl.float32)
        acc_a = tl.zeros((BM, D // 2), tl.float32)
        acc_b = tl.zeros((BM, D // 2), tl.float32)
    else:
        q = tl.load(qrow + d[None, :], mask=row_ok[:, None], other=0.0).to(tl.float32)
        acc = tl.zeros((BM, D), tl.float32)
        if F16:  # the scale folded into the query once, not applied to every logit tile
            q16 = (q * qk_scale).to(tl.float16)
    # One flat loop over (selected block, tile of BN tokens) pairs, so that loads pipeline.
    tiles_per_block = tl.cdiv(T, BN)
    it_lo = split * per_split * tiles_per_block
    it_hi = tl.minimum(split * per_split + per_split, n_sel) * tiles_per_block
    for it in tl.range(it_lo, it_hi, num_stages=STAGES):
        blk = tl.load(TABLE + it // tiles_per_block).to(tl.int64)
        if HAS_LENS:
            n = tl.load(LENS + blk)
        else:
            n = T
        base = blk * skb + kvh * skh
        sbase = blk * ssb + kvh * ssh
        offs_n = (it % tiles_per_block) * BN + tl.arange(0, BN)
        # Loads are masked by the block's size T only, so that their addresses and masks hang on the
        # table alone (one level of indirection for the pipeliner, not table -> lens -> data); the
        # padding tokens past `n` are read (in bounds) and masked out below: their logits become -inf
        # and their values 0, so whatever the padding holds (NaN included) never reaches the output.
        in_blk = offs_n < T
        valid = offs_n < n
        if MODE == 4:
            ka = _load_int4(K, KS, KZ, base, sbase, offs_n, in_blk, skt, D, G, 0)
            kb = _load_int4(K, KS, KZ, base, sbase, offs_n, in_blk, skt, D, G, 1)
            qk = (_dot(qa, tl.trans(ka), LOWP) + _dot(qb, tl.trans(kb), LOWP)) * qk_scale
        elif F16:
            qk = tl.dot(q16, tl.trans(_load_int8_f16(K, KS, base, sbase, offs_n, in_blk, skt, D, G)))
        else:
            k = _load_full(K, KS, base, sbase, offs_n, in_blk, skt, D, G, MODE == 8)
            qk = _dot(q, tl.trans(k), LOWP) * qk_scale
        qk = tl.where(valid[None, :], qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp2(m_i - m_safe)
        p = tl.exp2(qk - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        if MODE == 4:
            va = _load_int4(V, VS, VZ, base, sbase, offs_n, in_blk, skt, D, G, 0)
            vb = _load_int4(V, VS, VZ, base, sbase, offs_n, in_blk, skt, D, G, 1)
            if HAS_LENS:
                va = tl.where(valid[:, None], va, 0.0)
                vb = tl.where(valid[:, None], vb, 0.0)
            acc_a = acc_a * alpha[:, None] + _dot(p, va, LOWP)
            acc_b = acc_b * alpha[:, None] + _dot(p, vb, LOWP)
        elif F16:
            v = _load_int8_f16(V, VS, base, sbase, offs_n, in_blk, skt, D, G)
            if HAS_LENS:
                v = tl.where(valid[:, None], v, 0.0)
            acc = acc * alpha[:, None] + tl.dot(p.to(tl.float16), v)
        else:
            v = _load_full(V, VS, base, sbase, offs_n, in_blk, skt, D, G, MODE == 8)
            if HAS_LENS:
                v = tl.where(valid[:, None], v, 0.0)
            acc = acc * alpha[:, None] + _dot(p, v, LOWP)
        m_i = m_new
    if HAS_TAIL:
        if split == 0:
            tbase = kvh * sth
            for t0 in tl.range(0, Lt, BN, num_stages=1):  # a few tokens: buffers for pipelining would only cost shared memory
                offs_n = t0 + tl.arange(0, BN)
                in_tail = offs_n < Lt
                ok = in_tail[None, :] & (offs_n[None, :] <= pos[:, None] + Lt - Lq)
                if MODE == 4:
                    ka = tl.load(TK + tbase + offs_n[:, None] * stl + 2 * dh[None, :], mask=in_tail[:, None], other=0.0).to(tl.float32)
                    kb = tl.load(TK + tbase + offs_n[:, None] * stl + 2 * dh[None, :] + 1, mask=in_tail[:, None], other=0.0).to(tl.float32)
                    qk = _dot(qa, tl.trans(ka), LOWP) + _dot(qb, tl.trans(kb), LOWP)
                else:
                    k = tl.load(TK + tbase + offs_n[:, None] * stl + d[None, :], mask=in_tail[:, None], other=0.0).to(tl.float32)
                    qk = _dot(q, tl.trans(k), LOWP)
                qk = tl.where(ok, qk * qk_scale, float("-inf"))
                m_new = tl.maximum(m_i, tl.max(qk, axis=1))
                m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
                alpha = tl.exp2(m_i - m_safe)
                p = tl.exp2(qk - m_safe[:, None])
                l_i = l_i * alpha + tl.sum(p, axis=1)
                if MODE == 4:
                    va = tl.load(TV + tbase + offs_n[:, None] * stl + 2 * dh[None, :], mask=in_tail[:, None], other=0.0).to(tl.float32)
                    vb = tl.load(TV + tbase + offs_n[:, None] * stl + 2 * dh[None, :] + 1, mask=in_tail[:, None], other=0.0).to(tl.float32)
                    acc_a = acc_a * alpha[:, None] + _dot(p, va, LOWP)
                    acc_b = acc_b * alpha[:, None] + _dot(p, vb, LOWP)
                else:
                    v = tl.load(TV + tbase + offs_n[:, None] * stl + d[None, :], mask=in_tail[:, None], other=0.0).to(tl.float32)
                    acc = acc * alpha[:, None] + _dot(p, v, LOWP)
                m_i = m_new
    # A split that saw no key contributes nothing: o = 0, lse = -inf.
    empty = l_i == 0.0
    inv = tl.where(empty, 0.0, 1.0 / tl.where(empty, 1.0, l_i))
    lse = tl.where(empty, float("-inf"), (m_i + tl.log2(tl.where(empty, 1.0, l_i))) / 1.4426950408889634)
    out = O + split * sos + head[:, None] * soh + pos[:, None] * sol
    if MODE == 4:
        tl.store(out + 2 * dh[None, :], acc_a * inv[:, None], mask=row_ok[:, None])
        tl.store(out + 2 * dh[None, :] + 1, acc_b * inv[:, None], mask=row_ok[:, None])
    else:
        tl.store(out + d[None, :], acc * inv[:, None], mask=row_ok[:, None])
    tl.store(LSE + split * sls + head * slh + pos * sll, lse, mask=row_ok)


@triton.jit
def _combine_kernel(PO, PL, O, LSE, n_splits, Lq, sps, sph, spl, sls, slh, sll, soh, sol, sh, sl,
                    D: tl.constexpr, BS: tl.constexpr):
    """Program ``row`` (= head * Lq + pos) merges that row's ``n_splits`` partials (``combine_partials``
    math). A split with ``lse = -inf`` saw no key and is skipped whatever its output holds; a row that
    no split saw gets ``o = 0, lse = -inf``."""
    row = tl.program_id(0)
    head = row // Lq
    pos = row % Lq
    d = tl.arange(0, D)
    pl = PL + head * slh + pos * sll
    m_vec = tl.full((BS,), float("-inf"), tl.float32)
    for c in range(0, n_splits, BS):
        sp = c + tl.arange(0, BS)
        m_vec = tl.maximum(m_vec, tl.load(pl + sp * sls, mask=sp < n_splits, other=float("-inf")))
    m = tl.max(m_vec, axis=0)
    m = tl.where(m == float("-inf"), 0.0, m)
    w_sum = tl.zeros((BS,), tl.float32)
    acc = tl.zeros((D,), tl.float32)
    for c in range(0, n_splits, BS):
        sp = c + tl.arange(0, BS)
        lse_s = tl.load(pl + sp * sls, mask=sp < n_splits, other=float("-inf"))
        live = lse_s > float("-inf")
        w = tl.where(live, tl.exp2((lse_s - m) * 1.4426950408889634), 0.0)
        o_s = tl.load(PO + sp[:, None] * sps + head * sph + pos * spl + d[None, :], mask=live[:, None], other=0.0)
        acc += tl.sum(w[:, None] * o_s, axis=0)
        w_sum += w
    total = tl.sum(w_sum, axis=0)
    empty = total == 0.0
    inv = tl.where(empty, 0.0, 1.0 / tl.where(empty, 1.0, total))
    tl.store(O + head * soh + pos * sol + d, acc * inv)
    tl.store(LSE + head * sh + pos * sl, tl.where(empty, float("-inf"), m + tl.log(tl.where(empty, 1.0, total))))


def combine_triton(part_o: torch.Tensor, part_l: torch.Tensor, out: torch.Tensor | None = None,
                   lse: torch.Tensor | None = None):
    """``part_o [S, Hq, Lq, D]``, ``part_l [S, Hq, Lq]`` (float32, natural-log lse) merged into
    ``(o [Hq, Lq, D], lse [Hq, Lq])`` float32, written into ``out``/``lse`` when given (any strides
    with a unit last stride for ``out``)."""
    s, hq, lq, d = part_o.shape
    if out is None:
        out = torch.empty(hq, lq, d, device=part_o.device, dtype=torch.float32)
    if lse is None:
        lse = torch.empty(hq, lq, device=part_o.device, dtype=torch.float32)
    bs = max(2, min(triton.next_power_of_2(s), max(2, 4096 // d)))
    _combine_kernel[(hq * lq,)](
        part_o, part_l, out, lse, s, lq, part_o.stride(0), part_o.stride(1), part_o.stride(2),
        part_l.stride(0), part_l.stride(1), part_l.stride(2), out.stride(0), out.stride(1),
        lse.stride(0), lse.stride(1), D=d, BS=bs, num_warps=4)
    return out, lse


@functools.lru_cache(maxsize=None)
def _num_sms(device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4


def _unit_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` itself when its last dimension is dense (all the kernels need); a copy otherwise."""
    return x if x.stride(-1) == 1 else x.contiguous()


def _dense_groups(s: torch.Tensor) -> torch.Tensor:
    """Group scales ``[NB, Hkv, T, D/G]`` whose last two dimensions are dense (what the kernel reads)."""
    return s if s.stride(-1) == 1 and s.stride(-2) == s.shape[-1] else s.contiguous()


def _writable(t: torch.Tensor | None, shape, device) -> bool:
    """Whether the kernels can store straight into the caller's ``out``/``lse``."""
    return (t is not None and t.dtype == torch.float32 and t.device == device and tuple(t.shape) == shape
            and (t.dim() < 3 or t.stride(-1) == 1))


# Default knobs, measured by `bench/kernels.py --sweep` on an H200 at 1M int8 tokens (7B shapes):
# "decode" when the GQA group times the query length fits one 16-row tile, else "prefill".
DEFAULT_KNOBS = {
    "decode": dict(bm=16, bn=128, num_warps=4, stages=5, waves=2, dequant="f16"),
    "prefill": dict(bm=64, bn=64, num_warps=4, stages=3, waves=2, dequant="f16"),
}


def block_attention_triton(q, k, v, block_table, block_lens, tail_k, tail_v, scale, splits: int | None = None,
                           bm: int | None = None, bn: int | None = None, num_warps: int | None = None,
                           stages: int | None = None, waves: int | None = None, dequant: str | None = None,
                           out: torch.Tensor | None = None, lse: torch.Tensor | None = None):
    """``k``/``v`` are tensors (float) or ``QuantizedKV`` of shape ``[NB, Hkv, T, D]``; returns
    ``(o [Hq, Lq, D] float32, lse [Hq, Lq] float32)``, stored into ``out``/``lse`` when given.

    Tuning knobs (``bench/kernels.py --sweep`` measures them; ``None`` takes :data:`DEFAULT_KNOBS`):
    ``bm`` rows per program, ``bn`` tokens per tile, ``num_warps``, pipeline ``stages`` (3: one KV
    tile in flight, 5: two, see the module docstring), ``splits`` of the block list (default:
    enough programs to fill the device ``waves`` times), and ``dequant``: how int8 tiles with bf16/fp16
    queries are dequantized, ``"f16"`` (exact fp16 bit trick, fp16 tensor-core products; see
    :func:`_load_int8_f16`) or ``"f32"`` (convert, scale in float32, products in bf16).
    With one split the kernel writes the result itself; otherwise :func:`combine_triton` merges the
    partials. Nothing here synchronises with the host when ``block_table``/``block_lens`` already
    live on ``q``'s device, so the call can be captured in a CUDA graph.
    """
    from vidqa.kernels.quant import QuantizedKV

    hq, lq, d = q.shape
    dev = q.device
    if isinstance(k, QuantizedKV):
        mode, g = k.bits, k.group_size
        kd, vd = _unit_last(k.data), _unit_last(v.data)
        # Scales (and zeros) share the strides of K's scales, with a token's groups dense ([.., T, D/G]).
        ks, vs = _dense_groups(k.scale), _dense_groups(v.scale)
        kz = _dense_groups(k.zero) if k.zero is not None else ks
        vz = _dense_groups(v.zero) if v.zero is not None else vs
        if not ks.stride() == vs.stride() == kz.stride() == vz.stride():
            ks, vs, kz, vz = ks.contiguous(), vs.contiguous(), kz.contiguous(), vz.contiguous()
    else:
        mode, g = 0, d
        kd, vd = _unit_last(k), _unit_last(v)
        ks = vs = kz = vz = kd  # never read: any pointer does
    if vd.stride() != kd.stride():
        kd, vd = kd.contiguous(), vd.contiguous()
    nb, hkv, t = kd.shape[0], kd.shape[1], kd.shape[2]
    group = hq // hkv
    q = _unit_last(q)
    table = block_table
    if table.device != dev or table.dtype != torch.int32:
        table = table.to(device=dev, dtype=torch.int32)
    table = _unit_last(table)  # 1-D: dense
    has_lens = block_lens is not None
    lens = table
    if has_lens:
        lens = block_lens if block_lens.device == dev and block_lens.dtype == torch.int32 else \
            block_lens.to(device=dev, dtype=torch.int32)
        lens = _unit_last(lens)
    has_tail = tail_k is not None
    tk = _unit_last(tail_k) if has_tail else q
    tv = _unit_last(tail_v) if has_tail else q
    if has_tail and tv.stride() != tk.stride():
        tk, tv = tk.contiguous(), tv.contiguous()
    lt = tail_k.shape[1] if has_tail else 0
    knobs = DEFAULT_KNOBS["decode" if group * lq <= 16 else "prefill"]
    bm, bn, num_warps = bm or knobs["bm"], bn or knobs["bn"], num_warps or knobs["num_warps"]
    stages, waves, dequant = stages or knobs["stages"], waves or knobs["waves"], dequant or knobs["dequant"]
    if dequant not in ("f16", "f32"):
        raise ValueError(f"dequant must be 'f16' or 'f32', got {dequant!r}")
    lowp = q.dtype in (torch.bfloat16, torch.float16)
    tiles = triton.cdiv(group * lq, bm)
    n_sel = table.numel()
    if splits is None:  # enough programs to fill the device `waves` times over
        splits = max(1, min(n_sel, triton.cdiv(waves * _num_sms(dev), hkv * tiles)))
    per_split = max(1, triton.cdiv(n_sel, splits))
    splits = max(1, triton.cdiv(n_sel, per_split))
    out_ok, lse_ok = _writable(out, (hq, lq, d), dev), _writable(lse, (hq, lq), dev)
    if splits == 1:  # the kernel's one partial is the result
        part_o = out if out_ok else torch.empty(hq, lq, d, device=dev, dtype=torch.float32)
        part_l = lse if lse_ok else torch.empty(hq, lq, device=dev, dtype=torch.float32)
        so = (0, part_o.stride(0), part_o.stride(1))
        sl = (0, part_l.stride(0), part_l.stride(1))
    else:
        part_o = torch.empty(splits, hq, lq, d, device=dev, dtype=torch.float32)
        part_l = torch.empty(splits, hq, lq, device=dev, dtype=torch.float32)
        so, sl = part_o.stride()[:3], part_l.stride()
    _block_attn_kernel[(hkv, tiles, splits)](
        q, kd, vd, ks, kz, vs, vz, table, lens, tk, tv, part_o, part_l,
        n_sel, per_split, lq, t, lt, group,
        q.stride(0), q.stride(1), kd.stride(0), kd.stride(1), kd.stride(2),
        ks.stride(0) if mode else 0, ks.stride(1) if mode else 0,
        tk.stride(0) if has_tail else 0, tk.stride(1) if has_tail else 0,
        *so, *sl,
        scale * LOG2E, D=d, G=g, MODE=mode, HAS_TAIL=has_tail, HAS_LENS=has_lens, BM=bm, BN=bn,
        LOWP=lowp, STAGES=stages if q.is_cuda else 1, F16=mode == 8 and lowp and dequant == "f16",
        num_warps=num_warps)
    if splits == 1:
        o, l = part_o, part_l
    else:
        o, l = combine_triton(part_o, part_l, out if out_ok else None, lse if lse_ok else None)
    if out is not None and not out_ok:
        out.copy_(o)
        o = out
    if lse is not None and not lse_ok:
        lse.copy_(l)
        l = lse
    return o, l
