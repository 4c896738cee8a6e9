"""Ranks that the scorer can resolve: paired bootstrap differences between entries.

Every entry of a board is scored in the same slots (contexts, reference rows, random
directions) with the same bootstrap indices (``scorer.bootstrap_slots``), so the difference of
two entries' bootstrap scores is a paired bootstrap of their difference. Entries are sorted by
score; an entry whose paired difference to the entry above has a 95 % interval containing 0 is
*tied* with it and shares its rank (ties chain down the table).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LEVEL = 0.95


@dataclass
class Ranked:
    """One entry's place: its rank (shared within a tie group) and the paired difference to the
    entry above (``None`` for the first)."""

    name: str
    score: float
    rank: int
    tied_with_above: bool
    diff_to_above: float | None
    diff_ci: tuple[float, float] | None


def paired_interval(a: np.ndarray, b: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of ``a - b`` over paired bootstrap draws."""
    if a.shape != b.shape:
        raise ValueError(f"unpaired bootstrap draws: shapes {a.shape} and {b.shape}")
    lo, hi = np.quantile(a - b, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def rank(entries: dict[str, tuple[float, np.ndarray]], level: float = LEVEL) -> list[Ranked]:
    """``{name: (score, bootstrap scores)}`` -> entries sorted by score (then name) with ranks
    that merge statistically unresolved neighbours."""
    order = sorted(entries, key=lambda k: (-entries[k][0], k))
    out: list[Ranked] = []
    for i, name in enumerate(order):
        score, boot = entries[name]
        if i == 0:
            out.append(Ranked(name, score, 1, False, None, None))
            continue
        above = out[-1]
        lo, hi = paired_interval(entries[above.name][1], boot, level)
        tied = lo <= 0.0 <= hi
        out.append(
            Ranked(
                name,
                score,
                above.rank if tied else i + 1,
                tied,
                above.score - score,
                (lo, hi),
            )
        )
    return out
