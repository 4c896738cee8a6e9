"""The control standard of the studies (issue 32): matched groups, permutation nulls, power and
critical values, and a positive control.

Every study that contrasts a real condition with a control, or reports a null, states it with
these helpers, so that a reader can check the same four things everywhere:

- **matched controls** (:func:`match_groups`): the control group is matched to the real one on
  what is *not* the question (e.g. norm, distance to the nearest real row, path length), by
  greedy nearest-neighbour matching without replacement on standardised covariates inside a
  caliper, and the balance table (standardised mean difference per covariate, before and
  after) is reported beside the result;
- **permutation nulls** (:func:`permutation_null`, :func:`step_shuffle_null`): the null keeps
  everything but the pairing under test. For "does the event land on this path's step?" the
  null is *another path's step* (drawn from the other paths' event steps, so a profile that
  peaks mid-path on every path is part of the null, not of the effect), never a uniformly
  random step. P-values carry the +1 correction, ``(1 + #extreme) / (n_draws + 1)``, so no
  p-value is below ``1 / (n_draws + 1)`` (``2 / (n_draws + 1)`` two-sided);
- **power** (:func:`mde_mean`, :func:`mde_difference`, :func:`mde_proportions`,
  :func:`mde_from_interval`, :func:`mde_auc`) and **critical values** (:func:`critical_ks`,
  :func:`critical_spearman`, :func:`critical_auc`, with the exact tails :func:`ks_tail` and
  :func:`spearman_tail`): a null finding is stated with the smallest effect the design detects
  at alpha 0.05 (two-sided) with power 0.8, and a statistic with the value it must exceed;
- **positive controls** (:func:`synthetic_cliff_curves`): curves with a planted jump, on which
  a jump metric must fire where its null says nothing is.

Intervals come from :mod:`challenge.bootstrap` (the suite's one bootstrap); seeds are an ``int``
or a ``numpy.random.Generator`` (pass ``challenge.rng.seed_for(cfg.seed, "<stream>")`` from a
study). Bad input raises :class:`challenge.errors.ConfigError` naming the field.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
from jaxtyping import Float, Int
from scipy import optimize
from scipy import stats as _stats
from scipy.spatial.distance import cdist

from challenge.bootstrap import Seed, generator
from challenge.errors import ConfigError

Alternative = Literal["two-sided", "greater", "less"]
ALTERNATIVES = ("two-sided", "greater", "less")
ALPHA, POWER = 0.05, 0.8
SPEARMAN_EXACT_MAX_N = 12
"""largest n whose Spearman null is enumerated exactly (a 2^n-state dynamic programme)"""
KS_EXACT_MAX_CELLS = 25_000_000
"""largest n * m whose two-sample KS null is computed exactly (lattice-path counting)"""


# ---------------------------------------------------------------------------------------------
# input checks


def _matrix(x, field: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ConfigError(f"expected [n, covariates], got shape {a.shape}", field=field)
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ConfigError(f"empty covariate matrix of shape {a.shape}", field=field)
    if not np.isfinite(a).all():
        raise ConfigError("contains NaN or inf", field=field)
    return a


def _positive_int(value, field: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"must be an integer >= {minimum}, got {value!r}", field=field)
    return int(value)


def _probability(value, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ConfigError(f"must be in (0, 1), got {value!r}", field=field)
    return float(value)


def _finite(value, field: str, *, positive: bool = False, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ConfigError(f"must be a finite number, got {value!r}", field=field)
    v = float(value)
    if not math.isfinite(v) or (positive and v <= 0) or (minimum is not None and v < minimum):
        bound = "> 0" if positive else f">= {minimum}" if minimum is not None else "finite"
        raise ConfigError(f"must be {bound}, got {value!r}", field=field)
    return v


def _alternative(value) -> str:
    if value not in ALTERNATIVES:
        raise ConfigError(
            f"must be one of {list(ALTERNATIVES)}, got {value!r}", field="alternative"
        )
    return value


# ---------------------------------------------------------------------------------------------
# matching


@dataclass
class Balance:
    """One covariate's standardised mean difference (group a - group b, over the pooled sd of
    the unmatched groups) before and after matching."""

    covariate: str
    smd_before: float
    smd_after: float
    """NaN when no pair was matched"""


@dataclass
class Matched:
    """Matched pairs ``(a[i], b[i])`` of :func:`match_groups` and the balance they achieve."""

    a: Int[np.ndarray, " m"]
    """row indices into group a (increasing)"""
    b: Int[np.ndarray, " m"]
    """the matched rows of group b (each used at most once)"""
    distance: Float[np.ndarray, " m"]
    """Euclidean distance of each pair on the standardised covariates (<= ``caliper``)"""
    balance: list[Balance]
    caliper: float
    scale: Float[np.ndarray, " k"]
    """the pooled sd each covariate was divided by (1 where it is constant in both groups)"""
    n_a: int
    n_b: int

    @property
    def n_pairs(self) -> int:
        return int(len(self.a))

    def table(self) -> str:
        """The balance table as Markdown rows (for a study's report)."""
        rows = ["| covariate | SMD before | SMD after |", "|---|---|---|"]
        rows += [
            f"| {b.covariate} | {b.smd_before:+.3f} | {b.smd_after:+.3f} |" for b in self.balance
        ]
        rows.append(
            f"| pairs | {self.n_pairs} of {self.n_a} / {self.n_b} | caliper {self.caliper} |"
        )
        return "\n".join(rows)


def pooled_scale(
    a: Float[np.ndarray, "n_a k"], b: Float[np.ndarray, "n_b k"]
) -> Float[np.ndarray, " k"]:
    """``sqrt((var_a + var_b) / 2)`` per covariate (ddof 1 where a group has >= 2 rows), 1 where
    that is 0 (a covariate constant in both groups carries no imbalance)."""
    a, b = _matrix(a, "a_covariates"), _matrix(b, "b_covariates")
    var = [x.var(0, ddof=1) if len(x) > 1 else np.zeros(x.shape[1]) for x in (a, b)]
    s = np.sqrt((var[0] + var[1]) / 2)
    return np.where(s > 0, s, 1.0)


def standardised_mean_difference(
    a: Float[np.ndarray, "n_a k"], b: Float[np.ndarray, "n_b k"], scale=None
) -> Float[np.ndarray, " k"]:
    """``(mean_a - mean_b) / scale`` per covariate (``scale``: :func:`pooled_scale` of a and b
    when not given). |SMD| < 0.1 is the usual reading of "balanced"."""
    a, b = _matrix(a, "a_covariates"), _matrix(b, "b_covariates")
    s = pooled_scale(a, b) if scale is None else np.asarray(scale, dtype=np.float64)
    return (a.mean(0) - b.mean(0)) / s


def match_groups(
    a_covariates: Float[np.ndarray, "n_a k"],
    b_covariates: Float[np.ndarray, "n_b k"],
    *,
    caliper: float,
    names: Sequence[str] | None = None,
) -> Matched:
    """Nearest-neighbour matching without replacement of group a to group b.

    Covariates (e.g. norm, distance to the nearest real row, path length; a 1-D array is one
    covariate) are divided by their pooled sd (:func:`pooled_scale` of the unmatched groups);
    pairs are then taken greedily closest first over all (a, b) pairs whose Euclidean distance
    is at most ``caliper`` (in pooled-sd units), each row used at most once. Rows with no
    partner inside the caliper stay unmatched: the matched subsets are what a study compares.
    Since each pair is within ``caliper``, every covariate's |SMD after| is at most ``caliper``.
    """
    a, b = _matrix(a_covariates, "a_covariates"), _matrix(b_covariates, "b_covariates")
    if a.shape[1] != b.shape[1]:
        raise ConfigError(
            f"a has {a.shape[1]} covariates, b has {b.shape[1]}", field="b_covariates"
        )
    caliper = _finite(caliper, "caliper", positive=True)
    k = a.shape[1]
    names = [f"x{i}" for i in range(k)] if names is None else [str(n) for n in names]
    if len(names) != k:
        raise ConfigError(f"{len(names)} names for {k} covariates", field="names")
    scale = pooled_scale(a, b)
    dist = cdist(a / scale, b / scale)
    ia, ib = np.nonzero(dist <= caliper)
    order = np.lexsort((ib, ia, dist[ia, ib]))  # closest first, ties by index
    used_a, used_b = np.zeros(len(a), bool), np.zeros(len(b), bool)
    pairs = []
    for i, j in zip(ia[order], ib[order], strict=True):
        if not used_a[i] and not used_b[j]:
            used_a[i] = used_b[j] = True
            pairs.append((i, j))
            if len(pairs) == min(len(a), len(b)):
                break
    pairs.sort()
    pa = np.array([p[0] for p in pairs], dtype=np.int64)
    pb = np.array([p[1] for p in pairs], dtype=np.int64)
    before = standardised_mean_difference(a, b, scale)
    after = standardised_mean_difference(a[pa], b[pb], scale) if len(pa) else np.full(k, np.nan)
    return Matched(
        a=pa,
        b=pb,
        distance=dist[pa, pb],
        balance=[
            Balance(n, float(x), float(y)) for n, x, y in zip(names, before, after, strict=True)
        ],
        caliper=caliper,
        scale=scale,
        n_a=len(a),
        n_b=len(b),
    )


# ---------------------------------------------------------------------------------------------
# permutation nulls


@dataclass
class NullTest:
    """An observed statistic against draws from its null."""

    observed: float
    null: Float[np.ndarray, " n_draws"]
    p_value: float
    """``(1 + #draws at least as extreme) / (n_draws + 1)`` (two-sided: twice the smaller
    one-sided value, at most 1); never below :attr:`p_min`"""
    alternative: str

    @property
    def n_draws(self) -> int:
        return int(len(self.null))

    @property
    def p_min(self) -> float:
        """The smallest p-value these draws allow: ``1 / (n_draws + 1)``, twice that for a
        two-sided test."""
        return (2.0 if self.alternative == "two-sided" else 1.0) / (len(self.null) + 1)

    @property
    def null_mean(self) -> float:
        """The null's mean (e.g. the chance rate of a coincidence statistic)."""
        return float(np.mean(self.null))


def p_value(observed: float, null, alternative: Alternative = "two-sided") -> float:
    """Monte Carlo p-value with the +1 correction. Draws within a relative 1e-12 of the
    observed value count as ties (as extreme); non-finite draws count as extreme too, which
    can only make the p-value larger."""
    alternative = _alternative(alternative)
    obs = _finite(observed, "observed")
    d = np.asarray(null, dtype=np.float64).ravel()
    if d.size == 0:
        raise ConfigError("no null draws", field="null")
    tol = 1e-12 * max(1.0, abs(obs))
    bad = ~np.isfinite(d)
    ge = (1 + np.sum((d >= obs - tol) | bad)) / (d.size + 1)
    le = (1 + np.sum((d <= obs + tol) | bad)) / (d.size + 1)
    if alternative == "greater":
        return float(ge)
    if alternative == "less":
        return float(le)
    return float(min(1.0, 2 * min(ge, le)))


def _permutation(n: int, strata: np.ndarray | None, g: np.random.Generator) -> np.ndarray:
    if strata is None:
        return g.permutation(n)
    perm = np.arange(n)
    for s in np.unique(strata):
        idx = np.nonzero(strata == s)[0]
        perm[idx] = idx[g.permutation(len(idx))]
    return perm


def permutation_null(
    stat_fn: Callable[[np.ndarray, np.ndarray], float],
    values,
    labels,
    *,
    n_perm: int = 999,
    seed: Seed = 0,
    alternative: Alternative = "two-sided",
    strata=None,
) -> NullTest:
    """``stat_fn(values, labels)`` against ``stat_fn(values, labels[perm])`` over ``n_perm``
    permutations of the rows of ``labels`` (within ``strata`` when given: rows are only
    exchanged with rows of the same stratum, e.g. the same context prompt).

    ``labels`` may be group labels (a two-sample test: the null is "the group does not
    matter") or a per-row quantity paired with ``values`` (e.g. each path's max-slope step
    beside its busiest-crossing step: the null is "another path's step"). Rows are axis 0 of
    both arrays.
    """
    values, labels = np.asarray(values), np.asarray(labels)
    n = len(values)
    if n < 2 or len(labels) != n:
        raise ConfigError(
            f"values and labels need the same >= 2 rows, got {n} and {len(labels)}", field="labels"
        )
    n_perm = _positive_int(n_perm, "n_perm")
    alternative = _alternative(alternative)
    if strata is not None:
        strata = np.asarray(strata)
        if strata.shape != (n,):
            raise ConfigError(f"strata must have shape ({n},), got {strata.shape}", field="strata")
    g = generator(seed)
    observed = float(stat_fn(values, labels))
    null = np.array(
        [stat_fn(values, labels[_permutation(n, strata, g)]) for _ in range(n_perm)],
        dtype=np.float64,
    )
    return NullTest(observed, null, p_value(observed, null, alternative), alternative)


def _steps(steps, field: str, minimum: int = 1) -> np.ndarray:
    s = np.asarray(steps)
    if s.ndim != 1 or len(s) < minimum:
        raise ConfigError(f"expected [n_paths >= {minimum}], got shape {s.shape}", field=field)
    if not np.issubdtype(s.dtype, np.integer):
        if not np.isfinite(s.astype(np.float64)).all() or (s != np.round(s)).any():
            raise ConfigError("steps must be integers", field=field)
        s = s.astype(np.int64)
    return s.astype(np.int64)


def draw_other_steps(
    steps: Int[np.ndarray, " n"], n_draws: int, seed: Seed = 0
) -> Int[np.ndarray, "n_draws n"]:
    """Per draw and path ``i``, the step of a path ``j != i`` chosen uniformly: a sample of the
    paths' empirical step profile that never returns a path's own step (it is the event under
    test)."""
    s = _steps(steps, "steps", minimum=2)
    n_draws = _positive_int(n_draws, "n_draws")
    n = len(s)
    j = generator(seed).integers(0, n - 1, size=(n_draws, n))
    j += j >= np.arange(n)[None, :]  # skip the path itself
    return s[j]


def step_shuffle_null(
    stat_fn: Callable[[np.ndarray], float],
    steps,
    *,
    n_draws: int = 999,
    seed: Seed = 0,
    alternative: Alternative = "greater",
) -> NullTest:
    """Which step of a path an event lands on, against another path's step.

    ``steps [n_paths]`` are the paths' observed steps (e.g. the KL max-slope step);
    ``stat_fn(steps)`` is the statistic given one step per path (e.g. the fraction of paths
    whose busiest-crossing step lies within 2 steps of it: :func:`coincidence`). The null
    replaces each path's step by the step of another path (:func:`draw_other_steps`), so it
    keeps the empirical profile (a mid-path peak shared by all paths is not counted as an
    effect), where a uniformly random step would not. ``alternative="greater"``: the event
    coincides more often than with other paths' steps.
    """
    s = _steps(steps, "steps", minimum=2)
    alternative = _alternative(alternative)
    draws = draw_other_steps(s, n_draws, seed)
    observed = float(stat_fn(s))
    null = np.array([stat_fn(d) for d in draws], dtype=np.float64)
    return NullTest(observed, null, p_value(observed, null, alternative), alternative)


def coincidence(
    a_steps: Int[np.ndarray, " n"], b_steps: Int[np.ndarray, " n"], window: int
) -> float:
    """Fraction of paths with ``|a_steps - b_steps| <= window``."""
    a, b = _steps(a_steps, "a_steps"), _steps(b_steps, "b_steps")
    if a.shape != b.shape:
        raise ConfigError(f"shapes {a.shape} and {b.shape} differ", field="b_steps")
    window = _positive_int(window, "window", minimum=0)
    return float(np.mean(np.abs(a - b) <= window))


def coincidence_chance(
    a_steps: Int[np.ndarray, " n"], b_steps: Int[np.ndarray, " n"], window: int
) -> float:
    """The exact mean of :func:`coincidence` under the step-shuffle null (each path's
    ``b_steps`` replaced by another path's): ``mean_i mean_{j != i} [|a_i - b_j| <= window]``."""
    a, b = _steps(a_steps, "a_steps", 2), _steps(b_steps, "b_steps", 2)
    if a.shape != b.shape:
        raise ConfigError(f"shapes {a.shape} and {b.shape} differ", field="b_steps")
    window = _positive_int(window, "window", minimum=0)
    hit = np.abs(a[:, None] - b[None, :]) <= window
    np.fill_diagonal(hit, False)
    return float(hit.sum() / (len(a) * (len(a) - 1)))


# ---------------------------------------------------------------------------------------------
# power: minimum detectable effects (normal approximation)


def _z(alpha: float, power: float, two_sided: bool) -> float:
    alpha, power = _probability(alpha, "alpha"), _probability(power, "power")
    za = _stats.norm.isf(alpha / 2 if two_sided else alpha)
    return float(za + _stats.norm.ppf(power))


def mde_mean(
    sd: float, n: int, *, alpha: float = ALPHA, power: float = POWER, two_sided: bool = True
) -> float:
    """Smallest mean (one sample, or the mean of paired differences with sd ``sd``) a z-test at
    ``alpha`` detects with ``power``: ``(z_{1-alpha/2} + z_power) sd / sqrt(n)``."""
    sd = _finite(sd, "sd", minimum=0)
    n = _positive_int(n, "n")
    return _z(alpha, power, two_sided) * sd / math.sqrt(n)


def mde_difference(
    sd_a: float,
    n_a: int,
    sd_b: float,
    n_b: int,
    *,
    alpha: float = ALPHA,
    power: float = POWER,
    two_sided: bool = True,
) -> float:
    """Smallest difference of two independent means detected by a two-sample z-test:
    ``(z_{1-alpha/2} + z_power) sqrt(sd_a^2 / n_a + sd_b^2 / n_b)``."""
    sd_a, sd_b = _finite(sd_a, "sd_a", minimum=0), _finite(sd_b, "sd_b", minimum=0)
    n_a, n_b = _positive_int(n_a, "n_a"), _positive_int(n_b, "n_b")
    return _z(alpha, power, two_sided) * math.sqrt(sd_a**2 / n_a + sd_b**2 / n_b)


def proportions_power(
    p_a: float, p_b: float, n_a: int, n_b: int, *, alpha: float = ALPHA, two_sided: bool = True
) -> float:
    """Power of the pooled two-proportion z-test of ``p_b`` against ``p_a`` (normal
    approximation; the far tail of a two-sided test is ignored)."""
    p_a, p_b = (_finite(p, f, minimum=0) for p, f in ((p_a, "p_a"), (p_b, "p_b")))
    if p_a > 1 or p_b > 1:
        raise ConfigError(f"proportions must be in [0, 1], got {p_a}, {p_b}", field="p_b")
    n_a, n_b = _positive_int(n_a, "n_a"), _positive_int(n_b, "n_b")
    alpha = _probability(alpha, "alpha")
    za = _stats.norm.isf(alpha / 2 if two_sided else alpha)
    pbar = (n_a * p_a + n_b * p_b) / (n_a + n_b)
    se0 = math.sqrt(pbar * (1 - pbar) * (1 / n_a + 1 / n_b))
    se1 = math.sqrt(p_a * (1 - p_a) / n_a + p_b * (1 - p_b) / n_b)
    if se1 == 0:
        return float(abs(p_b - p_a) > za * se0)
    return float(_stats.norm.cdf((abs(p_b - p_a) - za * se0) / se1))


def mde_proportions(
    p0: float,
    n_a: int,
    n_b: int,
    *,
    alpha: float = ALPHA,
    power: float = POWER,
    two_sided: bool = True,
    direction: Literal["up", "down"] = "up",
) -> float:
    """Smallest ``|p1 - p0|`` (``p1`` above ``p0`` for ``direction="up"``, below for
    ``"down"``) that the pooled two-proportion z-test on ``n_a`` vs ``n_b`` detects with
    ``power`` (:func:`proportions_power`); NaN when even ``p1 = 1`` (or 0) is not enough."""
    p0 = _finite(p0, "p0", minimum=0)
    if p0 > 1:
        raise ConfigError(f"must be in [0, 1], got {p0}", field="p0")
    if direction not in ("up", "down"):
        raise ConfigError(f"must be 'up' or 'down', got {direction!r}", field="direction")
    power = _probability(power, "power")
    sign, room = (1.0, 1.0 - p0) if direction == "up" else (-1.0, p0)

    def gap(d: float) -> float:
        return (
            proportions_power(p0, p0 + sign * d, n_a, n_b, alpha=alpha, two_sided=two_sided) - power
        )

    if room <= 0 or gap(room) < 0:
        return float("nan")
    return float(optimize.brentq(gap, 1e-12, room, xtol=1e-10))


def mde_from_interval(
    lo: float, hi: float, *, ci: float = 0.95, alpha: float = ALPHA, power: float = POWER
) -> float:
    """Minimum detectable effect implied by a reported ``ci`` interval of an estimate (normal
    approximation): ``SE = (hi - lo) / (2 z_{(1+ci)/2})``, MDE ``= (z_{1-alpha/2} + z_power) SE``.
    For a percentile bootstrap interval this reads its half-width as 1.96 SE."""
    lo, hi = _finite(lo, "lo"), _finite(hi, "hi")
    if hi < lo:
        raise ConfigError(f"hi {hi} < lo {lo}", field="hi")
    ci = _probability(ci, "ci")
    se = (hi - lo) / (2 * _stats.norm.isf((1 - ci) / 2))
    return _z(alpha, power, True) * se


def _auc_sd0(n_a: int, n_b: int) -> float:
    n_a, n_b = _positive_int(n_a, "n_a"), _positive_int(n_b, "n_b")
    return math.sqrt((n_a + n_b + 1) / (12 * n_a * n_b))


def critical_auc(n_a: int, n_b: int, alpha: float = ALPHA) -> float:
    """The AUC (P(b > a), ties half) above which (or below one minus which) a two-sided
    Mann-Whitney test on ``n_a`` vs ``n_b`` rejects at ``alpha``: ``0.5 + z_{1-alpha/2}
    sd_0`` with the null sd ``sqrt((n_a + n_b + 1) / (12 n_a n_b))`` (normal approximation, no
    ties)."""
    alpha = _probability(alpha, "alpha")
    return 0.5 + float(_stats.norm.isf(alpha / 2)) * _auc_sd0(n_a, n_b)


def mde_auc(n_a: int, n_b: int, *, alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest AUC a two-sided Mann-Whitney test detects with ``power``, with the null's sd
    throughout (``0.5 + (z_{1-alpha/2} + z_power) sd_0``). The AUC's sd shrinks away from 0.5,
    so this errs large (conservative)."""
    return 0.5 + _z(alpha, power, True) * _auc_sd0(n_a, n_b)


# ---------------------------------------------------------------------------------------------
# critical values: two-sample KS and Spearman


def _ks_inside(n: int, m: int, k: int) -> float:
    """P(every point (i, j) of a uniformly random monotone lattice path from (0, 0) to (n, m)
    has ``|i m - j n| < k``): the probability that ``D_{n,m} < k / (n m)`` for continuous data.
    Rows of the path counts are cumulative sums over the band, rescaled per row (log kept)."""
    j = np.arange(m + 1, dtype=np.int64)
    c = (j * n < k).astype(np.float64)  # row 0: j n grows with j, so the band is a prefix
    log_scale = 0.0
    for i in range(1, n + 1):
        ok = np.abs(i * m - j * n) < k
        if not ok.any():
            return 0.0
        lo, hi = int(np.argmax(ok)), int(len(ok) - np.argmax(ok[::-1]))
        row = np.zeros(m + 1)
        row[lo:hi] = np.cumsum(c[lo:hi])
        top = row.max()
        if top == 0:
            return 0.0
        c = row / top
        log_scale += math.log(top)
    if c[m] == 0:
        return 0.0
    log_paths = math.lgamma(n + m + 1) - math.lgamma(n + 1) - math.lgamma(m + 1)
    return float(min(1.0, math.exp(log_scale + math.log(c[m]) - log_paths)))


def ks_tail(n: int, m: int, d: float) -> float:
    """Exact ``P(D_{n,m} >= d)`` of the two-sample KS statistic under the null (continuous
    data, no ties; the distribution ``scipy.stats.ks_2samp(method="exact")`` uses)."""
    n, m = _positive_int(n, "n"), _positive_int(m, "m")
    d = _finite(d, "d", minimum=0)
    if n * m > KS_EXACT_MAX_CELLS:
        raise ConfigError(f"n * m = {n * m} > {KS_EXACT_MAX_CELLS}: use the asymptotic", field="n")
    k = math.ceil(d * n * m - 1e-9)
    if k <= 0:
        return 1.0
    if k > n * m:
        return 0.0
    return 1.0 - _ks_inside(n, m, k)


def critical_ks(
    n: int, m: int, alpha: float = ALPHA, method: Literal["auto", "exact", "asymptotic"] = "auto"
) -> float:
    """The two-sample KS statistic a test of ``n`` vs ``m`` needs to reject at ``alpha``.

    ``exact``: the smallest attainable ``D`` (a multiple of ``gcd(n, m) / (n m)``) with
    ``P(D_{n,m} >= D) <= alpha`` (:func:`ks_tail`; NaN when no ``D`` is that rare);
    ``asymptotic``: ``sqrt(-ln(alpha / 2) / 2) sqrt((n + m) / (n m))`` (1.358 sqrt(...) at
    0.05); ``auto``: exact while ``n m <= KS_EXACT_MAX_CELLS``.
    """
    n, m = _positive_int(n, "n"), _positive_int(m, "m")
    alpha = _probability(alpha, "alpha")
    if method not in ("auto", "exact", "asymptotic"):
        raise ConfigError(f"unknown method {method!r}", field="method")
    if method == "asymptotic" or (method == "auto" and n * m > KS_EXACT_MAX_CELLS):
        return math.sqrt(-math.log(alpha / 2) / 2) * math.sqrt((n + m) / (n * m))
    g = math.gcd(n, m)
    lo, hi = 1, n * m // g  # candidate D = q g / (n m), q in lo..hi
    if 1.0 - _ks_inside(n, m, hi * g) > alpha:
        return float("nan")
    while lo < hi:
        mid = (lo + hi) // 2
        if 1.0 - _ks_inside(n, m, mid * g) <= alpha:
            hi = mid
        else:
            lo = mid + 1
    return lo * g / (n * m)


@lru_cache(maxsize=16)
def _spearman_counts(n: int) -> np.ndarray:
    """Number of permutations of ``n`` ranks with each value of ``S = sum (i - pi_i)^2``
    (index S; only even S occur), by a dynamic programme over the set of ranks used."""
    s_max = n * (n * n - 1) // 3
    dist = np.zeros((1 << n, s_max + 1))
    dist[0, 0] = 1.0
    for mask in range(1 << n):
        row = dist[mask]
        if not row.any():
            continue
        i = mask.bit_count()
        if i == n:
            continue
        for r in range(n):
            if not mask >> r & 1:
                sq = (i - r) ** 2
                dist[mask | 1 << r, sq:] += row[: s_max + 1 - sq]
    return dist[(1 << n) - 1].copy()


def _rho_of_s(n: int, s) -> np.ndarray:
    return 1.0 - 6.0 * np.asarray(s, dtype=np.float64) / (n * (n * n - 1))


def spearman_tail(n: int, rho: float) -> float:
    """Exact ``P(|rho_S| >= |rho|)`` for ``n`` untied pairs under independence (all ``n!``
    rank orders equally likely), for ``n <= SPEARMAN_EXACT_MAX_N``."""
    n = _positive_int(n, "n", minimum=3)
    if n > SPEARMAN_EXACT_MAX_N:
        raise ConfigError(f"exact only up to n = {SPEARMAN_EXACT_MAX_N}, got {n}", field="n")
    r = abs(_finite(rho, "rho"))
    counts = _spearman_counts(n)
    vals = np.abs(_rho_of_s(n, np.arange(len(counts))))
    return float(counts[vals >= r - 1e-12].sum() / counts.sum())


def critical_spearman(
    n: int, alpha: float = ALPHA, method: Literal["auto", "exact", "t"] = "auto"
) -> float:
    """The |Spearman rho| a two-sided test on ``n`` pairs needs to reject at ``alpha``.

    ``exact`` (``n <= SPEARMAN_EXACT_MAX_N``): the smallest attainable |rho| with
    ``P(|rho_S| >= |rho|) <= alpha`` (:func:`spearman_tail`; NaN when none is that rare, e.g.
    n <= 4 at 0.05); ``t``: ``t / sqrt(n - 2 + t^2)`` with ``t`` the ``1 - alpha / 2`` quantile
    of Student's t on ``n - 2`` df; ``auto``: exact up to ``SPEARMAN_EXACT_MAX_N``, else t.
    """
    n = _positive_int(n, "n", minimum=3)
    alpha = _probability(alpha, "alpha")
    if method not in ("auto", "exact", "t"):
        raise ConfigError(f"unknown method {method!r}", field="method")
    if method == "t" or (method == "auto" and n > SPEARMAN_EXACT_MAX_N):
        t = float(_stats.t.isf(alpha / 2, n - 2))
        return t / math.sqrt(n - 2 + t * t)
    if n > SPEARMAN_EXACT_MAX_N:
        raise ConfigError(f"exact only up to n = {SPEARMAN_EXACT_MAX_N}, got {n}", field="n")
    counts = _spearman_counts(n)
    s = np.nonzero(counts)[0]
    r = np.unique(np.round(np.abs(_rho_of_s(n, s)), 12))[::-1]  # attainable |rho|, largest first
    tail = np.array([spearman_tail(n, x) for x in r])
    ok = r[tail <= alpha]
    return float(ok.min()) if len(ok) else float("nan")


# ---------------------------------------------------------------------------------------------
# positive control


def synthetic_cliff_curves(
    n: int,
    steps: int,
    cliff_at: int | Int[np.ndarray, " n"],
    height: float,
    noise: float,
    seed: Seed = 0,
    *,
    base: float = 0.1,
) -> Float[np.ndarray, "n steps"]:
    """KL-like curves with a planted cliff: ``base (s / (steps - 1))^2`` (a smooth quadratic
    rise from 0 to ``base`` nats, how KL grows along a smooth path) plus a jump of ``height``
    between steps ``cliff_at - 1`` and ``cliff_at`` (one value, or one per curve, each in
    ``1 .. steps - 1``), plus Gaussian noise of sd ``noise`` on every step's increment; the
    curve starts at 0 and is clipped at 0. ``height = 0`` gives the no-cliff (flat) set.

    A jump metric must locate the cliff here (the max-slope step of
    :func:`challenge.metrics.max_slope_step` is ``cliff_at`` when ``height`` dominates the
    noise) and must not fire on the flat set: the positive control of a null finding.
    """
    n, steps = _positive_int(n, "n"), _positive_int(steps, "steps", minimum=3)
    height = _finite(height, "height", minimum=0)
    noise = _finite(noise, "noise", minimum=0)
    base = _finite(base, "base", minimum=0)
    at = np.broadcast_to(np.asarray(cliff_at), (n,))
    if not np.issubdtype(at.dtype, np.integer) or (at < 1).any() or (at > steps - 1).any():
        raise ConfigError(f"must be integers in 1..{steps - 1}", field="cliff_at")
    t = np.arange(steps, dtype=np.float64) / (steps - 1)
    inc = np.diff(base * t**2)[None, :].repeat(n, 0)  # [n, steps - 1]: the rise into step s + 1
    inc[np.arange(n), at - 1] += height
    if noise > 0:
        inc = inc + noise * generator(seed).standard_normal(inc.shape)
    curves = np.concatenate([np.zeros((n, 1)), np.cumsum(inc, axis=1)], axis=1)
    return np.maximum(curves, 0.0)
