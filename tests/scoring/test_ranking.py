"""Paired ranks: neighbours whose paired bootstrap difference is not resolved share a rank."""

import numpy as np
import pytest

from challenge.scoring.ranking import paired_interval, rank


def test_resolved_and_tied_neighbours():
    g = np.random.default_rng(0)
    common = g.normal(0, 0.05, 1000)  # shared context noise: cancels in paired differences
    entries = {
        "a": (0.90, 0.90 + common + g.normal(0, 0.01, 1000)),
        "b": (0.89, 0.89 + common + g.normal(0, 0.01, 1000)),  # 0.01 below a, noise 0.014: tied
        "c": (0.50, 0.50 + common + g.normal(0, 0.01, 1000)),  # far below: resolved
    }
    r = rank(entries)
    assert [x.name for x in r] == ["a", "b", "c"]
    assert [x.rank for x in r] == [1, 1, 3]
    assert [x.tied_with_above for x in r] == [False, True, False]
    assert r[0].diff_ci is None and r[2].diff_ci[0] > 0
    assert r[2].diff_to_above == 0.89 - 0.50


def test_pairing_resolves_what_unpaired_intervals_cannot():
    """Two entries 0.03 apart with context noise 0.05: their own intervals overlap, the paired
    difference (which cancels the shared noise) does not contain 0."""
    g = np.random.default_rng(1)
    common = g.normal(0, 0.05, 2000)
    a, b = 0.80 + common + g.normal(0, 0.005, 2000), 0.77 + common + g.normal(0, 0.005, 2000)
    qa, qb = np.quantile(a, [0.025, 0.975]), np.quantile(b, [0.025, 0.975])
    assert qa[0] < qb[1]  # the marginal intervals overlap
    lo, hi = paired_interval(a, b)
    assert lo > 0
    assert [x.rank for x in rank({"a": (0.80, a), "b": (0.77, b)})] == [1, 2]


def test_ties_chain_and_order_is_by_score_then_name():
    same = np.zeros(10)  # identical draws: a difference of exactly 0, a tie
    r = rank({"z": (0.5, same), "y": (0.5, same), "x": (0.4, same - 0.1)})
    assert [(x.name, x.rank) for x in r] == [("y", 1), ("z", 1), ("x", 3)]


def test_unpaired_draws_are_refused():
    with pytest.raises(ValueError, match="unpaired"):
        paired_interval(np.zeros(10), np.zeros(11))
