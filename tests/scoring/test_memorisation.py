"""The memorisation test (distance to closest record) on the tiny track (256 public, 128
held-out: 64 holdout rows in the reference half, 64 oracle rows, 64 context rows; submissions
of 64 rows): public rows moved inside their plateaus are refused, fresh real samples accepted,
and real-vs-real resamples are refused at no more than the target rate."""

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy.stats import binom

from challenge.directions import ActivationStats
from challenge.neighbours import nearest
from challenge.scoring import memorisation as mem


def _public_rows(track, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(len(track.acts("public")), generator=g)[:n]


def _reflection(track, n: int) -> torch.Tensor:
    """Each public row moved away from its nearest other public row by their gap."""
    pub = track.acts("public")
    _, nn = nearest(pub, pub, exclude_self=True)
    return (pub + (pub - pub[nn]))[_public_rows(track, n)]


def _noisy(track, n: int, scale: float) -> torch.Tensor:
    """Public rows + N(0, Sigma) noise rescaled to ``scale`` of each row's norm."""
    from baselines.generators import moved_rows

    pub = track.acts("public")
    return moved_rows(
        pub, n, scale, torch.Generator().manual_seed(0), ActivationStats.fit(pub).chol
    )


def test_statistic_sign_convention(tiny_track):
    """``s = log(d_public / d_holdout)``: below 0 when the nearest real row is public, above 0
    when it is a holdout row; a real row itself (d = 0 up to cdist's rounding, <= 1e-5) has
    |s| > 10."""
    pub = tiny_track.acts("public")
    hold, _ = mem.holdout_rows(tiny_track)
    s_pub = mem.row_statistic(pub[:8], pub, hold)
    s_hold = mem.row_statistic(hold[:8], pub, hold)
    assert (s_pub < -10).all() and (s_hold > 10).all()
    # a point 10 % of the way from a public row to a holdout row: nearer the public one
    x = pub[3] + 0.1 * (hold[5] - pub[3])
    s = float(mem.row_statistic(x[None], pub, hold)[0])
    d_p = float((pub.double() - x.double()).norm(dim=1).min())
    d_h = float((hold.double() - x.double()).norm(dim=1).min())
    assert s == pytest.approx(math.log(d_p / d_h), rel=1e-9) and s < 0
    # moved rows sit below the null: the reflection's median is below its null median
    r = mem.memorisation_test(_reflection(tiny_track, 64), tiny_track)
    assert r.median < r.null_quantiles["q0.5"] and r.closer_to_public > r.closer_to_public_null


def test_relabelled_statistic_reproduces_the_observed_one(tiny_track):
    """The null's machinery (k nearest pooled rows, first row of each label) under the true
    labelling gives the statistic computed from ``challenge.neighbours.nearest``."""
    pub = tiny_track.acts("public")
    hold, _ = mem.holdout_rows(tiny_track)
    x = torch.cat([_reflection(tiny_track, 16), tiny_track.acts("context")[:16]])
    pooled = torch.cat([pub, hold])
    k = mem.neighbours_k(len(pub), len(hold))
    assert 0.8**k <= mem.MISS_RATE < 0.8 ** (k - 1)  # 20 % of the pooled rows are holdout
    dist, idx = mem.nearest_k(x, pooled, k)
    truth = torch.zeros(1, len(pooled), dtype=torch.bool)
    truth[0, len(pub) :] = True
    s = mem.labelled_statistic(dist, idx, truth)[0]
    torch.testing.assert_close(s, mem.row_statistic(x, pub, hold), rtol=1e-9, atol=1e-9)
    labels = mem.random_labellings(len(pooled), len(hold), 5, torch.Generator().manual_seed(0))
    assert (labels.sum(dim=1) == len(hold)).all()


@pytest.mark.parametrize("attack", ["reflection", "noisy5", "noisy10"])
def test_moved_public_rows_are_refused(tiny_track, attack):
    n = tiny_track.required_n
    x = {
        "reflection": lambda: _reflection(tiny_track, n),
        "noisy5": lambda: _noisy(tiny_track, n, 0.05),
        "noisy10": lambda: _noisy(tiny_track, n, 0.10),
    }[attack]()
    r = mem.memorisation_test(x, tiny_track)
    assert r.refused, r.message()
    assert r.ks > r.threshold and r.p_value <= mem.ALPHA
    assert r.closer_to_public == 1.0  # every moved row's nearest real row is public
    assert "refused" in r.message() and r.n == n == 64


@pytest.mark.parametrize("sample", ["oracle", "context", "oracle+context"])
def test_a_fresh_real_sample_is_accepted(tiny_track, sample):
    """Real rows the generator never saw and that are not the holdout: the oracle half of the
    held-out split (the ``heldout_real`` entry) and the context split."""
    oracle = tiny_track.acts("heldout")[tiny_track.oracle_rows()]
    ctx = tiny_track.acts("context")
    x = {"oracle": oracle, "context": ctx, "oracle+context": torch.cat([oracle, ctx])}[sample]
    r = mem.memorisation_test(x, tiny_track)
    assert not r.refused, r.message()
    assert r.p_value > 0.05 and r.ks < r.threshold
    # for real-like rows the permutation critical value is near the asymptotic one
    assert 0.6 < r.threshold / r.threshold_asymptotic < 1.4


def test_rows_sharing_their_nearest_real_rows_get_a_wider_null(tiny_track):
    """Isotropic rows lie far from every real row and share a few nearest ones ("hubs"): 97 %
    of them are nearer a public than a holdout row, far above the null's 80 %, without any
    memorisation. The permutation law sees that their rows are not independent (critical
    value > 2 x the asymptotic one) and accepts them."""
    from baselines.generators import Isotropic

    gen = Isotropic()
    gen.fit(tiny_track, None)
    r = mem.memorisation_test(gen.sample(64, seed=0), tiny_track)
    assert not r.refused, r.message()
    assert r.closer_to_public > 0.9 and r.threshold > 2 * r.threshold_asymptotic


def test_false_refusal_rate_on_real_resamples(tiny_track):
    """Real-vs-real calibration: 200 random splits of the tiny track's 448 real rows into
    256 public, 64 holdout and a fresh sample of 64; each resample is refused with chance at
    most alpha, independently, so the refusals are at most Binomial(200, alpha). Bound: its
    0.999 quantile (3 refusals at alpha 1e-3; expected 0.2). At alpha = 0.05 the count of
    p-values <= 0.05 must lie in the central 0.998 of Binomial(200, 0.05) ([2, 21]; exact
    Monte Carlo p-values, so the test is neither anti-conservative nor vacuous)."""
    real = torch.cat([tiny_track.acts(s) for s in ("public", "heldout", "context")])
    res = mem.real_resamples(real, 256, 64, 64, 200, n_relabel=999)
    refused = sum(r.refused for r in res)
    bound = mem.false_refusal_bound(200, mem.ALPHA)
    assert bound == 3
    assert refused <= bound
    p = np.array([r.p_value for r in res])
    lo, hi = binom.ppf(0.001, 200, 0.05), binom.ppf(0.999, 200, 0.05)
    assert lo <= (p <= 0.05).sum() <= hi, sorted(p)[:15]
    assert 0.4 < np.median(p) < 0.6


def test_result_is_typed_deterministic_and_names_its_holdout(tiny_track):
    x = _noisy(tiny_track, 64, 0.10)
    a = mem.memorisation_test(x, tiny_track, n_relabel=999)
    b = mem.memorisation_test(x, tiny_track, n_relabel=999)
    assert a == b
    d = json.loads(json.dumps(a.to_dict()))
    assert set(d["quantiles"]) == {"q0.05", "q0.25", "q0.5", "q0.75", "q0.95"}
    assert d["n_public"] == 256 and d["n_holdout"] == 64 and d["refused"] is True
    assert a.holdout == "reference half of the published held-out split"
    private = replace(tiny_track, meta={**tiny_track.meta, "test_split": {"source": "x"}})
    assert mem.holdout_rows(private)[1] == "reference half of the private test split"
    # too few relabellings to reach alpha: never refused
    c = mem.memorisation_test(x, tiny_track, n_relabel=99)
    assert not c.refused and c.threshold == math.inf


def test_bad_rows_are_refused_with_a_config_error(tiny_track):
    from challenge.errors import ConfigError

    with pytest.raises(ConfigError):
        mem.memorisation_test(torch.zeros(4, 3), tiny_track)
    x = tiny_track.acts("context")[:4].clone()
    x[0, 0] = float("nan")
    with pytest.raises(ConfigError):
        mem.memorisation_test(x, tiny_track)
