"""The studies' control standard (challenge/studies/controls.py): matching, permutation and
step-shuffle nulls, minimum detectable effects, critical values, and the synthetic-cliff
positive control. Pure numpy / scipy; every tolerance is derived in the test (Monte Carlo
standard errors, binomial bounds, lattice steps, the caliper)."""

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from challenge import metrics as M
from challenge.errors import ConfigError
from challenge.studies import controls as C

Z975 = stats.norm.isf(0.025)


def binomial_bounds(n: int, p: float, family_alpha: float = 1e-3) -> tuple[float, float]:
    """A two-sided ``family_alpha`` acceptance region for a Binomial(n, p) count."""
    return stats.binom.ppf(family_alpha / 2, n, p), stats.binom.isf(family_alpha / 2, n, p)


# --------------------------------------------------------------------------------- matching


def test_matching_improves_balance_within_the_caliper():
    g = np.random.default_rng(0)
    # the "random" group is further from the data and larger in norm: the planted imbalance
    real = np.column_stack([g.normal(42.9, 2, 300), g.normal(4.3, 1.5, 300), g.normal(10, 3, 300)])
    rand = np.column_stack([g.normal(45, 2, 400), g.normal(6, 1.5, 400), g.normal(12, 3, 400)])
    caliper = 0.2
    m = C.match_groups(real, rand, caliper=caliper, names=["norm", "nearest", "length"])
    before = np.array([b.smd_before for b in m.balance])
    after = np.array([b.smd_after for b in m.balance])
    assert (np.abs(before) > 0.5).all()  # planted: ~1 pooled sd apart
    # each pair is within the caliper on the standardised covariates, so every covariate's
    # matched mean difference is at most the caliper (in pooled-sd units)
    assert (m.distance <= caliper + 1e-12).all()
    assert (np.abs(after) <= caliper + 1e-12).all()
    assert (np.abs(after) < np.abs(before)).all()
    # without replacement, and the distances are the standardised ones
    assert len(set(m.a.tolist())) == len(set(m.b.tolist())) == m.n_pairs > 0
    # greedy closest-first leaves no unmatched a row with an unmatched b row inside the caliper
    free_a = np.setdiff1d(np.arange(len(real)), m.a)
    free_b = np.setdiff1d(np.arange(len(rand)), m.b)
    gap = np.linalg.norm((real[free_a, None] - rand[None, free_b]) / m.scale, axis=-1)
    assert (gap > caliper).all()
    z = np.linalg.norm((real[m.a] - rand[m.b]) / m.scale, axis=1)
    assert np.allclose(z, m.distance)
    assert "| norm |" in m.table()


def test_matching_is_nearest_first_and_respects_the_caliper():
    a = np.array([0.0, 10.0, 100.0])
    b = np.array([0.1, 9.8, 5.0, 0.05])
    m = C.match_groups(a, b, caliper=0.05)  # the pooled sd of these is ~35: caliper ~1.8 units
    s = m.scale[0]
    assert s == pytest.approx(np.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2))
    # 0 takes its nearest (0.05, not 0.1); 10 takes 9.8; 100 has no partner within 1.8 units
    assert m.a.tolist() == [0, 1] and m.b.tolist() == [3, 1]
    # greedy closest-first: a contested partner goes to the closer row
    m2 = C.match_groups(np.array([0.0, 0.3]), np.array([0.25, 5.0]), caliper=10.0)
    assert (m2.a.tolist(), m2.b.tolist()) == ([0, 1], [1, 0])  # 0.3 is closer to 0.25
    empty = C.match_groups(np.array([0.0, 0.1]), np.array([50.0, 50.1]), caliper=0.01)
    assert empty.n_pairs == 0 and np.isnan(empty.balance[0].smd_after)


@pytest.mark.parametrize(
    ("a", "b", "kw", "field"),
    [
        (np.zeros((2, 2, 2)), np.zeros((3, 2)), {}, "a_covariates"),
        (np.array([[0.0, np.nan]]), np.zeros((3, 2)), {}, "a_covariates"),
        (np.zeros((3, 2)), np.full((3, 2), np.inf), {}, "b_covariates"),
        (np.zeros((3, 2)), np.zeros((3, 3)), {}, "b_covariates"),
        (np.zeros((0, 2)), np.zeros((3, 2)), {}, "a_covariates"),
        (np.zeros((3, 2)), np.zeros((3, 2)), {"caliper": 0.0}, "caliper"),
        (np.zeros((3, 2)), np.zeros((3, 2)), {"caliper": float("nan")}, "caliper"),
        (np.zeros((3, 2)), np.zeros((3, 2)), {"names": ["x"]}, "names"),
    ],
)
def test_matching_refuses_bad_input(a, b, kw, field):
    with pytest.raises(ConfigError) as e:
        C.match_groups(a, b, **({"caliper": 0.2} | kw))
    assert e.value.field == field


# --------------------------------------------------------------------------- permutation nulls


def mean_difference(v, lab):
    return float(v[lab == 1].mean() - v[lab == 0].mean())


def test_permutation_p_is_uniform_under_a_true_null():
    # two-sided p = 2 min(k_greater, k_less) / 200 with 199 permutations, so under the null
    # P(p <= 0.05) = 2 * 5 / 200 = 0.05 and P(p <= 0.5) = 0.5 exactly
    n_seeds, n_perm = 200, 199
    labels = np.repeat([0, 1], 15)
    ps = []
    for s in range(n_seeds):
        v = np.random.default_rng(1000 + s).standard_normal(30)
        t = C.permutation_null(mean_difference, v, labels, n_perm=n_perm, seed=s)
        assert t.p_value >= t.p_min == 2 / (n_perm + 1)  # two-sided: twice the one-sided floor
        ps.append(t.p_value)
    ps = np.array(ps)
    for level in (0.05, 0.5):
        lo, hi = binomial_bounds(n_seeds, level)
        assert lo <= np.sum(ps <= level + 1e-12) <= hi


def test_permutation_p_is_small_under_a_planted_effect():
    g = np.random.default_rng(3)
    labels = np.repeat([0, 1], 20)
    v = g.standard_normal(40) + 1.5 * labels  # z ~ 1.5 / sqrt(2 / 20) = 4.7
    t = C.permutation_null(mean_difference, v, labels, n_perm=199, seed=0)
    assert t.p_value == pytest.approx(t.p_min) == 2 / 200  # no permutation reaches it
    assert t.observed == pytest.approx(mean_difference(v, labels))
    one = C.permutation_null(mean_difference, v, labels, n_perm=199, seed=0, alternative="greater")
    assert one.p_value == pytest.approx(one.p_min) == 1 / 200  # the +1 floor
    less = C.permutation_null(mean_difference, v, labels, n_perm=199, seed=0, alternative="less")
    assert less.p_value == 1.0


def test_permutation_stays_within_strata():
    strata = np.repeat([0, 1, 2], 4)
    labels = np.arange(12)
    seen = []

    def record(v, lab):
        seen.append(lab.copy())
        return 0.0

    C.permutation_null(record, np.zeros(12), labels, n_perm=50, seed=1, strata=strata)
    perms = np.array(seen[1:])
    assert (strata[perms] == strata[None, :]).all()  # every label stays in its stratum
    assert (perms != labels).any()  # and they do move


def test_p_value_plus_one_rule_and_sides():
    null = np.arange(1.0, 20.0)  # 19 draws: 1..19
    assert C.p_value(19.0, null, "greater") == pytest.approx(2 / 20)  # tie counts
    assert C.p_value(25.0, null, "greater") == pytest.approx(1 / 20)
    assert C.p_value(0.0, null, "less") == pytest.approx(1 / 20)
    assert C.p_value(25.0, null, "two-sided") == pytest.approx(2 / 20)
    assert C.p_value(10.0, null, "two-sided") == 1.0
    assert C.p_value(25.0, np.append(null, np.nan), "greater") == pytest.approx(2 / 21)
    with pytest.raises(ConfigError) as e:
        C.p_value(1.0, null, "both")
    assert e.value.field == "alternative"
    with pytest.raises(ConfigError) as e:
        C.permutation_null(mean_difference, np.zeros(4), np.zeros(3), n_perm=5)
    assert e.value.field == "labels"
    with pytest.raises(ConfigError) as e:
        C.permutation_null(mean_difference, np.zeros(4), np.zeros(4), n_perm=0)
    assert e.value.field == "n_perm"


# ------------------------------------------------------------------------- step-shuffle null


def test_step_shuffle_draws_the_empirical_profile_never_the_own_step():
    g = np.random.default_rng(5)
    steps = g.binomial(50, 0.5, size=48)  # a profile peaked mid-path, as both of study 4's are
    n_draws = 2000
    d = C.draw_other_steps(steps, n_draws, seed=1)
    assert d.shape == (n_draws, 48)
    # E[drawn] = mean_i mean_{j != i} s_j = mean(s); SE from the per-path variances
    var_i = np.array([np.delete(steps, i).var() for i in range(48)])
    se = math.sqrt(var_i.mean() / (n_draws * 48))
    assert abs(d.mean() - steps.mean()) <= 4 * se
    # the whole profile, not only its mean: frequencies of each step value
    vals, counts = np.unique(steps, return_counts=True)
    drawn = np.array([(d == v).mean() for v in vals])
    expect = counts / 48
    assert np.abs(drawn - expect).max() <= 4 * math.sqrt(0.25 / (n_draws * 48)) + 1 / 47
    distinct = np.arange(10)
    assert (C.draw_other_steps(distinct, 500, seed=2) != distinct[None, :]).all()


def test_step_shuffle_null_is_calibrated_where_the_uniform_step_is_not():
    """Two independent profiles that both peak mid-path (study 4's case): the step-shuffle null
    holds its level; a uniformly random step (the old "chance") rejects far too often."""
    n, S, w, n_seeds, n_draws = 48, 50, 2, 100, 99
    rej_shuffle = rej_uniform = 0
    for s in range(n_seeds):
        g = np.random.default_rng(2000 + s)
        busiest, ms = g.binomial(S, 0.5, n), g.binomial(S, 0.5, n)  # independent: no effect

        def stat(x, busiest=busiest):
            return C.coincidence(busiest, x, w)

        t = C.step_shuffle_null(stat, ms, n_draws=n_draws, seed=s)
        rej_shuffle += t.p_value <= 0.05
        uniform = np.array([stat(g.integers(0, S + 1, n)) for _ in range(n_draws)])
        rej_uniform += C.p_value(t.observed, uniform, "greater") <= 0.05
    lo, hi = binomial_bounds(n_seeds, 0.05)
    assert lo <= rej_shuffle <= hi
    assert rej_uniform > hi


def test_step_shuffle_null_mean_is_the_exact_chance():
    g = np.random.default_rng(7)
    a, b = g.binomial(40, 0.5, 30), g.binomial(40, 0.5, 30)
    t = C.step_shuffle_null(lambda x: C.coincidence(a, x, 2), b, n_draws=4000, seed=3)
    chance = C.coincidence_chance(a, b, 2)
    assert abs(t.null_mean - chance) <= 4 * t.null.std() / math.sqrt(t.n_draws)
    assert chance > 5 / 41  # the peaked profiles coincide more often than a uniform step would


# ------------------------------------------------------------------------------------- power


def test_mde_of_a_mean_difference_has_its_power():
    n, reps = 48, 20000
    d = C.mde_difference(1.0, n, 1.0, n)
    assert d == pytest.approx((Z975 + stats.norm.ppf(0.8)) * math.sqrt(2 / n))
    g = np.random.default_rng(11)
    a, b = g.standard_normal((reps, n)), g.standard_normal((reps, n)) + d
    z = (b.mean(1) - a.mean(1)) / np.sqrt(a.var(1, ddof=1) / n + b.var(1, ddof=1) / n)
    power = np.mean(np.abs(z) > Z975)
    assert abs(power - 0.8) <= 3 * math.sqrt(0.8 * 0.2 / reps) + 0.005  # + t vs z at 94 df
    # one-sample / paired, and read back from an interval of the same SE
    assert C.mde_mean(2.0, 16) == pytest.approx(C.mde_difference(2.0, 16, 0.0, 1))
    se = 2.0 / 4
    assert C.mde_from_interval(-Z975 * se, Z975 * se) == pytest.approx(C.mde_mean(2.0, 16))


def test_mde_of_two_proportions_has_its_power():
    n, p0, reps = 400, 0.3, 20000  # n large enough for the normal approximation
    d = C.mde_proportions(p0, n, n)
    g = np.random.default_rng(12)
    a, b = g.binomial(n, p0, reps) / n, g.binomial(n, p0 + d, reps) / n
    pb = (a + b) / 2
    z = np.abs(b - a) / np.sqrt(pb * (1 - pb) * 2 / n)
    assert abs(np.mean(z > Z975) - 0.8) <= 3 * math.sqrt(0.8 * 0.2 / reps)
    down = C.mde_proportions(p0, n, n, direction="down")
    assert C.proportions_power(p0, p0 - down, n, n) == pytest.approx(0.8)
    assert np.isnan(C.mde_proportions(0.5, 2, 2))  # 2 vs 2 cannot reach power 0.8


def test_critical_auc_holds_its_level_and_mde_auc_its_power():
    n, reps = 80, 20000
    g = np.random.default_rng(13)

    def aucs(shift):
        x = np.concatenate([g.standard_normal((reps, n)), g.standard_normal((reps, n)) + shift], 1)
        ranks = x.argsort(1).argsort(1) + 1
        return (ranks[:, n:].sum(1) - n * (n + 1) / 2) / (n * n)

    crit = C.critical_auc(n, n)
    size = np.mean(np.abs(aucs(0.0) - 0.5) >= crit - 0.5)
    assert abs(size - 0.05) <= 3 * math.sqrt(0.05 * 0.95 / reps) + 1 / (n * n)
    mde = C.mde_auc(n, n)
    power = np.mean(np.abs(aucs(math.sqrt(2) * stats.norm.ppf(mde)) - 0.5) >= crit - 0.5)
    assert power >= 0.8 - 3 * math.sqrt(0.8 * 0.2 / reps)  # the null sd errs large


# ---------------------------------------------------------------------------- critical values


def scipy_exact_ks_p(n: int, m: int, q: int) -> tuple[float, float]:
    """Samples whose KS statistic is q / n (n == m) and scipy's exact p-value for them."""
    x = np.arange(n, dtype=float)
    r = stats.ks_2samp(x, x[:m] + q - 0.5, method="exact")
    return float(r.statistic), float(r.pvalue)


def test_critical_ks_is_scipys_exact_and_near_the_asymptotic():
    n = 64
    crit = C.critical_ks(n, n)
    q = round(crit * n)
    d, p = scipy_exact_ks_p(n, n, q)
    d_below, p_below = scipy_exact_ks_p(n, n, q - 1)
    assert d == pytest.approx(crit) and p <= 0.05 < p_below  # the smallest rejecting lattice value
    assert C.ks_tail(n, n, d) == pytest.approx(p, rel=1e-9)
    assert C.ks_tail(n, n, d_below) == pytest.approx(p_below, rel=1e-9)
    # the issue's ~0.24 is the asymptotic value; the exact one lies within one lattice step
    asym = C.critical_ks(n, n, method="asymptotic")
    assert asym == pytest.approx(1.3581 * math.sqrt(2 / n), rel=1e-4)
    assert abs(crit - asym) <= 1 / n
    # unequal sizes against scipy's exact p-value on random samples
    g = np.random.default_rng(0)
    for _ in range(5):
        a, b = g.standard_normal(30), g.standard_normal(45) + 0.5
        r = stats.ks_2samp(a, b, method="exact")
        assert C.ks_tail(30, 45, r.statistic) == pytest.approx(r.pvalue, rel=1e-8, abs=1e-12)
    crit_u = C.critical_ks(30, 45)
    step = math.gcd(30, 45) / (30 * 45)
    assert C.ks_tail(30, 45, crit_u) <= 0.05 < C.ks_tail(30, 45, crit_u - step)


def test_critical_spearman_matches_enumeration_and_the_table():
    # the dynamic programme's null distribution is the full enumeration's
    n = 7
    s = [sum((i - p) ** 2 for i, p in enumerate(perm)) for perm in itertools.permutations(range(n))]
    brute = np.bincount(s, minlength=n * (n * n - 1) // 3 + 1)
    assert np.array_equal(C._spearman_counts(n), brute)
    # n = 8: |rho| moves in steps of 12 / (n (n^2 - 1)) = 0.024, so a one-step error would miss
    # the published 0.738 (Zar 1972, two-sided 0.05) by far more than its rounding (0.0005)
    crit8 = C.critical_spearman(8)
    assert abs(crit8 - 0.738) <= 0.0005
    step = 12 / (8 * 63)
    assert C.spearman_tail(8, crit8) <= 0.05 < C.spearman_tail(8, crit8 - step)
    assert C.spearman_tail(8, 1.0) == pytest.approx(2 / math.factorial(8))
    assert np.isnan(C.critical_spearman(4))  # 2 / 4! > 0.05: no rho is rare enough
    # large n: the t approximation, which approaches z / sqrt(n - 1)
    r = C.critical_spearman(400)
    assert r == pytest.approx(Z975 / math.sqrt(399), rel=2 / 400)
    with pytest.raises(ConfigError) as e:
        C.spearman_tail(20, 0.5)
    assert e.value.field == "n"


# --------------------------------------------------------------------------- positive control


def test_positive_control_the_jump_metric_finds_the_cliff_and_not_a_flat_set():
    n, S, w = 64, 41, 2
    g = np.random.default_rng(21)
    at = g.integers(10, 31, n)
    # noise 1e-4 per step: 2 % of the smooth curve's last increment (0.1 * 79 / 1600)
    cliff = C.synthetic_cliff_curves(n, S, at, height=0.2, noise=1e-4, seed=1)
    flat = C.synthetic_cliff_curves(n, S, at, height=0.0, noise=1e-4, seed=2)
    assert cliff.shape == (n, S) and (cliff[:, 0] == 0).all() and (cliff >= 0).all()
    ms_cliff = M.max_slope_step(cliff, normalise=True)
    ms_flat = M.max_slope_step(flat, normalise=True)
    assert (ms_cliff == at).all()  # located exactly
    # the metric fires where the step-shuffle null says nothing is ...
    fire = C.step_shuffle_null(lambda x: C.coincidence(ms_cliff, x, w), at, n_draws=199, seed=0)
    assert fire.observed == 1.0 and fire.p_value == pytest.approx(fire.p_min)
    assert fire.null_mean < 0.5
    # ... and not on the flat set, whose steepest step is its smooth end
    quiet = C.step_shuffle_null(lambda x: C.coincidence(ms_flat, x, w), at, n_draws=199, seed=0)
    assert quiet.observed == 0.0 and quiet.p_value == 1.0
    sharp_c, sharp_f = M.sharpness(cliff), M.sharpness(flat)
    assert sharp_f.max() < sharp_c.min()
    # a smooth quadratic's sharpness is 2 - 1 / (S - 1); the noise moves it by a few %
    assert np.abs(sharp_f - (2 - 1 / (S - 1))).max() < 0.1
    t = C.permutation_null(
        mean_difference,
        np.concatenate([sharp_f, sharp_c]),
        np.repeat([0, 1], n),
        n_perm=199,
        seed=0,
        alternative="greater",
    )
    assert t.p_value == pytest.approx(t.p_min)


def test_synthetic_cliff_refuses_bad_input():
    with pytest.raises(ConfigError) as e:
        C.synthetic_cliff_curves(4, 10, 10, 0.1, 0.0)
    assert e.value.field == "cliff_at"
    with pytest.raises(ConfigError) as e:
        C.synthetic_cliff_curves(4, 10, 3, -0.1, 0.0)
    assert e.value.field == "height"
    with pytest.raises(ConfigError) as e:
        C.synthetic_cliff_curves(4, 2, 1, 0.1, 0.0)
    assert e.value.field == "steps"
