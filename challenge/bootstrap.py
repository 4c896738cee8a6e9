"""The percentile bootstrap: the one resampler every interval of the suite comes from.

``resample`` draws row indices (``[n_boot, n]``, one ``Generator.integers`` call, so a seed gives
the same draws wherever it is used), ``cluster_resample`` draws whole clusters, ``interval`` is
the percentile interval of the bootstrap values, and ``bootstrap`` puts them together for a
statistic of one or several paired arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from jaxtyping import Int

from challenge.errors import ConfigError

Seed = int | np.random.Generator


def generator(seed: Seed) -> np.random.Generator:
    """``seed`` itself when it is a ``Generator``, else ``numpy.random.default_rng(seed)``."""
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def resample(n: int, n_boot: int, seed: Seed) -> Int[np.ndarray, "b n"]:
    """``[n_boot, n]`` row indices drawn with replacement (``Generator.integers``)."""
    return generator(seed).integers(0, n, size=(n_boot, n))


def cluster_resample(groups: np.ndarray, n_boot: int, seed: Seed) -> list[np.ndarray]:
    """Per draw, the row indices of ``len(unique(groups))`` clusters drawn with replacement
    (every row of a drawn cluster, in row order within it)."""
    ids, inv = np.unique(np.asarray(groups), return_inverse=True)
    members = [np.nonzero(inv == i)[0] for i in range(len(ids))]
    picks = resample(len(ids), n_boot, seed)
    return [np.concatenate([members[i] for i in row]) for row in picks]


def interval(values, ci: float = 0.95) -> tuple[float, float]:
    """The ``ci`` percentile interval of the finite ``values`` (NaN, NaN when none is)."""
    if not 0 < ci < 1:
        raise ConfigError(f"ci must be in (0, 1), got {ci}", field="ci")
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if not v.size:
        return float("nan"), float("nan")
    lo, hi = np.quantile(v, [(1 - ci) / 2, (1 + ci) / 2])
    return float(lo), float(hi)


@dataclass
class Estimate:
    """A statistic with its percentile bootstrap interval."""

    value: float
    lo: float
    hi: float
    n: int
    """rows (or clusters' rows) it was computed on"""
    boots: np.ndarray
    """the bootstrap values (non-finite ones included)"""


def bootstrap(
    stat: Callable[..., float],
    *arrays: np.ndarray,
    n_boot: int = 1000,
    seed: Seed = 0,
    ci: float = 0.95,
    groups: np.ndarray | None = None,
) -> Estimate:
    """``stat(*arrays)`` and its ``ci`` percentile interval over ``n_boot`` resamples of the
    rows (the arrays are paired: one index draw resamples all of them), or of the clusters
    named by ``groups`` (every row of a drawn cluster together)."""
    arrays = tuple(np.asarray(a) for a in arrays)
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ConfigError(f"paired arrays of lengths {[len(a) for a in arrays]}", field="arrays")
    if n == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0, np.empty(0))
    draws = resample(n, n_boot, seed) if groups is None else cluster_resample(groups, n_boot, seed)
    boots = np.array([stat(*(a[i] for a in arrays)) for i in draws], dtype=np.float64)
    lo, hi = interval(boots, ci)
    return Estimate(float(stat(*arrays)), lo, hi, n, boots)
