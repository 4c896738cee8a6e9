"""The memorisation test (distance to closest record): do submitted rows sit nearer the public
rows than real rows the generator never saw?

The copy check (:mod:`challenge.scoring.copycheck`) asks whether rows are *too close* to real
rows; a generator that sees the public split can pass it by moving public rows within their
plateaus (public rows + 10 % noise, each public row reflected away from its nearest public
row, ...). Such rows are still nearer the rows they were moved from than rows of an equal real
split the generator never saw. This is the distance-to-closest-record test of the
synthetic-data field (SDMetrics' ``DCROverfittingProtection``: synthetic rows against the
training rows and a validation set), made a calibrated test:

- **statistic** per submitted row ``x``: ``s(x) = log(d(x, P) / d(x, H))``, ``d(x, A)`` the
  distance to the nearest row of ``A`` (float64, :func:`challenge.neighbours.nearest`);
  ``P`` = the whole public split (what the generator saw), ``H`` = the holdout
  (:func:`holdout_rows`: the scorer's reference half of the held-out split, which is the
  organiser's private test split when the track carries one). ``s < 0``: the row's nearest
  public row is nearer than its nearest holdout row. Moved rows shift ``s`` down.
- **null** (no memorisation): the submission does not depend on *which* real rows are public.
  Then the observed labelling of ``P u H`` is one random draw among all labellings with
  ``|P|`` public and ``|H|`` holdout rows, and ``s`` under ``B`` random relabellings
  (stream ``memorisation.relabel``) is a draw of the same law. The null CDF ``F0`` pools ``s``
  over the observed and the ``B`` relabellings.
- **test**: the one-sided KS distance ``D+ = max_t F_sub(t) - F0(t)`` (the submission's
  ``s`` shifted below the null); the same ``D+`` of each relabelling against ``F0`` gives its
  permutation law; refused when the Monte Carlo p-value ``(1 + #{b: D+_b >= D+}) / (B + 1)``
  is at most ``alpha`` (``B = 4999``, ``alpha = 1e-3``: fewer than 5 relabellings reach
  ``D+``). The test is exact at level ``alpha`` under the null for any submission, whatever
  the rows' positions.

Why not the alternatives (docs/integrity.md, "The memorisation test"):

- **public subsampled to ``|H|``** would make ``s`` of a real row centred on 0, but would see
  only the rows moved from the quarter of public rows in the subset, and the subset's seed is
  public (an attacker moves only the other rows). The whole public split is used; the size
  difference (4000 vs 1000 rows: ``s`` of a real row has median about -0.23) is absorbed by
  the null, which relabels with the same sizes.
- **a real sample as the null** (two-sample KS of the submission's ``s`` against the oracle
  half's, critical value ``sqrt(ln(1/alpha)/2 (1/n + 1/m))``) compares *where* rows are as
  much as *which* split they favour: rows far from all real rows (N(mu, Sigma), SAE
  compositions) have ``s`` near its far-field value with a narrow spread, and that alone gives
  ``D+`` 0.15-0.19 against the oracle half's ``s`` (0.37-0.43 with ``P`` subsampled; all
  refused at 0.083).
- **the asymptotic critical value** ``sqrt(ln(1/alpha) / (2 n))`` (the two-sample formula
  with the null's ``m = (B + 1) n`` values) assumes independent rows. It is reported
  (``threshold_asymptotic``) and agrees with the permutation one for real-like rows, but rows
  far from the data share a few nearest real rows ("hubs"; e.g. 99 % of isotropic rows are
  nearer a public than a holdout row because their common nearest rows are public), so their
  permutation critical value is 3-10 x larger, which the permutation law measures.

Holdout: the scorer's reference half. A ranked generator runs in the sandbox with the public
split only, so it has never seen those rows; being near them is what the scorer rewards, but
this test is one-sided (only nearness to the *public* rows counts against a submission), and
copying holdout rows is the copy check's business. On the dev board (published held-out
split) an activation-only submitter can see the holdout too; there, and for the official
board, :func:`holdout_rows` returns the private test split's reference half when the track
carries one (``challenge.private.with_test_split``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from challenge import rng
from challenge.errors import ConfigError
from challenge.neighbours import nearest

ALPHA = 1e-3
"""False-refusal rate for a submission that does not depend on which real rows are public."""
N_RELABEL = 4999
"""Random relabellings ``B`` of the null: ``alpha (B + 1) = 5`` relabellings may reach ``D+``."""
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
"""Quantiles of the statistic a result keeps."""
DISTANCE_FLOOR = 1e-12
"""Distances are floored here before the log (an exact copy has ``d = 0``, or ``cdist``'s float64
rounding, ~1e-6: ``s`` between about -15 and -30)."""
MISS_RATE = 1e-12
"""Chance, per row and relabelling, that a row's ``k`` nearest real rows hold no row of one of
the two labels (then that label's distance is taken as the ``k``-th nearest: a lower bound)."""
CHUNK = 256
"""Submitted rows per distance block; relabellings per block are chosen to keep blocks small."""


@dataclass
class MemorisationResult:
    """The memorisation test of one set of rows (see the module docstring)."""

    n: int
    """submitted rows"""
    n_public: int
    """rows of the public split ``P``"""
    n_holdout: int
    """rows of the holdout ``H``"""
    holdout: str
    """which rows ``H`` is"""
    quantiles: dict[str, float]
    """quantiles of ``s = log(d_public / d_holdout)`` over the submitted rows"""
    null_quantiles: dict[str, float]
    """the same quantiles of the null (``s`` pooled over the relabellings)"""
    closer_to_public: float
    """fraction of rows with ``s < 0`` (nearest real row public)"""
    closer_to_public_null: float
    """the same under the null (``|P| / (|P| + |H|)`` for rows spread over the data)"""
    ks: float
    """one-sided KS ``D+ = max_t F_sub(t) - F0(t)``"""
    threshold: float
    """permutation critical value: refused iff ``ks > threshold`` (``inf``: ``B`` too small)"""
    threshold_asymptotic: float
    """``sqrt(ln(1/alpha)/2 (1/n + 1/m))``, ``m = (B + 1) n``: the value for independent rows"""
    p_value: float
    """Monte Carlo p-value ``(1 + #{b: D+_b >= D+}) / (B + 1)``"""
    refused: bool
    """``p_value <= alpha`` (equivalently ``ks > threshold``)"""
    alpha: float
    n_relabel: int
    seed: int

    @property
    def median(self) -> float:
        """Median of the statistic."""
        return self.quantiles["q0.5"]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def message(self) -> str:
        """One line: the verdict and its numbers."""
        verdict = "refused" if self.refused else "accepted"
        return (
            f"memorisation test {verdict}: {self.closer_to_public:.1%} of {self.n} rows lie "
            f"nearer a public row than a holdout row (null {self.closer_to_public_null:.1%}); "
            f"median log(d_public / d_holdout) {self.median:+.3f} (null "
            f"{self.null_quantiles['q0.5']:+.3f}); one-sided KS D+ {self.ks:.3f} vs "
            f"{self.threshold:.3f} (p = {self.p_value:.2g}, alpha {self.alpha:g})"
        )


def row_statistic(
    x: Float[Tensor, "n d"], public: Float[Tensor, "p d"], holdout: Float[Tensor, "h d"]
) -> Float[Tensor, " n"]:
    """``log(d(x, public) / d(x, holdout))`` per row (float64; distances floored at
    :data:`DISTANCE_FLOOR`): below 0 when the row's nearest real row is public."""
    d_pub = nearest(x, public)[0].clamp_min(DISTANCE_FLOOR)
    d_hold = nearest(x, holdout)[0].clamp_min(DISTANCE_FLOOR)
    return (d_pub / d_hold).log()


def neighbours_k(n_public: int, n_holdout: int) -> int:
    """Nearest real rows kept per submitted row so that a random relabelling leaves a row
    without a public or a holdout row among them with chance at most :data:`MISS_RATE`."""
    n = n_public + n_holdout
    frac = min(n_public, n_holdout) / n
    if frac >= 1.0:
        return n
    return min(n, math.ceil(math.log(MISS_RATE) / math.log1p(-frac)))


def nearest_k(
    x: Float[Tensor, "n d"], ref: Float[Tensor, "m d"], k: int, chunk: int = CHUNK
) -> tuple[Float[Tensor, "n k"], Int[Tensor, "n k"]]:
    """The ``k`` nearest rows of ``ref`` to each row of ``x``, nearest first (float64
    ``torch.cdist``, as :func:`challenge.neighbours.nearest`)."""
    ref = ref.double()
    dist, idx = [], []
    for i in range(0, len(x), chunk):
        d = torch.cdist(x[i : i + chunk].double(), ref)
        v, j = d.topk(k, dim=1, largest=False, sorted=True)
        dist.append(v)
        idx.append(j)
    return torch.cat(dist), torch.cat(idx)


HEAD = 16
"""Nearest pooled rows looked at first for each label (the rest only where these miss it)."""


def _first(is_holdout: np.ndarray, idx: np.ndarray, want: bool, head: int = HEAD) -> np.ndarray:
    """Position, in each row's neighbour list ``idx``, of its first pooled row labelled
    ``want`` under each labelling (``[b, n]``; the last position when none is)."""
    lab = is_holdout[:, idx[:, :head]] == want  # [b, n, head]
    j = lab.argmax(axis=-1)
    b_miss, n_miss = np.nonzero(~lab.any(axis=-1))
    if len(b_miss):
        full = is_holdout[b_miss[:, None], idx[n_miss]] == want  # [misses, k]
        jj = full.argmax(axis=-1)
        jj[~full.any(axis=-1)] = idx.shape[1] - 1
        j[b_miss, n_miss] = jj
    return j


def labelled_statistic(
    dist: Float[Tensor, "n k"], idx: Int[Tensor, "n k"], is_holdout: Bool[Tensor, "b m"]
) -> Float[Tensor, "b n"]:
    """``s`` of each row under each labelling of the pooled real rows (``True``: holdout),
    from the rows' ``k`` nearest pooled rows (``dist``, ``idx``; :func:`nearest_k`)."""
    d, i, lab = dist.numpy(), idx.numpy(), is_holdout.numpy()
    rows = np.arange(len(d))[None]
    d_hold = d[rows, _first(lab, i, True)]
    d_pub = d[rows, _first(lab, i, False)]
    s = np.log(np.maximum(d_pub, DISTANCE_FLOOR) / np.maximum(d_hold, DISTANCE_FLOOR))
    return torch.from_numpy(s)


def random_labellings(m: int, n_holdout: int, b: int, g: torch.Generator) -> Bool[Tensor, "b m"]:
    """``b`` labellings of ``m`` pooled rows, each marking a uniformly random ``n_holdout``
    of them as holdout (the rows with the smallest of ``m`` uniform float64 keys)."""
    keys = torch.rand(b, m, generator=g, dtype=torch.float64).numpy()
    out = np.zeros((b, m), dtype=bool)
    np.put_along_axis(out, np.argpartition(keys, n_holdout - 1, axis=1)[:, :n_holdout], True, 1)
    return torch.from_numpy(out)


def ks_above(s: Float[Tensor, "b n"]) -> Float[Tensor, " b"]:
    """One-sided KS ``D+ = max_t F_row(t) - F0(t)`` of each row of ``s`` against ``F0``, the
    CDF of all of ``s`` pooled: the largest excess of the row's CDF over ``F0``, taken at the
    row's own values (``F0`` from one sort of the pool, ties counted on the right)."""
    b, n = s.shape
    srt = np.sort(s.numpy(), axis=1)
    flat = srt.ravel()
    order = np.argsort(flat)
    v = flat[order]
    last = np.where(np.append(v[1:] != v[:-1], True), np.arange(len(v)), len(v))
    last = np.minimum.accumulate(last[::-1])[::-1]  # last index of each value's run of ties
    f0 = np.empty(len(v))
    f0[order] = (last + 1) / len(v)
    excess = np.arange(1, n + 1) / n - f0.reshape(b, n)
    return torch.from_numpy(np.maximum(excess.max(axis=1), 0.0))


def ks_critical(n: int, m: int, alpha: float = ALPHA) -> float:
    """One-sided two-sample KS critical value at level ``alpha`` (asymptotic)."""
    return math.sqrt(math.log(1 / alpha) / 2 * (1 / n + 1 / m))


def _quantiles(v: Tensor) -> dict[str, float]:
    q = np.quantile(v.double().numpy(), QUANTILES)
    return {f"q{p:g}": float(x) for p, x in zip(QUANTILES, q, strict=True)}


def relabelling_test(
    x: Float[Tensor, "n d"],
    public: Float[Tensor, "p d"],
    holdout: Float[Tensor, "h d"],
    *,
    alpha: float = ALPHA,
    n_relabel: int = N_RELABEL,
    seed: int = 0,
    holdout_name: str = "holdout",
    generator: torch.Generator | None = None,
) -> MemorisationResult:
    """The memorisation test of rows ``x`` against the rows a generator saw (``public``) and an
    equally real set it did not (``holdout``); see the module docstring. The relabellings come
    from stream ``memorisation.relabel`` of ``seed``, or from ``generator`` when given."""
    if x.ndim != 2 or len(x) < 1 or len({x.shape[1], public.shape[1], holdout.shape[1]}) != 1:
        raise ConfigError(
            f"need [n >= 1, d] rows of the real rows' width, got {tuple(x.shape)}", field="acts"
        )
    if not torch.isfinite(x).all():
        raise ConfigError("rows must be finite", field="acts")
    n, n_pub, n_hold = len(x), len(public), len(holdout)
    if n_pub < 1 or n_hold < 1:
        raise ConfigError(f"need public and holdout rows, got {n_pub} and {n_hold}", field="real")
    observed = row_statistic(x, public, holdout)
    pooled = torch.cat([public, holdout]).double()
    k = neighbours_k(n_pub, n_hold)
    dist, idx = nearest_k(x, pooled, k)
    g = generator if generator is not None else rng.generator(seed, "memorisation.relabel")
    block = max(1, 1_000_000 // (n * HEAD))  # relabellings per block: <= 1M labels
    null = [observed[None]]
    for i in range(0, n_relabel, block):
        labels = random_labellings(len(pooled), n_hold, min(block, n_relabel - i), g)
        null.append(labelled_statistic(dist, idx, labels))
    s = torch.cat(null)  # [B + 1, n]: the observed labelling first
    pool = s.flatten()
    d = ks_above(s)
    d_obs, d_null = float(d[0]), d[1:]
    exceed = int((d_null >= d_obs).sum())
    p_value = (1 + exceed) / (n_relabel + 1)
    allowed = math.floor(alpha * (n_relabel + 1) + 1e-9) - 1  # relabellings that may reach D+
    if allowed < 0:
        threshold = math.inf
    else:
        threshold = float(d_null.sort(descending=True).values[allowed])
    return MemorisationResult(
        n=n,
        n_public=n_pub,
        n_holdout=n_hold,
        holdout=holdout_name,
        quantiles=_quantiles(observed),
        null_quantiles=_quantiles(pool),
        closer_to_public=float((observed < 0).double().mean()),
        closer_to_public_null=float((pool < 0).double().mean()),
        ks=d_obs,
        threshold=threshold,
        threshold_asymptotic=ks_critical(n, (n_relabel + 1) * n, alpha),
        p_value=p_value,
        refused=0 <= allowed and exceed <= allowed,
        alpha=alpha,
        n_relabel=n_relabel,
        seed=seed,
    )


def holdout_rows(track: Any) -> tuple[Float[Tensor, "h d"], str]:
    """The holdout ``H`` of ``track`` and its name: the scorer's reference half of the held-out
    split, which is the organiser's private test split when the track carries one
    (``challenge.private.with_test_split``), else the published held-out split."""
    rows = track.acts("heldout")[track.reference_rows()]
    private = "test_split" in getattr(track, "meta", {})
    where = "private test split" if private else "published held-out split"
    return rows, f"reference half of the {where}"


def memorisation_test(
    acts: Float[Tensor, "n d"],
    track: Any,
    *,
    alpha: float = ALPHA,
    n_relabel: int = N_RELABEL,
    seed: int = 0,
) -> MemorisationResult:
    """The memorisation test of a submission's activations on ``track``: ``P`` = the whole
    public split, ``H`` = :func:`holdout_rows`. Not part of validation (yet)."""
    holdout, name = holdout_rows(track)
    return relabelling_test(
        acts,
        track.acts("public"),
        holdout,
        alpha=alpha,
        n_relabel=n_relabel,
        seed=seed,
        holdout_name=name,
    )


def real_resamples(
    real: Float[Tensor, "r d"],
    n_public: int,
    n_holdout: int,
    n: int,
    n_resamples: int,
    *,
    alpha: float = ALPHA,
    n_relabel: int = N_RELABEL,
    seed: int = 0,
) -> list[MemorisationResult]:
    """Real-vs-real calibration check: ``n_resamples`` times, split ``real`` at random into a
    public part, a holdout part and a fresh sample of ``n`` rows, and test the fresh sample
    (splits and relabellings from stream ``memorisation.resamples``). A real sample never
    depends on which real rows are public, so each resample is refused with chance at most
    ``alpha``, independently (p-values uniform on the grid ``1 / (B + 1), ..., 1``, up to
    ties)."""
    if n_public + n_holdout + n > len(real):
        raise ConfigError(
            f"need {n_public} + {n_holdout} + {n} real rows, got {len(real)}", field="real"
        )
    g = rng.generator(seed, "memorisation.resamples")
    out = []
    for i in range(n_resamples):
        perm = torch.randperm(len(real), generator=g)
        pub, hold = real[perm[:n_public]], real[perm[n_public : n_public + n_holdout]]
        fresh = real[perm[n_public + n_holdout : n_public + n_holdout + n]]
        out.append(
            relabelling_test(
                fresh,
                pub,
                hold,
                alpha=alpha,
                n_relabel=n_relabel,
                seed=seed,
                holdout_name=f"real resample {i}",
                generator=g,
            )
        )
    return out


def false_refusal_bound(n_resamples: int, alpha: float = ALPHA, confidence: float = 1e-3) -> int:
    """Most refusals among ``n_resamples`` independent real resamples at false-refusal rate
    ``alpha``: the ``1 - confidence`` quantile of ``Binomial(n_resamples, alpha)``."""
    from scipy.stats import binom

    return int(binom.ppf(1 - confidence, n_resamples, alpha))


def summary(results: list[MemorisationResult]) -> dict[str, float]:
    """Rates of p-values at or below common levels over a list of results (a calibration)."""
    p = np.array([r.p_value for r in results])
    return {
        "n": float(len(p)),
        "refused": float(sum(r.refused for r in results)),
        **{f"p_le_{a:g}": float((p <= a).mean()) for a in (0.001, 0.01, 0.05, 0.1, 0.5)},
    }
