"""The per-row copy check: are submitted rows closer to real rows (or to each other) than real
rows are to one another?

Calibration (per track, cached in memory): ``R`` = every real row the organiser holds (public,
held-out, context, and a private test split when the track view has one). For each row of
``R``, its distance to the nearest *other* row of ``R`` (leave-one-out) is what a fresh real
row's nearest-real distance looks like (a fresh row against ``R`` is exchangeable with a row of
``R`` against the rest). Two tests then compare a submission with that distribution, each at
false-refusal rate ``alpha`` for a real sample:

- **close rows** (copies, near-copies): ``tau`` = the ``q_low`` quantile of the real
  distances; a real sample of n rows has ``Binomial(n, p)`` rows below ``tau``, with ``p`` the
  95 % Clopper-Pearson upper bound of the calibration's own fraction; more rows than the
  binomial's ``1 - alpha`` quantile is refused.
- **shifted lower tail** (copies + small noise): the one-sided two-sample KS statistic
  ``D+ = max_t F_sub(t) - F_real(t)`` over the distances ``t`` below the ``q_shift`` quantile of
  the real ones; refused above ``sqrt(ln(1/alpha) / 2 * (1/n + 1/m))`` (the full-range
  critical value, so conservative on the restricted range). Only the lower tail: honest
  generators may well sit closer to real rows than real rows' *typical* neighbour distance
  (e.g. token_cluster, whose rows gather around the per-token means), but not in the range
  where real rows have near-twins.

Both tests run on each submitted row's distance to the nearest real row. Near-duplicates inside
the submission (one row repeated with jitter) get the close-rows test on each row's distance to
the nearest *other submitted* row, with the stricter ``tau_self`` = ``SELF_FRACTION`` x the ``Q_SELF``
quantile of the real distances ("closer to each other than real rows ever are", with room for
honest maps that pull real near-twins together, e.g. ``structured`` on twin public rows: 0.66 x
the real minimum measured on the tiny track; a real sample of n rows has
within-sample distances no smaller than its distances to the larger ``R``, so the calibration
is conservative there). No shift test there: an honest generator may be less diverse than real
data (e.g. SAE compositions from a small dictionary) without copying anything. See
docs/integrity.md for the margins measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from jaxtyping import Float
from torch import Tensor

from challenge.neighbours import nearest

Q_LOW = 0.01
"""Quantile of the real nearest-neighbour distances below which a row counts as close."""
ALPHA = 1e-3
"""False-refusal rate of each test for a real sample."""
CALIBRATION_CONFIDENCE = 0.95
"""Confidence of the upper bound on the real rate of close rows (``tau`` is itself estimated)."""
Q_SELF = 0.001
"""Quantile below which two submitted rows count as near-duplicates of each other."""
SELF_FRACTION = 0.5
"""``tau_self`` is this fraction of the ``Q_SELF`` quantile (the allowed count is that of the
quantile itself, so conservative)."""
Q_SHIFT = 0.2
"""The shift test looks at distances below this quantile of the real ones."""
SHOW_ROWS = 8
"""Rows named in a refusal (the closest first)."""


def nearest_distances(
    x: Float[Tensor, "n d"], ref: Float[Tensor, "m d"], *, exclude_self: bool = False
) -> Float[Tensor, " n"]:
    """Distance of each row of ``x`` to its nearest row of ``ref`` (float64,
    ``challenge.neighbours.nearest``); with ``exclude_self`` (``x`` is ``ref``), to the nearest
    *other* row."""
    return nearest(x, ref, exclude_self=exclude_self)[0]


@dataclass
class Calibration:
    """Real-to-real nearest-neighbour distances (leave-one-out over all real rows)."""

    real: np.ndarray
    """sorted leave-one-out distances, one per real row"""
    tau: float
    """the ``Q_LOW`` quantile of ``real``"""
    p_close: float
    """upper bound (``CALIBRATION_CONFIDENCE``) on a fresh real row's chance to fall below tau"""
    t_shift: float
    """the ``Q_SHIFT`` quantile of ``real``: the shift test's range"""
    tau_self: float
    """``SELF_FRACTION`` x the ``Q_SELF`` quantile of ``real``: the near-duplicate threshold"""
    p_self: float
    """upper bound on a real row's chance to fall below ``tau_self``"""

    def quantiles(self) -> dict[str, float]:
        return {f"q{q:g}": float(np.quantile(self.real, q)) for q in (0.001, 0.01, 0.05, 0.5)}


def _below(loo: np.ndarray, q: float) -> tuple[float, float]:
    """The ``q`` quantile of ``loo`` and the upper bound (``CALIBRATION_CONFIDENCE``,
    Clopper-Pearson) on the chance of a fresh real value to fall below it."""
    from scipy.stats import beta

    m, tau = len(loo), float(np.quantile(loo, q))
    k = int((loo < tau).sum())
    return tau, float(beta.ppf(CALIBRATION_CONFIDENCE, k + 1, m - k)) if k < m else 1.0


def calibrate(real: Float[Tensor, "m d"], q_low: float = Q_LOW) -> Calibration:
    """The calibration of a set of real rows (see the module docstring)."""
    loo = np.sort(nearest_distances(real, real, exclude_self=True).numpy())
    tau, p = _below(loo, q_low)
    tau_self, p_self = _below(loo, Q_SELF)
    return Calibration(
        real=loo,
        tau=tau,
        p_close=p,
        t_shift=float(np.quantile(loo, Q_SHIFT)),
        tau_self=SELF_FRACTION * tau_self,
        p_self=p_self,
    )


def allowed_close(n: int, p: float, alpha: float = ALPHA) -> int:
    """Most rows of a real sample of ``n`` below a threshold a real row falls below with
    chance ``p`` (the binomial's ``1 - alpha`` quantile)."""
    from scipy.stats import binom

    return int(binom.ppf(1 - alpha, n, p))


def ks_critical(n: int, m: int, alpha: float = ALPHA) -> float:
    """One-sided two-sample KS critical value at level ``alpha`` (asymptotic)."""
    return math.sqrt(math.log(1 / alpha) / 2 * (1 / n + 1 / m))


@dataclass
class Finding:
    """One test's outcome on one set of distances."""

    test: str
    """``close`` or ``shift``"""
    against: str
    """``real`` (nearest real row) or ``itself`` (nearest other submitted row)"""
    count: int
    """rows below the threshold"""
    allowed: int
    """most rows a real sample has below it"""
    threshold: float
    rows: list[int] = field(default_factory=list)
    """the rows below the threshold, closest first (at most ``SHOW_ROWS``)"""
    statistic: float | None = None
    """``D+`` for the shift test"""
    critical: float | None = None

    @property
    def refused(self) -> bool:
        return self.count > self.allowed

    def message(self, n: int) -> str:
        where = (
            "a real row (public, held-out or context)"
            if self.against == "real"
            else ("another submitted row")
        )
        rows = ", ".join(map(str, self.rows)) + (", ..." if self.count > len(self.rows) else "")
        if self.test == "close":
            what = (
                f"the {Q_LOW:.0%} quantile"
                if self.against == "real"
                else f"{SELF_FRACTION:g} x the {Q_SELF:.1%} quantile"
            )
            return (
                f"copy check: {self.count} of {n} rows lie closer to {where} than "
                f"{self.threshold:.3f} ({what} of real-to-real nearest-neighbour "
                f"distances); a real sample of {n} rows has at most {self.allowed} "
                f"(p < {ALPHA:g}); closest rows: {rows}"
            )
        return (
            f"copy check: the rows sit closer to {where} than real rows do: {self.count} of {n} "
            f"lie within {self.threshold:.3f}, where a real sample has at most {self.allowed} "
            f"(one-sided KS D+ {self.statistic:.3f} > {self.critical:.3f}, p < {ALPHA:g}); "
            f"closest rows: {rows}"
        )


def _close(d: np.ndarray, tau: float, p: float, against: str) -> Finding:
    below = np.flatnonzero(d < tau)
    order = below[np.argsort(d[below], kind="stable")]
    allowed = allowed_close(len(d), p)
    return Finding("close", against, len(below), allowed, tau, order[:SHOW_ROWS].tolist())


def _shift(d: np.ndarray, cal: Calibration, against: str) -> Finding:
    n, m = len(d), len(cal.real)
    ds = np.sort(d)
    ds = ds[ds <= cal.t_shift] if (ds <= cal.t_shift).any() else ds[:1]
    f_sub = np.arange(1, len(ds) + 1) / n  # F_sub at each submitted distance
    f_real = np.searchsorted(cal.real, ds, side="right") / m
    gap = f_sub - f_real
    j = int(np.argmax(gap))
    crit = ks_critical(n, m)
    t = float(ds[j])
    below = np.flatnonzero(d <= t)
    order = below[np.argsort(d[below], kind="stable")]
    allowed = int(math.floor(n * (f_real[j] + crit)))
    return Finding(
        "shift",
        against,
        len(below),  # > allowed exactly when D+ > the critical value
        allowed,
        t,
        order[:SHOW_ROWS].tolist(),
        statistic=float(max(gap[j], 0.0)),
        critical=crit,
    )


def copy_findings(
    x: Float[Tensor, "n d"], real: Float[Tensor, "m d"], cal: Calibration
) -> tuple[list[Finding], dict[str, float]]:
    """The three tests on submission ``x`` against the real rows ``real`` (calibrated by ``cal``)
    and the statistics a report keeps."""
    to_real = nearest_distances(x, real).numpy()
    to_self = nearest_distances(x, x, exclude_self=True).numpy()
    found = [
        _close(to_real, cal.tau, cal.p_close, "real"),
        _close(to_self, cal.tau_self, cal.p_self, "itself"),
        _shift(to_real, cal, "real"),
    ]
    stats = {
        "copy_tau": cal.tau,
        "copy_tau_self": cal.tau_self,
        "copy_allowed_close": float(found[0].allowed),
        "copy_allowed_close_itself": float(found[1].allowed),
        "copy_close_real": float(found[0].count),
        "copy_close_itself": float(found[1].count),
        "copy_ks_real": float(found[2].statistic or 0.0),
        "copy_ks_critical": float(found[2].critical or 0.0),
        "nn_real_median": float(np.median(to_real)),
        "nn_real_q01": float(np.quantile(to_real, 0.01)),
        "nn_itself_q01": float(np.quantile(to_self, 0.01)),
        **{f"real_nn_{k}": v for k, v in cal.quantiles().items()},
    }
    return found, stats
