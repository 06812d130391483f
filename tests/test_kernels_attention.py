"""block_attention: Triton (interpreted on CPU in CI) and reference equal dense SDPA."""

import os

import pytest
import torch

from vidqa.kernels.block_attention import block_attention, combine_partials
from vidqa.kernels.block_attention.naive import gather_dense
from vidqa.kernels.quant import dequantize_kv, quantize_kv

TRITON = os.environ.get("TRITON_INTERPRET") == "1" or torch.cuda.is_available()
DEV = "cuda" if torch.cuda.is_available() else "cpu"


def _store(nb=5, hkv=1, t=63, d=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(nb, hkv, t, d, generator=g)
    v = torch.randn(nb, hkv, t, d, generator=g)
    return k.to(DEV), v.to(DEV)


def _dense_reference(q, k, v, table, lens, tk, tv):
    kk, vv = gather_dense(k, v, table, lens)
    if tk is not None:
        kk, vv = torch.cat([kk, tk.float()], 1), torch.cat([vv, tv.float()], 1)
    group = q.shape[0] // kk.shape[0]
    kk, vv = kk.repeat_interleave(group, 0), vv.repeat_interleave(group, 0)
    lq, lt = q.shape[1], (tk.shape[1] if tk is not None else 0)
    mask = torch.ones(lq, kk.shape[1], dtype=torch.bool, device=q.device)
    if lt:
        mask[:, -lt:] = torch.ones(lq, lt, dtype=torch.bool, device=q.device).tril(lt - lq)
    return torch.nn.functional.scaled_dot_product_attention(q.float()[None], kk[None], vv[None], attn_mask=mask)[0]


@pytest.mark.parametrize("hq,hkv,d,lq", [(1, 1, 64, 1), (7, 1, 64, 5), (4, 2, 128, 3)])
def test_reference_equals_sdpa(hq, hkv, d, lq):
    k, v = _store(hkv=hkv, d=d)
    q = torch.randn(hq, lq, d, device=DEV)
    table, lens = torch.tensor([3, 0, 4]), torch.tensor([63, 10, 63, 63, 40])
    tk, tv = torch.randn(hkv, lq, d, device=DEV), torch.randn(hkv, lq, d, device=DEV)
    o, lse = block_attention(q, k, v, table, lens, tk, tv, backend="naive")
    torch.testing.assert_close(o, _dense_reference(q, k, v, table, lens, tk, tv), atol=1e-4, rtol=1e-4)


def test_partials_combine_to_the_whole():
    k, v = _store()
    q = torch.randn(2, 3, 64, device=DEV)
    whole = block_attention(q, k, v, torch.tensor([0, 1, 2, 3]), backend="naive")
    a = block_attention(q, k, v, torch.tensor([0, 1]), backend="naive")
    b = block_attention(q, k, v, torch.tensor([2, 3]), backend="naive")
    o, lse = combine_partials([a[0], b[0]], [a[1], b[1]])
    torch.testing.assert_close(o, whole[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lse, whole[1], atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not TRITON, reason="needs CUDA or TRITON_INTERPRET=1")
@pytest.mark.parametrize("bits", [16, 8, 4])
@pytest.mark.parametrize("hq,hkv,d,lq,tail", [(1, 1, 64, 1, False), (7, 1, 64, 1, True), (4, 2, 128, 5, True)])
def test_triton_equals_reference_with_poisoned_output(bits, hq, hkv, d, lq, tail):
    k, v = _store(hkv=hkv, d=d)
    q = torch.randn(hq, lq, d, device=DEV)
    table, lens = torch.tensor([4, 1, 2]), torch.tensor([63, 17, 63, 5, 63])
    tk = torch.randn(hkv, lq, d, device=DEV) if tail else None
    tv = torch.randn(hkv, lq, d, device=DEV) if tail else None
    ks, vs = (k, v) if bits == 16 else (quantize_kv(k, bits, 32, backend="naive"), quantize_kv(v, bits, 32, backend="naive"))
    out = torch.full((hq, lq, d), float("nan"), device=DEV)
    lse = torch.full((hq, lq), float("nan"), device=DEV)
    block_attention(q, ks, vs, table, lens, tk, tv, backend="triton", out=out, lse=lse)
    ref_o, ref_lse = block_attention(q, ks, vs, table, lens, tk, tv, backend="naive")
    assert not out.isnan().any() and not lse.isnan().any()
    torch.testing.assert_close(out, ref_o, atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(lse, ref_lse, atol=2e-3, rtol=2e-3)
    if bits != 16:  # the kernel reads quantized bytes; the reference dequantizes first
        dense_k, dense_v = dequantize_kv(ks, backend="naive"), dequantize_kv(vs, backend="naive")
        torch.testing.assert_close(out, _dense_reference(q, dense_k, dense_v, table, lens, tk, tv), atol=2e-3, rtol=2e-3)


@pytest.mark.skipif(not TRITON, reason="needs CUDA or TRITON_INTERPRET=1")
@pytest.mark.parametrize("splits", [1, 2, 3, 7])
def test_split_k_partials_merge_to_the_reference(splits):
    from vidqa.kernels.block_attention.triton_impl import block_attention_triton

    k, v = _store(nb=6, hkv=2, d=64)
    q = torch.randn(4, 2, 64, device=DEV)
    table, lens = torch.tensor([5, 0, 3, 2]), torch.tensor([63, 8, 63, 20, 63, 1])
    tk, tv = torch.randn(2, 2, 64, device=DEV), torch.randn(2, 2, 64, device=DEV)
    o, lse = block_attention_triton(q, k, v, table, lens, tk, tv, 64 ** -0.5, splits=splits)
    ref_o, ref_lse = block_attention(q, k, v, table, lens, tk, tv, backend="naive")
    torch.testing.assert_close(o, ref_o, atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(lse, ref_lse, atol=2e-3, rtol=2e-3)


@pytest.mark.skipif(not TRITON, reason="needs CUDA or TRITON_INTERPRET=1")
@pytest.mark.parametrize("s,hq,lq,d", [(1, 1, 63, 64), (3, 1, 63, 64), (7, 28, 1, 128), (45, 2, 5, 128),
                                       (70, 3, 2, 64)])
def test_combine_kernel_equals_combine_partials(s, hq, lq, d):
    """Splits with lse = -inf are skipped even when their output is NaN; a row no split saw is 0 / -inf;
    out/lse are poisoned and strided."""
    from vidqa.kernels.block_attention.triton_impl import combine_triton

    g = torch.Generator().manual_seed(s * 1000 + d)
    part_o = torch.randn(s, hq, lq, d, generator=g).to(DEV)
    part_l = (3 * torch.randn(s, hq, lq, generator=g)).to(DEV)
    empty = torch.rand(s, hq, lq, generator=g).to(DEV) < 0.3
    empty[:, 0, 0] = True  # row (0, 0): no split saw a key
    if s > 1:
        empty[1:, -1, -1] = True  # last row: only split 0 did
        empty[0, -1, -1] = False
    part_l[empty] = float("-inf")
    ref_o, ref_l = combine_partials(list(part_o.masked_fill(empty[..., None], 0.0)), list(part_l))
    part_o[empty] = float("nan")
    out = torch.full((hq, lq, d + 3), float("nan"), device=DEV)[..., :d]
    lse = torch.full((lq, hq), float("nan"), device=DEV).t()
    o, l = combine_triton(part_o, part_l, out, lse)
    assert o.data_ptr() == out.data_ptr() and l.data_ptr() == lse.data_ptr()
    assert not o.isnan().any() and not l.isnan().any()
    assert (o[0, 0] == 0).all() and l[0, 0] == float("-inf")
    seen = ~empty.all(0)
    torch.testing.assert_close(o[seen], ref_o[seen], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(l[seen], ref_l[seen], atol=1e-5, rtol=1e-5)
    if s > 1:
        torch.testing.assert_close(o[-1, -1], part_o[0, -1, -1], atol=1e-6, rtol=1e-6)


@pytest.mark.skipif(not TRITON, reason="needs CUDA or TRITON_INTERPRET=1")
@pytest.mark.parametrize("bits", [16, 8, 4])
@pytest.mark.parametrize("splits", [1, 3])
def test_triton_without_lens_strided_q_and_empty_splits(bits, splits):
    """``block_lens=None`` (every block full, T not a multiple of the tile), a non-contiguous q, blocks
    of zero length making whole splits empty, and out/lse written in place (or copied when bf16)."""
    from vidqa.kernels.block_attention.triton_impl import block_attention_triton

    k, v = _store(nb=6, hkv=2, d=64)
    ks, vs = (k, v) if bits == 16 else (quantize_kv(k, bits, 32, backend="naive"), quantize_kv(v, bits, 32, backend="naive"))
    q = torch.randn(3, 4, 64, device=DEV).transpose(0, 1)  # [Hq=4, Lq=3, D], strided
    tk, tv = torch.randn(2, 3, 64, device=DEV), torch.randn(2, 3, 64, device=DEV)
    table = torch.tensor([5, 0, 3, 2, 1, 4])
    for lens in (None, torch.tensor([0, 0, 63, 20, 0, 0])):
        ref_o, ref_l = block_attention(q, ks, vs, table, lens, tk, tv, backend="naive")
        out = torch.full((4, 3, 64), float("nan"), device=DEV)
        lse = torch.full((4, 3), float("nan"), device=DEV)
        o, l = block_attention_triton(q, ks, vs, table, lens, tk, tv, 64 ** -0.5, splits=splits, out=out, lse=lse)
        assert o is out and l is lse
        torch.testing.assert_close(out, ref_o, atol=2e-3, rtol=2e-3)
        torch.testing.assert_close(lse, ref_l, atol=2e-3, rtol=2e-3)
    low = torch.full((4, 3, 64), float("nan"), device=DEV, dtype=torch.bfloat16)
    o, _ = block_attention_triton(q, ks, vs, table, None, tk, tv, 64 ** -0.5, splits=splits, out=low)
    assert o is low
    torch.testing.assert_close(o.float(), block_attention(q, ks, vs, table, None, tk, tv, backend="naive")[0],
                               atol=1e-2, rtol=1e-2)


@pytest.mark.skipif(not TRITON, reason="needs CUDA or TRITON_INTERPRET=1")
def test_triton_with_no_visible_key_gives_zero_and_minus_inf():
    k, v = _store(nb=3, hkv=1, d=64)
    q = torch.randn(2, 1, 64, device=DEV)
    o, lse = block_attention(q, k, v, torch.tensor([0, 2]), torch.tensor([0, 5, 0]), backend="triton")
    assert (o == 0).all() and (lse == float("-inf")).all()


@pytest.mark.skipif(not TRITON, reason="needs CUDA or TRITON_INTERPRET=1")
@pytest.mark.parametrize("bits", [16, 8, 4])
def test_triton_ignores_nan_padding_past_block_lens(bits):
    """The kernel reads whole blocks and masks the tokens past ``len_b`` afterwards: NaN or inf
    padding (data or scales) must not reach the output."""
    from vidqa.kernels.block_attention.triton_impl import block_attention_triton

    k, v = _store(nb=4, hkv=2, t=63, d=64, seed=3)
    lens = torch.tensor([63, 9, 0, 40])
    pad = (torch.arange(63)[None, :] >= lens[:, None]).to(DEV)  # [NB, T], where the store lives
    if bits == 16:
        ks, vs = k.masked_fill(pad[:, None, :, None], float("nan")), v.masked_fill(pad[:, None, :, None], float("inf"))
        clean_k, clean_v = k, v
    else:
        ks, vs = quantize_kv(k, bits, 32, backend="naive"), quantize_kv(v, bits, 32, backend="naive")
        clean_k, clean_v = dequantize_kv(ks, backend="naive"), dequantize_kv(vs, backend="naive")
        for x in (ks, vs):
            x.scale.masked_fill_(pad[:, None, :, None], float("nan"))
            if x.zero is not None:
                x.zero.masked_fill_(pad[:, None, :, None], float("inf"))
    q = torch.randn(4, 2, 64, device=DEV)
    tk, tv = torch.randn(2, 2, 64, device=DEV), torch.randn(2, 2, 64, device=DEV)
    table = torch.tensor([1, 3, 2, 0])
    for splits in (1, 2):
        o, lse = block_attention_triton(q, ks, vs, table, lens, tk, tv, 64 ** -0.5, splits=splits)
        ref_o, ref_l = block_attention(q, clean_k, clean_v, table, lens, tk, tv, backend="naive")
        assert not o.isnan().any()
        torch.testing.assert_close(o, ref_o, atol=2e-3, rtol=2e-3)
        torch.testing.assert_close(lse, ref_l, atol=2e-3, rtol=2e-3)



@pytest.mark.skipif(not TRITON, reason="needs CUDA or TRITON_INTERPRET=1")
@pytest.mark.parametrize("dequant", ["f16", "f32"])
@pytest.mark.parametrize("lq,tail", [(1, False), (5, True)])
def test_int8_with_bf16_queries_both_dequant_paths(dequant, lq, tail):
    """bf16 queries over int8 KV (what vidqa runs): the fp16 bit-trick path and the float32 path both
    equal the dequantized float32 reference; keys span the full int8 range (-128..127 after
    quantization) and blocks are partly padded with NaN past their lengths."""
    from vidqa.kernels.block_attention.triton_impl import block_attention_triton

    if DEV == "cpu" and (dequant == "f32" or tail):
        # The interpreter's bf16 products (the f32 path's and the bf16 tail's) are wrong: off by ~1e9
        # here, exact with float32 queries. On a GPU these run here and in every config of
        # `bench/kernels.py --sweep`.
        pytest.skip("the Triton interpreter multiplies bf16 tiles wrongly")
    k, v = _store(nb=4, hkv=2, d=64, seed=3)
    k[0, 0, 0] = -40.0  # one group whose absmax sets the scale; its -40 quantizes to -127
    ks, vs = quantize_kv(k, 8, 32, backend="naive"), quantize_kv(v, 8, 32, backend="naive")
    lens = torch.tensor([63, 20, 63, 7])
    for store in (ks, vs):  # past a block's length the data is garbage: must never matter
        store.data[1, :, 20:] = -128
        store.data[3, :, 7:] = 127
    g = torch.Generator().manual_seed(11)
    q = torch.randn(6, lq, 64, generator=g).to(DEV, torch.bfloat16)
    table = torch.tensor([3, 0, 1, 2])
    tk = torch.randn(2, lq, 64, generator=g).to(DEV, torch.bfloat16) if tail else None
    tv = torch.randn(2, lq, 64, generator=g).to(DEV, torch.bfloat16) if tail else None
    out = torch.full((6, lq, 64), float("nan"), device=DEV)
    o, lse = block_attention_triton(q, ks, vs, table, lens, tk, tv, 64 ** -0.5, splits=2, dequant=dequant, out=out)
    dense_k, dense_v = dequantize_kv(ks, backend="naive"), dequantize_kv(vs, backend="naive")
    ref = _dense_reference(q, dense_k, dense_v, table, lens, tk, tv)
    assert not o.isnan().any()
    # Low-precision products (fp16 at 2^-11 here, bf16 at 2^-9 on the f32 path) of logits up to ~5 (the
    # -40 outlier): over 40 random query draws the f16 path's worst error was 8.4e-3 + 2e-3 |ref|.
    torch.testing.assert_close(o, ref, atol=1e-2, rtol=1e-2)


def test_dequant_knob_is_checked():
    from vidqa.kernels.block_attention.triton_impl import block_attention_triton

    k, v = _store(nb=1)
    with pytest.raises(ValueError, match="dequant"):
        block_attention_triton(torch.randn(1, 1, 64), k, v, torch.tensor([0]), None, None, None, 0.125,
                               dequant="int")
