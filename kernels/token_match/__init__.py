"""Best cosine match of every token of ``a`` in ``b`` (:func:`best_match`), used by ToMe merging."""

from __future__ import annotations

import torch

from vidqa.kernels.dispatch import use_triton
from vidqa.kernels.token_match.naive import best_match_naive


def best_match(a: torch.Tensor, b: torch.Tensor, backend: str = "auto"):
    """``(values [Na], indices [Na])``: for each row of ``a [Na, D]`` its most similar row of ``b [Nb, D]``."""
    if a.shape[0] == 0 or b.shape[0] == 0:
        return a.new_zeros(a.shape[0]).float(), torch.zeros(a.shape[0], dtype=torch.long, device=a.device)
    if use_triton(backend, a, b):
        from vidqa.kernels.token_match.triton_impl import best_match_triton

        return best_match_triton(a, b)
    values, indices = best_match_naive(a, b)
    return values, indices


__all__ = ["best_match"]
