"""rms_norm / rotary / swiglu kernels: Triton (interpreted on CPU in CI) equals the PyTorch reference,
and the reference equals transformers' own Qwen2.5-VL vision functions."""

import os

import pytest
import torch

from vidqa.kernels.rms_norm import add_rms_norm
from vidqa.kernels.rotary import rotary_qk
from vidqa.kernels.swiglu import silu_mul

TRITON = os.environ.get("TRITON_INTERPRET") == "1" or torch.cuda.is_available()
DEV = "cuda" if torch.cuda.is_available() else "cpu"
needs_triton = pytest.mark.skipif(not TRITON, reason="needs CUDA or TRITON_INTERPRET=1")
# Triton's CPU interpreter casts float32 to bfloat16 by truncation, the GPU rounds to nearest even:
# interpreted, a rounded bfloat16 result may be one unit in the last place away.
CAST_ULPS = 0 if DEV == "cuda" else 1


def _ulps(a: torch.Tensor, b: torch.Tensor) -> int:
    """Largest difference in units of the last place of ``b``'s dtype (0 = identical)."""
    eps = torch.finfo(b.dtype).eps
    scale = b.float().abs().clamp_min(torch.finfo(b.dtype).tiny)
    return int(((a.float() - b.float()).abs() / (scale * eps)).max().ceil()) if a.numel() else 0


def test_reference_equals_transformers_rms_norm():
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLRMSNorm

    norm = Qwen2_5_VLRMSNorm(48, eps=1e-6).to(torch.bfloat16)
    with torch.no_grad():
        norm.weight.normal_()
    x, d = torch.randn(2, 7, 48, dtype=torch.bfloat16), torch.randn(2, 7, 48, dtype=torch.bfloat16)
    h, y = add_rms_norm(x, d, norm.weight, norm.variance_epsilon, backend="naive")
    assert torch.equal(h, x + d)
    assert torch.equal(y, norm(x + d))
    h, y = add_rms_norm(x, None, norm.weight, 1e-6, backend="naive")
    assert h is x and torch.equal(y, norm(x))


def test_reference_equals_transformers_rotary():
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb_vision

    q, k = torch.randn(2, 9, 3, 16, dtype=torch.bfloat16).unbind(0)
    freqs = torch.randn(9, 8)
    emb = torch.cat((freqs, freqs), dim=-1)
    ref = apply_rotary_pos_emb_vision(q, k, emb.cos(), emb.sin())
    got = rotary_qk(q, k, emb.cos(), emb.sin(), backend="naive")
    assert all(torch.equal(a, b) for a, b in zip(got, ref))


def test_reference_equals_transformers_mlp_activation():
    from transformers.activations import ACT2FN

    g, u = torch.randn(5, 33, dtype=torch.bfloat16), torch.randn(5, 33, dtype=torch.bfloat16)
    assert torch.equal(silu_mul(g, u, backend="naive"), ACT2FN["silu"](g) * u)


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 5), (13, 48), (3, 4, 80)])
@pytest.mark.parametrize("with_delta", [True, False])
def test_rms_norm_triton_equals_reference(dtype, shape, with_delta):
    x = torch.randn(shape, dtype=dtype, device=DEV) * 3
    d = torch.randn(shape, dtype=dtype, device=DEV) if with_delta else None
    w = torch.randn(shape[-1], dtype=dtype, device=DEV)
    h_ref, y_ref = add_rms_norm(x, d, w, 1e-6, backend="naive")
    h, y = add_rms_norm(x, d, w, 1e-6, backend="triton")
    assert h.shape == y.shape == x.shape and y.dtype == y_ref.dtype
    assert _ulps(h, h_ref) <= (CAST_ULPS if dtype == torch.bfloat16 else 0)
    # float32 rsqrt and summation order may differ in the last bit before each cast
    assert _ulps(y, y_ref) <= (2 + 2 * CAST_ULPS if dtype == torch.bfloat16 else 64)


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("tokens,heads,dim", [(1, 1, 4), (11, 3, 80), (6, 16, 18)])
def test_rotary_triton_equals_reference_on_qkv_views(dtype, tokens, heads, dim):
    qkv = torch.randn(tokens, 3, heads, dim, dtype=dtype, device=DEV)
    q, k = qkv[:, 0], qkv[:, 1]  # strided views, as the vision attention slices its fused projection
    freqs = torch.randn(tokens, dim // 2, device=DEV) * 4
    emb = torch.cat((freqs, freqs), dim=-1)
    ref = rotary_qk(q, k, emb.cos(), emb.sin(), backend="naive")
    got = rotary_qk(q, k, emb.cos(), emb.sin(), backend="triton")
    for a, b in zip(got, ref):
        assert a.shape == b.shape and a.is_contiguous() and a.dtype == dtype
        torch.testing.assert_close(a, b, atol=1e-5 if dtype == torch.float32 else 1e-2, rtol=1e-2)
    # k is really rotated, not a copy of q
    assert not torch.allclose(got[0], got[1])


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rotary_triton_grouped_query_heads(dtype):
    """The language model's case: 7 query heads per key head (the 7B decoder has 28 and 4), separate
    projections, so q and k have different head counts and strides."""
    tokens, dim = 9, 32
    q = torch.randn(tokens, 28 * dim, dtype=dtype, device=DEV).view(tokens, 28, dim)
    k = torch.randn(tokens, 3, 4, dim, dtype=dtype, device=DEV)[:, 1]  # a strided view
    freqs = torch.randn(tokens, dim // 2, device=DEV) * 4
    emb = torch.cat((freqs, freqs), dim=-1)
    ref = rotary_qk(q, k, emb.cos(), emb.sin(), backend="naive")
    got = rotary_qk(q, k, emb.cos(), emb.sin(), backend="triton")
    assert got[0].shape == (tokens, 28, dim) and got[1].shape == (tokens, 4, dim)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, atol=1e-5 if dtype == torch.float32 else 1e-2, rtol=1e-2)


def test_rotary_rejects_mismatched_tokens_or_dims():
    with pytest.raises(ValueError, match="Hq, D"):
        rotary_qk(torch.randn(3, 2, 8), torch.randn(4, 2, 8), torch.randn(3, 8), torch.randn(3, 8))
    with pytest.raises(ValueError, match="Hq, D"):
        rotary_qk(torch.randn(3, 2, 8), torch.randn(3, 2, 6), torch.randn(3, 8), torch.randn(3, 8))


@needs_triton
def test_rotary_uses_both_halves_of_cos_and_sin():
    q = torch.randn(4, 2, 8, device=DEV)
    k = torch.randn(4, 2, 8, device=DEV)
    cos, sin = torch.randn(4, 8, device=DEV), torch.randn(4, 8, device=DEV)  # halves differ here
    ref = rotary_qk(q, k, cos, sin, backend="naive")
    got = rotary_qk(q, k, cos, sin, backend="triton")
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1,), (7, 33), (2, 2051)])
def test_silu_mul_triton_equals_reference(dtype, shape):
    g = torch.randn(shape, dtype=dtype, device=DEV) * 4
    u = torch.randn(shape, dtype=dtype, device=DEV)
    ref = silu_mul(g, u, backend="naive")
    got = silu_mul(g, u, backend="triton")
    assert got.shape == ref.shape and got.dtype == ref.dtype
    assert _ulps(got, ref) <= (1 + 2 * CAST_ULPS if dtype == torch.bfloat16 else 8)


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match="one shape"):
        silu_mul(torch.zeros(2, 3), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="weight"):
        add_rms_norm(torch.zeros(2, 4), None, torch.ones(5), 1e-6)
    with pytest.raises(ValueError, match="cos and sin"):
        rotary_qk(torch.zeros(3, 1, 4), torch.zeros(3, 1, 4), torch.zeros(3, 2), torch.zeros(3, 2))
