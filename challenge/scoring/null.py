"""The real-vs-real null band of a board, the unclipped score, and a second statistic.

The headline ``clip(2 (1 - AUC), 0, 1)`` says 1 for "indistinguishable", but what a second real
sample scores against the reference is itself noisy: the oracle entry (``heldout_real``) scores
an unclipped ``2 (1 - AUC)`` anywhere in a band around 1. This module measures that band from
the board's own oracle record, with the board's own classifier config, and adds a second
two-sample statistic that does not come from the classifier.

**Label swaps (the band).** The oracle record stores, slot by slot, the reference half's
features and the oracle half's (a disjoint real sample in the same contexts). Under the null
hypothesis the two are exchangeable, so each draw exchanges, independently per row with
probability 1/2, the reference and oracle features of that row (all its ``contexts_per_row``
slots together: the unit the scorer's folds and bootstrap keep together), and re-runs the
scorer's cross-fitted classifier (:func:`headline_auc`: the ``compare`` headline's AUC, same
folds and seeds, without the bootstrap intervals and KS diagnostics that do not enter the AUC).
The band is the 2.5-97.5 % quantile range of the unclipped score over ``n_swaps`` draws, at the
board's size (every row, both halves).

**Split halves (a check).** The stored slots also allow a real-vs-real comparison that never
pairs a reference row with its oracle partner: the rows are split at random into two halves, and
the reference features of one half are compared with the reference features of the other (and
the same for the oracle half). Row ``A_i`` and row ``B_i`` are put in the same slot (their
contexts differ; slots are i.i.d., and the classifier sees each point alone, so the null holds).
These draws have half the rows a side, so their spread is about sqrt(2) wider than the swap
band's: they check the swap band's centre and shape, they do not set the mark. They are
computed only when a half leaves the classifier enough training points to split
(:func:`classifier_can_split`).

**Second statistic: the energy distance** (Szekely-Rizzo, U-statistic form) between the entry's
and the reference's feature vectors, each feature standardised by the reference half's mean and
sd, rows with a non-finite feature dropped. It was chosen over a logistic-regression C2ST
because it needs no training, folds or seeds (one deterministic number per entry), it is zero
in expectation exactly when the two distributions are equal (a consistent test against every
alternative, where a linear classifier sees only differences along one direction and misses a
change of spread at equal mean), and it weighs all features jointly by distance rather than by
the splits a boosted tree finds, so it is a genuinely different view of the same features. Its
null comes from the same label swaps (no permutations per entry).

The band is cached beside the board (:data:`CACHE_NAME`, JSON; not ``*.json`` so it is never
taken for a record), keyed by the sha256 of the oracle record's bytes (JSON and ``.npz``), and
the null config: re-rendering is instant, and any change to the oracle record recomputes it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from jaxtyping import Bool, Float, Int

from challenge import checks, rng
from challenge.errors import ChallengeError
from challenge.scoring.classifier import classifier_scores, feature_matrix, mean_auc
from challenge.scoring.config import ScoreConfig
from challenge.scoring.report import ScoreReport

log = logging.getLogger(__name__)

ORACLE = "heldout_real"
"""The record whose two real halves make the band."""
CACHE_NAME = "null_band.cache"
"""The band's cache file beside a board's records (JSON)."""
CACHE_SCHEMA = "plateau-null-band/1"
COMMITTED_ROOT = Path(__file__).resolve().parents[2] / "leaderboard"
"""The repository's committed boards: their caches serve any board whose oracle record has the
same bytes (the key says so), e.g. a copy of a committed board."""
LEVEL = 0.95


@dataclass(frozen=True)
class NullConfig:
    """How many real-vs-real draws make the band."""

    n_swaps: int = 40
    """label-swap draws (each one cross-fitted classifier run: ~3 s at 1 thread on 2000 slots)"""
    n_splits: int = 10
    """split-half draws of each half (reference, oracle), at half the rows"""

    def __post_init__(self) -> None:
        checks.integer(self.n_swaps, "n_swaps", minimum=2)
        checks.integer(self.n_splits, "n_splits", minimum=0)


def unclipped_score(auc: float | np.ndarray) -> float | np.ndarray:
    """``2 (1 - AUC)``: the score before the clip to [0, 1] (above 1 when the classifier does
    worse than chance)."""
    out = 2.0 * (1.0 - np.asarray(auc, dtype=np.float64))
    return float(out) if out.ndim == 0 else out


def record_unclipped(rep: ScoreReport) -> float:
    """A record's unclipped score, from its headline AUC."""
    return float(unclipped_score(rep.headline.auc))


def headline_auc(ref: dict[str, np.ndarray], sub: dict[str, np.ndarray], cfg: ScoreConfig) -> float:
    """The AUC ``classifier.compare`` puts in its headline for these features (same cross-fitted
    classifier, folds and seeds), without its bootstrap interval and per-feature diagnostics."""
    return mean_auc(*classifier_scores(ref, sub, cfg))


def classifier_can_split(n_slots: int, cfg: ScoreConfig) -> bool:
    """Whether a fold's training set (both sides of ``n_slots`` slots less the held-out fold)
    holds the two leaves of ``min_samples_leaf`` points a tree needs to split at all (else every
    AUC is 0.5 and a band says nothing)."""
    c = cfg.classifier
    train = 2 * n_slots * (c.n_folds - 1) // c.n_folds
    return n_slots // cfg.contexts_per_row >= c.n_folds and train >= 2 * c.min_samples_leaf


# ---------------------------------------------------------------------------- the draws
def swap_draws(n_rows: int, n_swaps: int, seed: int) -> Bool[np.ndarray, "k n"]:
    """``[n_swaps, n_rows]``: whether draw ``k`` exchanges row ``j``'s two halves (probability
    1/2 each, ``scorer.null_swaps``; the first draws of a larger ``n_swaps`` are the same)."""
    g = np.random.default_rng(rng.seed_for(seed, "scorer.null_swaps"))
    return g.random((n_swaps, n_rows)) < 0.5


def swapped(
    ref: dict[str, np.ndarray], sub: dict[str, np.ndarray], rows: np.ndarray, contexts: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``ref`` and ``sub`` with the features of the rows where ``rows`` is true exchanged, in
    every context slot of the row (round-major slots: row ``j`` holds ``j, j + n, ...``)."""
    mask = np.tile(np.asarray(rows, dtype=bool), contexts)
    a = {k: np.where(mask, sub[k], ref[k]) for k in ref}
    b = {k: np.where(mask, ref[k], sub[k]) for k in ref}
    return a, b


def split_draws(n_rows: int, n_splits: int, seed: int) -> Int[np.ndarray, "k 2 h"]:
    """``[n_splits, 2, n_rows // 2]``: two disjoint random row halves per draw
    (``scorer.null_splits``)."""
    g = np.random.default_rng(rng.seed_for(seed, "scorer.null_splits"))
    h = n_rows // 2
    return np.stack([g.permutation(n_rows)[: 2 * h].reshape(2, h) for _ in range(n_splits)])


def half_slots(rows: np.ndarray, n_rows: int, contexts: int) -> np.ndarray:
    """The slot indices of ``rows`` in round-major order: new row ``i`` (old row ``rows[i]``)
    fills slots ``i, i + h, ...`` of a ``h = len(rows)``-row layout."""
    return np.concatenate([np.asarray(rows) + r * n_rows for r in range(contexts)])


# ---------------------------------------------------------------------------- energy distance
def standardiser(
    ref: dict[str, np.ndarray],
) -> tuple[list[str], Float[np.ndarray, " f"], Float[np.ndarray, " f"]]:
    """Feature names (sorted), and the reference half's mean and sd of each (finite values; an
    sd of 0 counts as 1)."""
    names = sorted(ref)
    cols = [np.asarray(ref[k], np.float64) for k in names]
    mu = np.array([c[np.isfinite(c)].mean() for c in cols])
    sd = np.array([c[np.isfinite(c)].std() for c in cols])
    return names, mu, np.where(sd > 0, sd, 1.0)


def standardised(feats: dict[str, np.ndarray], std) -> Float[np.ndarray, "m f"]:
    """The rows of ``feats`` with every feature finite, standardised by ``std``
    (:func:`standardiser`)."""
    names, mu, sd = std
    x = (feature_matrix(feats, names) - mu) / sd
    return x[np.isfinite(x).all(axis=1)]


def energy_distance(x: Float[np.ndarray, "n f"], y: Float[np.ndarray, "m f"]) -> float:
    """``2 E|X - Y| - E|X - X'| - E|Y - Y'|`` (Euclidean; U-statistic: the within-sample means
    leave out each point's distance to itself, so it is 0 in expectation for equal
    distributions and may fall slightly below 0)."""
    from scipy.spatial.distance import cdist

    n, m = len(x), len(y)
    if n < 2 or m < 2:
        return float("nan")
    xy = cdist(x, y).mean()
    xx = cdist(x, x).sum() / (n * (n - 1))
    yy = cdist(y, y).sum() / (m * (m - 1))
    return float(2 * xy - xx - yy)


def second_statistic(rep: ScoreReport) -> float | None:
    """The energy distance between a record's submission and reference features, standardised
    by its reference half (``None`` when the record stores no features)."""
    data = rep.data if rep.arrays else rep.load_arrays()
    if not data.has_features():
        return None
    std = standardiser(data.reference)
    return energy_distance(standardised(data.submission, std), standardised(data.reference, std))


# ---------------------------------------------------------------------------- the band
@dataclass
class NullBand:
    """A board's real-vs-real null: the unclipped scores and energy distances of the label
    swaps, their quantiles, and the split-half check."""

    key: str
    """what it was made from (:func:`band_key`)"""
    rows: int
    contexts: int
    n_swaps: int
    seed: int
    unclipped: list[float]
    """each swap's unclipped score 2 (1 - AUC)"""
    energy: list[float]
    """each swap's energy distance (oracle half vs reference half after the swap)"""
    splits: dict[str, list[float]] = field(default_factory=dict)
    """unclipped scores of the split halves, by half (``reference``, ``oracle``); empty when a
    half is too small for the classifier"""
    split_rows: int = 0
    """rows a side in a split-half draw"""
    seconds: float = 0.0
    """how long the draws took to make"""

    @property
    def lo(self) -> float:
        return float(np.quantile(self.unclipped, (1 - LEVEL) / 2))

    @property
    def hi(self) -> float:
        return float(np.quantile(self.unclipped, (1 + LEVEL) / 2))

    @property
    def median(self) -> float:
        return float(np.median(self.unclipped))

    @property
    def share_clipped(self) -> float:
        """The share of draws whose clipped score is 1.0 (unclipped at or above 1)."""
        return float(np.mean(np.asarray(self.unclipped) >= 1.0))

    @property
    def energy_hi(self) -> float:
        """The 97.5 % quantile of the swaps' energy distances: above it, an entry's features
        differ from real by more than a second real sample's do."""
        return float(np.quantile(self.energy, (1 + LEVEL) / 2))

    def split_band(self) -> tuple[float, float] | None:
        """2.5-97.5 % of the split-half draws of both halves together (``None``: none)."""
        v = [s for d in self.splits.values() for s in d]
        if not v:
            return None
        lo, hi = np.quantile(v, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
        return float(lo), float(hi)

    def indistinguishable(self, unclipped: float) -> bool:
        """The board's mark: an unclipped score at or above the band's lower end (inside the
        band, or above it: a classifier doing worse than a second real sample's is no evidence
        of a difference)."""
        return unclipped >= self.lo

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> NullBand:
        return cls(**doc)


def band_key(oracle: ScoreReport, ncfg: NullConfig) -> str:
    """sha256 over the oracle record's JSON and ``.npz`` bytes, its config and ``ncfg``."""
    h = hashlib.sha256(CACHE_SCHEMA.encode())
    path = Path(oracle.path or "")
    for p in (path, path.with_suffix(".npz")):
        h.update(hashlib.sha256(p.read_bytes()).digest())
    h.update(json.dumps(asdict(oracle.config), sort_keys=True).encode())
    h.update(json.dumps(asdict(ncfg), sort_keys=True).encode())
    return h.hexdigest()


def null_band(oracle: ScoreReport, ncfg: NullConfig = NullConfig(), key: str = "") -> NullBand:
    """The band of ``oracle``'s two real halves under the board's config (``oracle.config``):
    ``ncfg.n_swaps`` label swaps and ``ncfg.n_splits`` split halves of each half."""
    data = oracle.data if oracle.arrays else oracle.load_arrays()
    return band_of(data.reference, data.submission, oracle.config, ncfg, key)


def band_of(
    ref: dict[str, np.ndarray],
    sub: dict[str, np.ndarray],
    cfg: ScoreConfig,
    ncfg: NullConfig = NullConfig(),
    key: str = "",
) -> NullBand:
    """The band of two real samples' features ``ref`` and ``sub`` in the same slots
    (``{feature: [n c]}``, round-major), scored with ``cfg`` (:func:`null_band`)."""
    t0 = time.perf_counter()
    c = cfg.contexts_per_row
    m = len(next(iter(ref.values())))
    n = m // c
    std = standardiser(ref)
    unclipped, energy = [], []
    for k, rows in enumerate(swap_draws(n, ncfg.n_swaps, cfg.seed)):
        a, b = swapped(ref, sub, rows, c)
        unclipped.append(float(unclipped_score(headline_auc(a, b, cfg))))
        energy.append(energy_distance(standardised(b, std), standardised(a, std)))
        log.info(f"null band: swap {k + 1} of {ncfg.n_swaps}: {unclipped[-1]:.3f}")
    splits: dict[str, list[float]] = {}
    h = n // 2
    if ncfg.n_splits and classifier_can_split(h * c, cfg):
        draws = split_draws(n, ncfg.n_splits, cfg.seed)
        for half, feats in (("reference", ref), ("oracle", sub)):
            out = []
            for a_rows, b_rows in draws:
                a = {f: v[half_slots(a_rows, n, c)] for f, v in feats.items()}
                b = {f: v[half_slots(b_rows, n, c)] for f, v in feats.items()}
                out.append(float(unclipped_score(headline_auc(a, b, cfg))))
            splits[half] = out
    return NullBand(
        key=key,
        rows=n,
        contexts=c,
        n_swaps=ncfg.n_swaps,
        seed=cfg.seed,
        unclipped=unclipped,
        energy=energy,
        splits=splits,
        split_rows=h if splits else 0,
        seconds=round(time.perf_counter() - t0, 1),
    )


def _read_cache(p: Path, key: str) -> NullBand | None:
    try:
        doc = json.loads(p.read_text())
        if doc.get("schema") == CACHE_SCHEMA and doc.get("key") == key:
            return NullBand.from_json(doc["band"])
    except (OSError, ValueError, TypeError, KeyError):
        pass
    return None


def cached_band(oracle: ScoreReport, ncfg: NullConfig = NullConfig()) -> NullBand:
    """:func:`null_band` of the oracle record, from the cache beside it or a committed board's
    cache of the same key, else made and written beside it (:data:`CACHE_NAME`)."""
    key = band_key(oracle, ncfg)
    here = Path(oracle.path or ".").parent / CACHE_NAME
    others = sorted(COMMITTED_ROOT.rglob(CACHE_NAME)) if COMMITTED_ROOT.is_dir() else []
    for p in [here, *others]:
        band = _read_cache(p, key)
        if band is not None:
            break
    else:
        log.info(f"null band: {ncfg.n_swaps} label swaps of {oracle.path} (cached at {here})")
        band = null_band(oracle, ncfg, key)
    if _read_cache(here, key) is None:
        try:
            doc = {"schema": CACHE_SCHEMA, "key": key, "band": band.to_json()}
            here.write_text(json.dumps(doc, indent=1) + "\n")
        except OSError as e:  # a read-only board: the band is still shown
            log.warning(f"null band cache not written: {e}")
    return band


def board_band(
    recs: dict[Path, ScoreReport], ncfg: NullConfig = NullConfig()
) -> tuple[NullBand | None, str]:
    """The band of a board's records, or ``None`` and why not (no oracle record, no features
    stored, too few points for the classifier)."""
    oracle = [rep for rep in recs.values() if rep.submission.get("name") == ORACLE]
    if not oracle:
        return None, f"this board has no `{ORACLE}` record (no second real sample to draw from)"
    rep = oracle[0]
    try:
        data = rep.data if rep.arrays else rep.load_arrays()
    except ChallengeError as e:
        return None, f"the `{ORACLE}` record's arrays are unreadable ({e})"
    if not data.has_features():
        return None, f"the `{ORACLE}` record stores no per-point features"
    m = len(next(iter(data.reference.values())))
    if not classifier_can_split(m, rep.config):
        return None, (
            f"{m} points are too few for the classifier to split (min_samples_leaf "
            f"{rep.config.classifier.min_samples_leaf}): every AUC would be 0.5"
        )
    return cached_band(rep, ncfg), ""


# ---------------------------------------------------------------------------- rank changes
@dataclass
class RankChange:
    """How the ranked entries' order changes when ranked by the second statistic."""

    tau: float
    """Kendall's tau-b between the scores and minus the energy distances"""
    moved: list[tuple[str, int, int, int]]
    """``(name, score rank, last position of its tie group, position by energy distance)`` of
    each entry whose energy position falls outside its score-rank tie group's positions"""
    n: int
    positions: dict[str, int] = field(default_factory=dict)
    """each entry's position (1 = best) by energy distance"""
    shifted: list[tuple[str, int, int]] = field(default_factory=list)
    """``(name, position by score, position by energy distance)`` of every entry whose strict
    position changes (ties of the score ranks not counted as ties)"""


def rank_changes(entries: list[tuple[str, int, float, float]]) -> RankChange | None:
    """``[(name, rank, score, energy)]`` of ranked entries (board order; ``rank`` shared within
    a tie group) -> Kendall's tau and the entries that move (``None``: fewer than two)."""
    from scipy.stats import kendalltau

    entries = [e for e in entries if e[3] is not None and np.isfinite(e[3])]
    if len(entries) < 2:
        return None
    scores = np.array([e[2] for e in entries])
    energy = np.array([e[3] for e in entries])
    tau = kendalltau(scores, -energy).statistic
    group = {r: sum(1 for e in entries if e[1] == r) for r in {e[1] for e in entries}}
    moved, positions, shifted = [], {}, []
    for i, (name, r, _, en) in enumerate(entries):
        pos = positions[name] = 1 + int(np.sum(energy < en))
        last = r + group[r] - 1
        if not r <= pos <= last:
            moved.append((name, r, last, pos))
        if pos != i + 1:
            shifted.append((name, i + 1, pos))
    return RankChange(float(tau), moved, len(entries), positions, shifted)
