"""block_score and token_match: Triton (interpreted in CI) equals the reference."""

import os

import pytest
import torch

from vidqa.kernels.block_score import block_scores
from vidqa.kernels.token_match import best_match

TRITON = os.environ.get("TRITON_INTERPRET") == "1" or torch.cuda.is_available()
DEV = "cuda" if torch.cuda.is_available() else "cpu"


def test_block_scores_reference_matches_the_definition():
    q, s = torch.randn(2, 4, 3, 16), torch.randn(5, 2, 2, 16)
    scores = block_scores(q, s, backend="naive")
    manual = torch.zeros(5)
    for b in range(5):
        for l in range(2):
            for h in range(4):
                manual[b] += (q[l, h].mean(0) @ s[b, l, h // 2]) / (2 * 4 * 16 ** 0.5)
    torch.testing.assert_close(scores, manual, atol=1e-5, rtol=1e-5)
    _, top = block_scores(q, s, topk=2, backend="naive")
    assert top.tolist() == torch.argsort(manual, descending=True)[:2].tolist()


@pytest.mark.skipif(not TRITON, reason="needs CUDA or TRITON_INTERPRET=1")
@pytest.mark.parametrize("nb,layers,hq,hkv,d", [(63, 2, 7, 1, 64), (5, 3, 4, 2, 128)])
def test_block_scores_triton_equals_reference(nb, layers, hq, hkv, d):
    q, s = torch.randn(layers, hq, 5, d, device=DEV), torch.randn(nb, layers, hkv, d, device=DEV)
    out = torch.full((nb,), float("nan"), device=DEV)
    block_scores(q, s, backend="triton", out=out)
    torch.testing.assert_close(out, block_scores(q, s, backend="naive"), atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(not TRITON, reason="needs CUDA or TRITON_INTERPRET=1")
@pytest.mark.parametrize("na,nb,d", [(63, 1, 64), (17, 70, 128), (1, 33, 48)])
def test_best_match_triton_equals_reference(na, nb, d):
    a, b = torch.randn(na, d, device=DEV), torch.randn(nb, d, device=DEV)
    b[min(3, nb - 1)] = a[0] * 2  # an exact match (cosine 1)
    v, i = best_match(a, b, backend="triton")
    rv, ri = best_match(a, b, backend="naive")
    torch.testing.assert_close(v, rv, atol=1e-5, rtol=1e-5)
    assert torch.equal(i.cpu(), ri.cpu())
