"""Triton attention over gathered KV blocks, reading fp16/bf16/fp32, int8 or int4 KV in place.

Parallel layout (flash-decoding, Dao et al. 2023): program ``(kv head, row tile, split)``. Rows are
the flattened (query head in the GQA group, query position) axis, so every KV byte is read once per
KV head, not once per query head (decode with 7 query heads per KV head fills 7 rows of one tile).
The selected blocks are divided among ``SPLITS`` programs so that even a single decoding query
keeps every SM busy; each writes a partial output and log-sum-exp, merged afterwards
(:func:`~vidqa.kernels.block_attention.naive.combine_partials` math). Keys/values are dequantized
in registers; softmax is online, so no attention matrix is materialised. int4 is two half-width dot
products over the even and odd channels, which is exactly how the bytes are packed.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634


@triton.jit
def _load_full(ptr, s_ptr, base, sbase, offs_n, valid, stride_t, stride_st,
               D: tl.constexpr, G: tl.constexpr, QUANT: tl.constexpr):
    """A float32 [BN, D] tile of fp data, or of int8 data times its group scales."""
    d = tl.arange(0, D)
    x = tl.load(ptr + base + offs_n[:, None] * stride_t + d[None, :], mask=valid[:, None], other=0).to(tl.float32)
    if QUANT:
        # One scale per group, loaded once and broadcast over its G channels.
        s = tl.load(s_ptr + sbase + offs_n[:, None] * stride_st + tl.arange(0, D // G)[None, :],
                    mask=valid[:, None], other=0.0).to(tl.float32)
        s = tl.reshape(tl.broadcast_to(s[:, :, None], (s.shape[0], D // G, G)), (s.shape[0], D))
        x = x * s
    return x


@triton.jit
def _load_int4(ptr, s_ptr, z_ptr, base, sbase, offs_n, valid, stride_t, stride_st,
               D: tl.constexpr, G: tl.constexpr, ODD: tl.constexpr):
    """A float32 [BN, D/2] tile of the even (ODD=0) or odd channels of packed int4 data."""
    dh = tl.arange(0, D // 2)
    byte = tl.load(ptr + base + offs_n[:, None] * stride_t + dh[None, :], mask=valid[:, None], other=0)
    grp = (2 * dh) // G
    s = tl.load(s_ptr + sbase + offs_n[:, None] * stride_st + grp[None, :], mask=valid[:, None], other=0.0)
    z = tl.load(z_ptr + sbase + offs_n[:, None] * stride_st + grp[None, :], mask=valid[:, None], other=0.0)
    nib = (byte >> (4 * ODD)) & 15
    return nib.to(tl.float32) * s.to(tl.float32) + z.to(tl.float32)


@triton.jit
def _dot(a, b, LOWP: tl.constexpr):
    """bf16 tensor-core product for bf16/fp16 inputs; exact fp32 ("ieee") for fp32 inputs."""
    if LOWP:
        return tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16))
    return tl.dot(a, b, input_precision="ieee")


@triton.jit
def _block_attn_kernel(Q, K, V, KS, KZ, VS, VZ, TABLE, LENS, TK, TV, O, LSE,
                       n_sel, per_split, Lq, T, Lt, GROUP,
                       sqh, sql, skb, skh, skt, ssb, ssh, sst, sth, stl,
                       sos, soh, sol, sls, slh,
                       qk_scale,
                       D: tl.constexpr, G: tl.constexpr, MODE: tl.constexpr, HAS_TAIL: tl.constexpr,
                       BM: tl.constexpr, BN: tl.constexpr, LOWP: tl.constexpr, STAGES: tl.constexpr):
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
    # One flat loop over (selected block, tile of BN tokens) pairs, so that loads pipeline.
    tiles_per_block = tl.cdiv(T, BN)
    it_lo = split * per_split * tiles_per_block
    it_hi = tl.minimum(split * per_split + per_split, n_sel) * tiles_per_block
    for it in tl.range(it_lo, it_hi, num_stages=STAGES):
        blk = tl.load(TABLE + it // tiles_per_block).to(tl.int64)
        n = tl.load(LENS + blk)
        base = blk * skb + kvh * skh
        sbase = blk * ssb + kvh * ssh
        offs_n = (it % tiles_per_block) * BN + tl.arange(0, BN)
        valid = offs_n < n
        if MODE == 4:
            ka = _load_int4(K, KS, KZ, base, sbase, offs_n, valid, skt, sst, D, G, 0)
            kb = _load_int4(K, KS, KZ, base, sbase, offs_n, valid, skt, sst, D, G, 1)
            qk = _dot(qa, tl.trans(ka), LOWP) + _dot(qb, tl.trans(kb), LOWP)
        else:
            k = _load_full(K, KS, base, sbase, offs_n, valid, skt, sst, D, G, MODE == 8)
            qk = _dot(q, tl.trans(k), LOWP)
        qk = tl.where(valid[None, :], qk * qk_scale, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp2(m_i - m_safe)
        p = tl.exp2(qk - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        if MODE == 4:
            va = _load_int4(V, VS, VZ, base, sbase, offs_n, valid, skt, sst, D, G, 0)
            vb = _load_int4(V, VS, VZ, base, sbase, offs_n, valid, skt, sst, D, G, 1)
            acc_a = acc_a * alpha[:, None] + _dot(p, va, LOWP)
            acc_b = acc_b * alpha[:, None] + _dot(p, vb, LOWP)
        else:
            v = _load_full(V, VS, base, sbase, offs_n, valid, skt, sst, D, G, MODE == 8)
            acc = acc * alpha[:, None] + _dot(p, v, LOWP)
        m_i = m_new
    if HAS_TAIL:
        if split == 0:
            tbase = kvh * sth
            for t0 in range(0, Lt, BN):
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
    tl.store(LSE + split * sls + head * slh + pos, lse, mask=row_ok)


def _num_sms(device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4


def block_attention_triton(q, k, v, block_table, block_lens, tail_k, tail_v, scale, splits: int | None = None,
                           bm: int | None = None, bn: int = 64, num_warps: int | None = None,
                           stages: int = 3, waves: int = 4):
    """``k``/``v`` are tensors (float) or ``QuantizedKV`` of shape ``[NB, Hkv, T, D]``.

    Tuning knobs (``bench/kernels.py --sweep`` measures them): ``bm`` rows per program (default 16
    for decode-sized groups, else 64), ``bn`` tokens per tile, ``num_warps``, pipeline ``stages``,
    and ``splits`` of the block list (default: enough programs to fill the device ``waves`` times).
    """
    from vidqa.kernels.quant import QuantizedKV

    hq, lq, d = q.shape
    if isinstance(k, QuantizedKV):
        mode, g = k.bits, k.group_size
        kd, vd, ks, vs = k.data, v.data, k.scale, v.scale
        kz = k.zero if k.zero is not None else ks
        vz = v.zero if v.zero is not None else vs
    else:
        mode, g = 0, d
        kd, vd = k, v
        ks = vs = kz = vz = torch.zeros(1, 1, 1, 1, device=q.device, dtype=torch.float16)
    nb, hkv, t = kd.shape[0], kd.shape[1], kd.shape[2]
    group = hq // hkv
    q = q.contiguous()
    kd, vd = kd.contiguous(), vd.contiguous()
    ks, vs, kz, vz = ks.contiguous(), vs.contiguous(), kz.contiguous(), vz.contiguous()
    table = block_table.to(device=q.device, dtype=torch.int32).contiguous()
    # Built on the device: a host tensor here would cost a synchronous copy on every call.
    lens = (block_lens.to(device=q.device, dtype=torch.int32) if block_lens is not None
            else torch.full((nb,), t, device=q.device, dtype=torch.int32))
    has_tail = tail_k is not None
    tk = tail_k.contiguous() if has_tail else q
    tv = tail_v.contiguous() if has_tail else q
    lt = tail_k.shape[1] if has_tail else 0
    bm = bm or (16 if group * lq <= 16 else 64)
    tiles = triton.cdiv(group * lq, bm)
    n_sel = table.numel()
    if splits is None:  # enough programs to fill the device `waves` times over
        splits = max(1, min(n_sel, triton.cdiv(waves * _num_sms(q.device), hkv * tiles)))
    per_split = max(1, triton.cdiv(n_sel, splits))
    splits = max(1, triton.cdiv(n_sel, per_split))
    part_o = torch.empty(splits, hq, lq, d, device=q.device, dtype=torch.float32)
    part_l = torch.empty(splits, hq, lq, device=q.device, dtype=torch.float32)
    _block_attn_kernel[(hkv, tiles, splits)](
        q, kd, vd, ks, kz, vs, vz, table, lens, tk, tv, part_o, part_l,
        n_sel, per_split, lq, t, lt, group,
        q.stride(0), q.stride(1), kd.stride(0), kd.stride(1), kd.stride(2),
        ks.stride(0) if mode else 0, ks.stride(1) if mode else 0, ks.stride(2) if mode else 0,
        tk.stride(0) if has_tail else 0, tk.stride(1) if has_tail else 0,
        part_o.stride(0), part_o.stride(1), part_o.stride(2), part_l.stride(0), part_l.stride(1),
        scale * LOG2E, D=d, G=g, MODE=mode, HAS_TAIL=has_tail, BM=bm, BN=bn,
        LOWP=q.dtype in (torch.bfloat16, torch.float16), STAGES=stages if q.is_cuda else 1,
        num_warps=num_warps or (8 if bm == 64 else 4))
    if splits == 1:
        o, l = part_o[0], part_l[0]
    else:
        l = torch.logsumexp(part_l, dim=0)
        w = torch.exp(part_l - l[None]).nan_to_num(0.0)
        o = (w[..., None] * part_o).sum(0)
    return o, l
