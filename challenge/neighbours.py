"""Nearest rows by Euclidean distance, in float64: the one implementation the copy check, the
validator's diagnostics and the scorer's P2 probe (the nearest public row) share."""

from __future__ import annotations

import math

import torch
from jaxtyping import Float, Int
from torch import Tensor


def nearest(
    x: Float[Tensor, "n d"],
    ref: Float[Tensor, "m d"],
    *,
    exclude_self: bool = False,
    chunk: int = 512,
) -> tuple[Float[Tensor, " n"], Int[Tensor, " n"]]:
    """Distance to, and index of, each row's nearest row of ``ref`` (``torch.cdist`` in float64,
    ``chunk`` rows at a time); with ``exclude_self`` (``x`` is ``ref``), the nearest *other* row."""
    ref = ref.double()
    dist, idx = [], []
    for i in range(0, len(x), chunk):
        d = torch.cdist(x[i : i + chunk].double(), ref)
        if exclude_self:
            rows = torch.arange(d.shape[0])
            d[rows, rows + i] = math.inf
        m = d.min(dim=1)
        dist.append(m.values)
        idx.append(m.indices)
    if not dist:
        return torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.int64)
    return torch.cat(dist), torch.cat(idx)
