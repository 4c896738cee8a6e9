"""The exponent fits: the log-log slope of KL on eps (:func:`fit_exponent`), the eps at a KL
threshold, local slopes, the paper's L^p exponent of a pair (:func:`lp_inverse_exponent`), and
the medians with bootstrap intervals the study reports."""

from __future__ import annotations

import numpy as np

from challenge.bootstrap import bootstrap
from challenge.errors import ConfigError
from challenge.studies.error_correction.config import _seed


def fit_exponent(
    eps: np.ndarray,
    response: np.ndarray,
    lo: float | np.ndarray = 0.0,
    hi: float = np.inf,
    min_points: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """Per curve (rows of ``response [n, S]``, or one ``[S]`` curve), the least-squares slope of
    ``log response`` vs ``log eps`` over the grid points with ``lo < response < hi`` (``lo``: a
    number or one per curve). Returns ``(p, n_used)``; ``p`` is NaN with fewer than
    ``min_points`` usable points."""
    eps = np.asarray(eps, dtype=np.float64)
    R = np.atleast_2d(np.asarray(response, dtype=np.float64))
    if R.shape[1] != len(eps) or (eps <= 0).any():
        raise ConfigError(f"response {R.shape} vs {len(eps)} positive eps", field="response")
    lo = np.broadcast_to(np.asarray(lo, dtype=np.float64), (R.shape[0],))
    use = (R > lo[:, None]) & (R < hi) & (R > 0) & np.isfinite(R)
    le = np.log(eps)
    p = np.full(R.shape[0], np.nan)
    n = use.sum(1)
    for i in np.nonzero(n >= min_points)[0]:
        x, y = le[use[i]], np.log(R[i, use[i]])
        xc = x - x.mean()
        p[i] = float((xc * (y - y.mean())).sum() / (xc * xc).sum())
    return p, n


def eps_at(eps: np.ndarray, kl: np.ndarray, threshold: float) -> np.ndarray:
    """Per curve, the eps at which KL first reaches ``threshold`` (log-log interpolation
    between grid points; NaN when it never does, ``eps[0]`` when it starts above)."""
    out = np.full(len(kl), np.nan)
    le = np.log(eps)
    for i, k in enumerate(kl):
        hit = np.nonzero(k >= threshold)[0]
        if not len(hit):
            continue
        j = hit[0]
        if j == 0 or k[j - 1] <= 0:
            out[i] = eps[j]
            continue
        a, b = np.log(k[j - 1]), np.log(k[j])
        t = (np.log(threshold) - a) / (b - a)
        out[i] = float(np.exp(le[j - 1] + t * (le[j] - le[j - 1])))
    return out


def local_slopes(eps: np.ndarray, kl: np.ndarray) -> np.ndarray:
    """d log KL / d log eps between consecutive grid points ``[n, S-1]`` (NaN where KL <= 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        lk = np.where(kl > 0, np.log(np.where(kl > 0, kl, 1.0)), np.nan)
        return np.diff(lk, axis=1) / np.diff(np.log(eps))


def lp_inverse_exponent(
    eps_a: np.ndarray, eps_b: np.ndarray, eps_mix: np.ndarray, cos: np.ndarray
) -> np.ndarray:
    """The paper's L^p model on one pair: the effect depends on ``||(c_a / e_a, c_b / e_b)||_p``
    where ``c`` are the perturbation's coefficients on the unit pure directions and ``e_a``,
    ``e_b`` the pure directions' thresholds (the length at which each alone reaches the
    effect). The mixture ``unit(a + b)`` at length ``e`` has ``c_a = c_b = e / |a + b|``, so at
    its threshold ``e_mix``: ``(m / e_a)^p + (m / e_b)^p = 1`` with ``m = e_mix / |a + b|``.
    Returns ``q = 1 / p`` (0.5 for a quadratic form whose eigenvectors are a and b; 0 where the
    mixture is at least as robust as ``max(m / e) >= 1`` allows, i.e. p = infinity; NaN where
    a threshold is missing), solved by bisection on log q."""
    s = np.sqrt(np.clip(2 + 2 * np.asarray(cos, np.float64), 1e-300, None))
    m = np.asarray(eps_mix, np.float64) / s
    ra, rb = m / np.asarray(eps_a, np.float64), m / np.asarray(eps_b, np.float64)
    q = np.full(len(m), np.nan)
    ok = np.isfinite(ra) & np.isfinite(rb)
    inf = ok & (np.maximum(ra, rb) >= 1)
    q[inf] = 0.0
    go = ok & ~inf
    lo, hi = np.full(go.sum(), -12.0), np.full(go.sum(), 12.0)  # log q
    la, lb = np.log(ra[go]), np.log(rb[go])
    for _ in range(200):
        mid = (lo + hi) / 2
        f = np.exp(la / np.exp(mid)) + np.exp(lb / np.exp(mid))  # increasing in q
        lo, hi = np.where(f < 1, mid, lo), np.where(f < 1, hi, mid)
    q[go] = np.exp((lo + hi) / 2)
    return q


def _med(v: np.ndarray) -> float:
    v = v[np.isfinite(v)]
    return float(np.median(v)) if len(v) else float("nan")


def _est(stat, *arrays, cfg) -> list[float | None]:
    e = bootstrap(stat, *arrays, n_boot=cfg.n_boot, seed=_seed(cfg.seed, "boot"))
    return [None if not np.isfinite(v) else float(v) for v in (e.value, e.lo, e.hi)]
