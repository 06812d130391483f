"""Triton attention over gathered KV blocks, reading fp16/bf16/fp32, int8 or int4 KV in place.

One program handles one KV head and a tile of ``BM`` rows of the flattened (query head in the GQA
group, query position) axis, so every KV byte is read once per KV head, not once per query head
(decode with 7 query heads per KV head fills 7 rows of one tile). Keys/values are dequantized in
registers; softmax is online (flash-attention style), so no attention matrix is materialised.
int4 is handled as two half-width dot products over the even and odd channels, which is exactly
how the bytes are packed.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _load_kv(ptr, s_ptr, z_ptr, base, sbase, offs_n, valid, stride_t, stride_st,
             D: tl.constexpr, G: tl.constexpr, MODE: tl.constexpr, PART: tl.constexpr):
    """A [BN, D] (MODE 0/8) or [BN, D/2] (MODE 4, PART 0 = even channels, 1 = odd) float32 tile."""
    if MODE == 4:
        dh = tl.arange(0, D // 2)
        byte = tl.load(ptr + base + offs_n[:, None] * stride_t + dh[None, :], mask=valid[:, None], other=0)
        grp = (2 * dh) // G
        s = tl.load(s_ptr + sbase + offs_n[:, None] * stride_st + grp[None, :], mask=valid[:, None], other=0.0)
        z = tl.load(z_ptr + sbase + offs_n[:, None] * stride_st + grp[None, :], mask=valid[:, None], other=0.0)
        if PART == 0:
            q = byte & 15
        else:
            q = byte >> 4
        return q.to(tl.float32) * s.to(tl.float32) + z.to(tl.float32)
    d = tl.arange(0, D)
    x = tl.load(ptr + base + offs_n[:, None] * stride_t + d[None, :], mask=valid[:, None], other=0).to(tl.float32)
    if MODE == 8:
        s = tl.load(s_ptr + sbase + offs_n[:, None] * stride_st + (d // G)[None, :], mask=valid[:, None], other=0.0)
        x = x * s.to(tl.float32)
    return x


@triton.jit
def _block_attn_kernel(Q, K, V, KS, KZ, VS, VZ, TABLE, LENS, TK, TV, O, LSE,
                       n_sel, Lq, T, Lt, GROUP,
                       sqh, sql, skb, skh, skt, ssb, ssh, sst, sth, stl, soh, sol,
                       scale,
                       D: tl.constexpr, G: tl.constexpr, MODE: tl.constexpr, HAS_TAIL: tl.constexpr,
                       BM: tl.constexpr, BN: tl.constexpr):
    kvh = tl.program_id(0)
    rows = tl.program_id(1) * BM + tl.arange(0, BM)
    row_ok = rows < GROUP * Lq
    head = kvh * GROUP + rows // Lq
    pos = rows % Lq
    m_i = tl.full((BM,), float("-inf"), tl.float32)
    l_i = tl.zeros((BM,), tl.float32)
    if MODE == 4:
        dh = tl.arange(0, D // 2)
        qe = tl.load(Q + head[:, None] * sqh + pos[:, None] * sql + 2 * dh[None, :], mask=row_ok[:, None], other=0.0).to(tl.float32)
        qo = tl.load(Q + head[:, None] * sqh + pos[:, None] * sql + 2 * dh[None, :] + 1, mask=row_ok[:, None], other=0.0).to(tl.float32)
        acc_e = tl.zeros((BM, D // 2), tl.float32)
        acc_o = tl.zeros((BM, D // 2), tl.float32)
    else:
        d = tl.arange(0, D)
        q = tl.load(Q + head[:, None] * sqh + pos[:, None] * sql + d[None, :], mask=row_ok[:, None], other=0.0).to(tl.float32)
        acc = tl.zeros((BM, D), tl.float32)
    for s in range(0, n_sel):
        blk = tl.load(TABLE + s).to(tl.int64)
        n = tl.load(LENS + blk)
        base = blk * skb + kvh * skh
        sbase = blk * ssb + kvh * ssh
        for t0 in range(0, T, BN):
            offs_n = t0 + tl.arange(0, BN)
            valid = offs_n < n
            if MODE == 4:
                ke = _load_kv(K, KS, KZ, base, sbase, offs_n, valid, skt, sst, D, G, MODE, 0)
                ko = _load_kv(K, KS, KZ, base, sbase, offs_n, valid, skt, sst, D, G, MODE, 1)
                qk = tl.dot(qe, tl.trans(ke)) + tl.dot(qo, tl.trans(ko))
            else:
                k = _load_kv(K, KS, KZ, base, sbase, offs_n, valid, skt, sst, D, G, MODE, 0)
                qk = tl.dot(q, tl.trans(k))
            qk = tl.where(valid[None, :], qk * scale, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(qk, axis=1))
            alpha = tl.exp(m_i - m_new)
            p = tl.exp(qk - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, axis=1)
            if MODE == 4:
                ve = _load_kv(V, VS, VZ, base, sbase, offs_n, valid, skt, sst, D, G, MODE, 0)
                vo = _load_kv(V, VS, VZ, base, sbase, offs_n, valid, skt, sst, D, G, MODE, 1)
                acc_e = acc_e * alpha[:, None] + tl.dot(p, ve)
                acc_o = acc_o * alpha[:, None] + tl.dot(p, vo)
            else:
                v = _load_kv(V, VS, VZ, base, sbase, offs_n, valid, skt, sst, D, G, MODE, 0)
                acc = acc * alpha[:, None] + tl.dot(p, v)
            m_i = m_new
    if HAS_TAIL:
        for t0 in range(0, Lt, BN):
            offs_n = t0 + tl.arange(0, BN)
            ok = (offs_n[None, :] < Lt) & (offs_n[None, :] <= pos[:, None] + Lt - Lq)
            tbase = kvh * sth
            if MODE == 4:
                ke = tl.load(TK + tbase + offs_n[:, None] * stl + 2 * dh[None, :], mask=offs_n[:, None] < Lt, other=0.0).to(tl.float32)
                ko = tl.load(TK + tbase + offs_n[:, None] * stl + 2 * dh[None, :] + 1, mask=offs_n[:, None] < Lt, other=0.0).to(tl.float32)
                qk = tl.dot(qe, tl.trans(ke)) + tl.dot(qo, tl.trans(ko))
            else:
                k = tl.load(TK + tbase + offs_n[:, None] * stl + d[None, :], mask=offs_n[:, None] < Lt, other=0.0).to(tl.float32)
                qk = tl.dot(q, tl.trans(k))
            qk = tl.where(ok, qk * scale, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(qk, axis=1))
            alpha = tl.exp(m_i - m_new)
            p = tl.exp(qk - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, axis=1)
            if MODE == 4:
                ve = tl.load(TV + tbase + offs_n[:, None] * stl + 2 * dh[None, :], mask=offs_n[:, None] < Lt, other=0.0).to(tl.float32)
                vo = tl.load(TV + tbase + offs_n[:, None] * stl + 2 * dh[None, :] + 1, mask=offs_n[:, None] < Lt, other=0.0).to(tl.float32)
                acc_e = acc_e * alpha[:, None] + tl.dot(p, ve)
                acc_o = acc_o * alpha[:, None] + tl.dot(p, vo)
            else:
                v = tl.load(TV + tbase + offs_n[:, None] * stl + d[None, :], mask=offs_n[:, None] < Lt, other=0.0).to(tl.float32)
                acc = acc * alpha[:, None] + tl.dot(p, v)
            m_i = m_new
    out = O + head[:, None] * soh + pos[:, None] * sol
    if MODE == 4:
        tl.store(out + 2 * dh[None, :], acc_e / l_i[:, None], mask=row_ok[:, None])
        tl.store(out + 2 * dh[None, :] + 1, acc_o / l_i[:, None], mask=row_ok[:, None])
    else:
        tl.store(out + d[None, :], acc / l_i[:, None], mask=row_ok[:, None])
    tl.store(LSE + head * Lq + pos, m_i + tl.log(l_i), mask=row_ok)


def block_attention_triton(q, k, v, block_table, block_lens, tail_k, tail_v, scale, out=None, lse=None):
    """``k``/``v`` are tensors (float) or ``QuantizedKV`` of shape ``[NB, Hkv, T, D]``."""
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
    lens = (block_lens if block_lens is not None else torch.full((nb,), t)).to(device=q.device, dtype=torch.int32)
    has_tail = tail_k is not None
    tk = tail_k.contiguous() if has_tail else q
    tv = tail_v.contiguous() if has_tail else q
    lt = tail_k.shape[1] if has_tail else 0
    if out is None:
        out = torch.empty(hq, lq, d, device=q.device, dtype=torch.float32)
    if lse is None:
        lse = torch.empty(hq, lq, device=q.device, dtype=torch.float32)
    bm = 16 if group * lq <= 16 else 64
    bn = 64
    grid = (hkv, triton.cdiv(group * lq, bm))
    _block_attn_kernel[grid](
        q, kd, vd, ks, kz, vs, vz, table, lens, tk, tv, out, lse,
        table.numel(), lq, t, lt, group,
        q.stride(0), q.stride(1), kd.stride(0), kd.stride(1), kd.stride(2),
        ks.stride(0) if mode else 0, ks.stride(1) if mode else 0, ks.stride(2) if mode else 0,
        tk.stride(0) if has_tail else 0, tk.stride(1) if has_tail else 0, out.stride(0), out.stride(1),
        scale, D=d, G=g, MODE=mode, HAS_TAIL=has_tail, BM=bm, BN=bn)
    return out, lse
