"""Reference best cosine match between two token sets (the matching step of ToMe, Bolya et al. 2023).

For ``a [Na, D]`` and ``b [Nb, D]``: ``values[i] = max_j cos(a_i, b_j)``, ``indices[i] = argmax_j``
(the first maximum on ties).
"""

from __future__ import annotations

import torch


def best_match_naive(a: torch.Tensor, b: torch.Tensor):
    sim = torch.nn.functional.normalize(a.float(), dim=-1) @ torch.nn.functional.normalize(b.float(), dim=-1).T
    return sim.max(dim=-1)
