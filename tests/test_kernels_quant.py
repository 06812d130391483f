"""quant kernels: Triton (interpreted on CPU in CI) equals the reference; error within the bound."""

import os

import pytest
import torch

from vidqa.kernels.quant import QuantizedKV, dequantize_kv, quantize_kv

TRITON = os.environ.get("TRITON_INTERPRET") == "1" or torch.cuda.is_available()


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("shape,group", [((3, 1, 63, 64), 32), ((2, 4, 5, 128), 64), ((7, 128), 128)])
def test_error_within_the_format_bound(bits, shape, group):
    x = torch.randn(shape) * 3
    q = quantize_kv(x, bits=bits, group_size=group, backend="naive")
    back = dequantize_kv(q, backend="naive")
    scale = q.scale.float().repeat_interleave(group, dim=-1)
    bound = scale / 2 + 1e-5
    if bits == 4:
        lo = x.reshape(*x.shape[:-1], -1, group).amin(-1).repeat_interleave(group, dim=-1)
        bound = bound + (lo - q.zero.float().repeat_interleave(group, dim=-1)).abs()
    assert ((back - x).abs() <= bound).all()
    assert q.nbytes < x.numel() * 2  # smaller than fp16


def test_int4_packing_round_trips_exact_levels():
    levels = torch.arange(16).float().repeat(2, 2)  # values already on the int4 grid: 0..15
    q = quantize_kv(levels, bits=4, group_size=32, backend="naive")
    assert q.data.dtype == torch.uint8 and q.data.shape == (2, 16)
    torch.testing.assert_close(dequantize_kv(q, backend="naive"), levels, atol=1e-2, rtol=0)


def test_state_dict_round_trip():
    q = quantize_kv(torch.randn(2, 3, 64), bits=4, group_size=32, backend="naive")
    back = QuantizedKV.from_state_dict(q.state_dict(), q.meta())
    assert torch.equal(dequantize_kv(back, backend="naive"), dequantize_kv(q, backend="naive"))


@pytest.mark.skipif(not TRITON, reason="needs CUDA or TRITON_INTERPRET=1")
@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("shape,group", [((1, 1, 63, 64), 32), ((2, 3, 5, 128), 64)])
def test_triton_equals_reference_with_poisoned_output(bits, shape, group):
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    x = (torch.randn(shape) * 2).to(dev)
    ref = quantize_kv(x, bits, group, backend="naive")
    tri = quantize_kv(x, bits, group, backend="triton")
    assert torch.equal(tri.data, ref.data) and torch.equal(tri.scale, ref.scale)
    if bits == 4:
        assert torch.equal(tri.zero, ref.zero)
    out = torch.full(shape, float("nan"), device=dev)
    dequantize_kv(tri, backend="triton", out=out)
    assert not out.isnan().any()
    torch.testing.assert_close(out, dequantize_kv(ref, backend="naive"), atol=1e-6, rtol=0)
