"""Curve metrics exactly as published (P1 "teren", P2 sharpness) plus two-sample KS.

Curves are float arrays ``[n_curves, n_steps]`` (a 1-D array is one curve). Every curve metric
is vectorised over curves and returns a numpy array of shape ``[n_curves]`` (shape ``[1]`` for
a 1-D input). Step indices are 0-based. Metrics never normalise unless asked: callers pass the
curve they want scored (the P1 relative scheme divides each curve by its final value before the
0.02 slope threshold applies; ``max_slope_step(..., normalise=True)`` does that).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import stats as _stats
from typing_extensions import TypedDict

from challenge import bootstrap
from challenge.errors import ConfigError

SLOPE_THRESHOLD = 0.02  # P1, on curves normalised to end at 1
PLATEAU_DISTANCE = 20.0  # P1 absolute scheme, GPT-2 small L2 units
NL_FIT_STEPS, NL_TOLERANCE = 10, 0.2  # P1 nonlinearity step
AREA_RATIO_START = 5  # P1 area-ratio step


def _curves(curves, min_steps: int = 2) -> np.ndarray:
    a = np.asarray(curves, dtype=np.float64)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise ConfigError(f"expected [n_curves, n_steps], got shape {a.shape}", field="curves")
    if a.shape[1] < min_steps:
        raise ConfigError(f"need at least {min_steps} steps, got {a.shape[1]}", field="curves")
    if not np.isfinite(a).all():
        raise ConfigError("curves contain NaN or inf", field="curves")
    return a


def max_slope_step(curves, threshold: float = SLOPE_THRESHOLD, normalise: bool = False):
    """P1 max-slope step (MS): argmax of ``slopes[i] = v[i] - v[i-1]`` (``slopes[0] = 0``).

    If no slope exceeds ``threshold`` (``max(slopes) <= threshold``) the step is the last step,
    ``n_steps - 1``. ``normalise=True`` divides each curve by its last value first (curves ending
    at 0 are left as they are); the published 0.02 refers to such normalised curves.
    """
    a = _curves(curves)
    if normalise:
        last = a[:, -1:]
        a = np.divide(a, last, out=a.copy(), where=last != 0)
    slopes = np.zeros_like(a)
    slopes[:, 1:] = np.diff(a, axis=1)
    step = slopes.argmax(axis=1)
    step[slopes.max(axis=1) <= threshold] = a.shape[1] - 1
    return step.astype(np.int64)


def plateau_length(curves, threshold: float = PLATEAU_DISTANCE):
    """P1 plateau length (AP): first step at which the value reaches ``>= threshold``.

    Censored: a curve that never reaches the threshold gets ``n_steps`` (one past the last step),
    so censored curves are distinguishable from ones that reach it on the last step.
    """
    a = _curves(curves, min_steps=1)
    hit = a >= threshold
    step = hit.argmax(axis=1)
    step[~hit.any(axis=1)] = a.shape[1]
    return step.astype(np.int64)


def nonlinearity_step(
    curves,
    fit_steps: int = NL_FIT_STEPS,
    tolerance: float = NL_TOLERANCE,
    *,
    start: int | None = None,
    eps: float = 1e-6,
):
    """P1 nonlinearity step (NL): first step deviating more than 20 % from the line fitted to the
    first ``fit_steps`` steps (least squares over steps ``0..fit_steps-1``).

    A step deviates when ``|v - line| > tolerance * max(|line|, eps)``; ``eps`` is an absolute
    floor (in the curve's units) so a line crossing 0 does not flag every tiny residual. The
    search starts at ``start`` (default ``fit_steps``): inside the fit window the residuals are
    fit error, and a distance curve is exactly 0 at step 0, so any non-zero fitted intercept
    would be a 100 % relative deviation there. Pass ``start=0`` to search every step. No
    deviating step gives ``n_steps - 1``.
    """
    a = _curves(curves)
    n = a.shape[1]
    if not 2 <= fit_steps <= n:
        raise ConfigError(f"fit_steps must be in [2, {n}], got {fit_steps}", field="fit_steps")
    start = fit_steps if start is None else start
    t = np.arange(n, dtype=np.float64)
    design = np.stack([t[:fit_steps], np.ones(fit_steps)], axis=1)
    (slope, intercept), *_ = np.linalg.lstsq(design, a[:, :fit_steps].T, rcond=None)
    line = slope[:, None] * t[None, :] + intercept[:, None]
    dev = np.abs(a - line) > tolerance * np.maximum(np.abs(line), eps)
    dev[:, :start] = False
    step = dev.argmax(axis=1)
    step[~dev.any(axis=1)] = n - 1
    return step.astype(np.int64)


def area_ratio_step(curves, start: int = AREA_RATIO_START):
    """P1 area-ratio step: argmax over ``start <= i <= n_steps - 1`` of
    ``(values[i-1] * i / 2) / trapezoid(values[:i])`` (unit spacing, ``np.trapezoid`` semantics).

    Returns ``i`` itself. Steps whose trapezoid area is 0 (e.g. a curve still flat at 0) are
    skipped; a curve with no valid step gives ``n_steps - 1``.
    """
    a = _curves(curves)
    n = a.shape[1]
    if not 1 <= start <= n - 1:
        raise ConfigError(f"start must be in [1, {n - 1}], got {start}", field="start")
    # cum[:, m] = trapezoid(values[:m + 1]); trapezoid(values[:i]) = cum[:, i - 1]
    cum = np.zeros_like(a)
    cum[:, 1:] = np.cumsum((a[:, 1:] + a[:, :-1]) / 2, axis=1)
    i = np.arange(start, n)
    tri = a[:, i - 1] * i / 2
    den = cum[:, i - 1]
    ok = den != 0
    ratio = np.full(tri.shape, -np.inf)
    np.divide(tri, den, out=ratio, where=ok)
    step = i[ratio.argmax(axis=1)]
    step[~ok.any(axis=1)] = n - 1
    return step.astype(np.int64)


def sharpness(curves):
    """P2 sharpness of interpolation curves d(alpha) on S evenly spaced alphas in [0, 1]:
    ``max(diff(d / d[-1])) * (S - 1)``, i.e. max of d'(alpha) / d(1). NaN where ``d[-1] == 0``."""
    a = _curves(curves)
    last = a[:, -1:]
    norm = np.divide(a, last, out=np.full_like(a, np.nan), where=last != 0)
    return np.diff(norm, axis=1).max(axis=1) * (a.shape[1] - 1)


CURVE_METRICS: dict[str, Callable[..., np.ndarray]] = {
    "max_slope_step": max_slope_step,
    "plateau_length": plateau_length,
    "nonlinearity_step": nonlinearity_step,
    "area_ratio_step": area_ratio_step,
    "sharpness": sharpness,
}


def _sample(x, field: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).ravel()
    if a.size == 0:
        raise ConfigError("empty sample", field=field)
    return a


def ks_statistic(a, b) -> float:
    """Two-sample Kolmogorov-Smirnov statistic (``scipy.stats.ks_2samp``), in [0, 1]."""
    a, b = _sample(a, "a"), _sample(b, "b")
    return float(_stats.ks_2samp(a, b, method="asymp").statistic)


def ks_fast(a: np.ndarray, b: np.ndarray) -> float:
    """:func:`ks_statistic` of two finite 1-D samples without its checks (bootstrap loops)."""
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, grid, side="right") / a.size
    cdf_b = np.searchsorted(b, grid, side="right") / b.size
    return float(np.abs(cdf_a - cdf_b).max())


def ks_bootstrap(a, b, n_boot: int = 1000, seed: int = 0, ci: float = 0.95) -> dict[str, float]:
    """KS statistic with a percentile bootstrap CI: both samples resampled with replacement
    (``numpy.random.Generator(PCG64(seed))``). Returns ``dict(stat, low, high)``."""
    a, b = _sample(a, "a"), _sample(b, "b")
    if not 0 < ci < 1:
        raise ConfigError(f"ci must be in (0, 1), got {ci}", field="ci")
    # one draw for a, then one for b, per resample: the order the published records were made
    # with (``Generator.choice(x, n, replace=True)`` is ``x[integers(0, n, n)]``, same stream)
    g = bootstrap.generator(seed)
    boots = [
        ks_fast(a[bootstrap.resample(a.size, 1, g)[0]], b[bootstrap.resample(b.size, 1, g)[0]])
        for _ in range(n_boot)
    ]
    low, high = bootstrap.interval(boots, ci)
    return {"stat": ks_statistic(a, b), "low": low, "high": high}


class Summary(TypedDict):
    """:func:`summarise` of a sample: statistics of its finite values (``None`` when none)."""

    mean: float | None
    sd: float | None
    median: float | None
    q25: float | None
    q75: float | None
    n: int


def summarise(x) -> Summary:
    """mean, sd (population, ddof=0), median, q25, q75 and n of the finite values of ``x``.

    Non-finite values are dropped (``n`` counts what was used); all-None stats when none is left.
    """
    a = np.asarray(x, dtype=np.float64).ravel()
    a = a[np.isfinite(a)]
    if a.size == 0:
        return {"mean": None, "sd": None, "median": None, "q25": None, "q75": None, "n": 0}
    q25, med, q75 = np.quantile(a, [0.25, 0.5, 0.75])
    return {
        "mean": float(a.mean()),
        "sd": float(a.std()),
        "median": float(med),
        "q25": float(q25),
        "q75": float(q75),
        "n": int(a.size),
    }


# ------------------------------------------------------------------ the papers' own definitions
# The P1 features exactly as the public teren notebooks compute them (branch ``explorations``:
# ``replications.ipynb`` for MS / NL / AR, ``experiment_plateaus.ipynb`` for AP), curve by curve
# on the RAW curve (no normalisation). The suite's definitions above differ (MS on normalised
# curves, a least-squares NL line, AR returning i, a censored AP of n_steps); both are kept,
# under their own names, and results say which was used (``definitions`` of a P1 config).
PUBLISHED_MS_NONE = 99  # MS when no slope exceeds the threshold (their num_steps - 1, fixed)
PUBLISHED_AP_NONE = 100  # AP when the curve never reaches the distance (fixed, even when cut)
PUBLISHED_AR_START = 6  # AR's first candidate step i (their ``aucs[5:]``)
PUBLISHED_MIN_POINTS = PUBLISHED_AR_START + 1  # the shortest curve their AR accepts


def max_slope_step_published(curves, threshold: float = SLOPE_THRESHOLD):
    """MS as published: ``slopes[i] = v[i] - v[i-1]`` of the raw curve, ``slopes[0]`` padded with
    ``slopes[1]``; no slope ``> threshold`` gives 99, else the step of the largest slope (NaN
    slopes count as 0). Ties are the suite's own rule: among the steps sharing the largest slope
    (exact float equality) the highest step is reported (``n - 1 - argmax`` of the reversed
    slopes), so the padded pair (0, 1) gives 1. The notebook takes
    ``np.argsort(slopes)[::-1][0]``; argsort's default kind (quicksort, an unstable introsort
    with SIMD paths) leaves the order of equal values to numpy's sort, which varies with the
    curve length, the CPU and the numpy build (0 or 1 for the padded pair), so published and
    suite values may differ on tied curves."""
    a = _curves(curves)
    slopes = np.empty_like(a)
    slopes[:, 1:] = np.diff(a, axis=1)
    slopes[:, 0] = slopes[:, 1]
    slopes = np.nan_to_num(slopes)
    n = a.shape[1]
    last_max = n - 1 - np.argmax(slopes[:, ::-1], axis=1)
    return np.where((slopes > threshold).any(axis=1), last_max, PUBLISHED_MS_NONE).astype(np.int64)


def plateau_length_published(curves, target_steps=None, threshold: float = PLATEAU_DISTANCE):
    """AP as published: over ``curve[:target_step]``, the first index whose value is
    ``>= threshold``, else 100. ``target_steps`` (one per curve, ``floor(||T - A|| / step)``)
    defaults to the whole curve."""
    a = np.asarray(curves, dtype=np.float64)
    a = a[None, :] if a.ndim == 1 else a
    if a.ndim != 2:
        raise ConfigError(f"expected [n_curves, n_steps], got shape {a.shape}", field="curves")
    n = a.shape[1]
    cut = (
        np.full(len(a), n)
        if target_steps is None
        else np.broadcast_to(np.asarray(target_steps, dtype=np.int64), (len(a),))
    )
    if (cut < 0).any():
        raise ConfigError("target steps must be >= 0", field="target_steps")
    hit = (a >= threshold) & (np.arange(n)[None, :] < cut[:, None])
    return np.where(hit.any(axis=1), hit.argmax(axis=1), PUBLISHED_AP_NONE).astype(np.int64)


def nonlinearity_step_published(curves, end_step: int = NL_FIT_STEPS, threshold: float = 20.0):
    """NL as published: the line through ``(0, v[0])`` and ``(end_step - 1, v[end_step - 1])``
    (two points, not a fit); the first ``i >= end_step`` with
    ``|v[i] - line(i)| / line(i) * 100 > threshold`` returns ``i - 1``; none returns ``n``.
    The division is by ``line(i)`` itself, not its absolute value (a negative line never flags;
    a zero line flags where the deviation is non-zero), as in their code."""
    a = _curves(curves)
    n = a.shape[1]
    if not 2 <= end_step < n:
        raise ConfigError(f"end_step must be in [2, {n - 1}], got {end_step}", field="end_step")
    slope = (a[:, end_step - 1] - a[:, 0]) / (end_step - 1)
    i = np.arange(end_step, n)
    line = slope[:, None] * i[None, :] + a[:, :1]
    with np.errstate(divide="ignore", invalid="ignore"):
        dev = np.abs(a[:, end_step:] - line) / line * 100
    flag = dev > threshold  # NaN (0 / 0) compares False, as in Python
    return np.where(flag.any(axis=1), i[flag.argmax(axis=1)] - 1, n).astype(np.int64)


def area_ratio_step_published(curves, start: int = PUBLISHED_AR_START):
    """AR as published: for ``i = 1 .. n-1``, ``r_i = (v[i-1] * i / 2) / trapz(v[:i])`` (0 where
    the area is 0); the argmax over ``i >= start`` (first on ties) is returned as ``i - 1``."""
    a = _curves(curves)
    n = a.shape[1]
    if not 2 <= start <= n - 1:
        raise ConfigError(f"start must be in [2, {n - 1}], got {start}", field="start")
    cum = np.zeros_like(a)  # cum[:, m] = trapz(v[:m + 1])
    cum[:, 1:] = np.cumsum((a[:, 1:] + a[:, :-1]) / 2, axis=1)
    i = np.arange(1, n)
    area = cum[:, i - 1]
    ratio = np.zeros_like(area)
    np.divide(a[:, i - 1] * i / 2, area, out=ratio, where=area != 0)
    return (np.argmax(ratio[:, start - 1 :], axis=1) + start - 1).astype(np.int64)


DEFINITIONS = ("suite", "published")


def auc(neg: np.ndarray, pos: np.ndarray) -> float:
    """P(pos > neg) + P(pos = neg) / 2 (the Mann-Whitney AUC, ties counted half; NaN dropped)."""
    from scipy.stats import rankdata

    neg, pos = neg[np.isfinite(neg)], pos[np.isfinite(pos)]
    if not len(neg) or not len(pos):
        return 0.5
    r = rankdata(np.concatenate([neg, pos]))
    return float((r[len(neg) :].sum() - len(pos) * (len(pos) + 1) / 2) / (len(neg) * len(pos)))
