"""Triton best cosine match without the ``Na x Nb`` matrix: each program takes ``BA`` rows of ``a``
and sweeps ``b`` in tiles of ``BB``, keeping a running maximum and its index."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _match_kernel(A, B, VAL, IDX, na, nb, D: tl.constexpr, BA: tl.constexpr, BB: tl.constexpr, BD: tl.constexpr):
    ra = tl.program_id(0) * BA + tl.arange(0, BA)
    oka = ra < na
    # Norms of this tile of `a`, in BD-wide slices of the channels (wide tokens stay in registers).
    na2 = tl.zeros((BA,), tl.float32)
    for d0 in range(0, D, BD):
        d = d0 + tl.arange(0, BD)
        a = tl.load(A + ra[:, None] * D + d[None, :], mask=oka[:, None] & (d < D)[None, :], other=0.0).to(tl.float32)
        na2 += tl.sum(a * a, axis=1)
    inv_a = 1.0 / tl.maximum(tl.sqrt(na2), 1e-12)
    best = tl.full((BA,), float("-inf"), tl.float32)
    arg = tl.zeros((BA,), tl.int32)
    for b0 in range(0, nb, BB):
        rb = b0 + tl.arange(0, BB)
        okb = rb < nb
        dots = tl.zeros((BA, BB), tl.float32)
        nb2 = tl.zeros((BB,), tl.float32)
        for d0 in range(0, D, BD):
            d = d0 + tl.arange(0, BD)
            dm = d < D
            a = tl.load(A + ra[:, None] * D + d[None, :], mask=oka[:, None] & dm[None, :], other=0.0).to(tl.float32)
            b = tl.load(B + rb[:, None] * D + d[None, :], mask=okb[:, None] & dm[None, :], other=0.0).to(tl.float32)
            dots += tl.dot(a, tl.trans(b), input_precision="ieee")  # exact ties/argmax as the reference
            nb2 += tl.sum(b * b, axis=1)
        sim = dots * inv_a[:, None] / tl.maximum(tl.sqrt(nb2), 1e-12)[None, :]
        sim = tl.where(okb[None, :], sim, float("-inf"))
        tile_best = tl.max(sim, axis=1)
        tile_arg = tl.argmax(sim, axis=1).to(tl.int32) + b0
        better = tile_best > best  # strict: earlier tiles win ties, as argmax does
        arg = tl.where(better, tile_arg, arg)
        best = tl.where(better, tile_best, best)
    tl.store(VAL + ra, best, mask=oka)
    tl.store(IDX + ra, arg, mask=oka)


def best_match_triton(a: torch.Tensor, b: torch.Tensor, values=None, indices=None):
    na, d = a.shape
    nb = b.shape[0]
    if values is None:
        values = torch.empty(na, device=a.device, dtype=torch.float32)
    if indices is None:
        indices = torch.empty(na, device=a.device, dtype=torch.int32)
    ba = 32
    _match_kernel[(triton.cdiv(na, ba),)](a.contiguous(), b.contiguous(), values, indices, na, nb,
                                         D=d, BA=ba, BB=32, BD=min(64, max(16, triton.next_power_of_2(d))))
    return values, indices.long()
