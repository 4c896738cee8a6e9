"""The scorer (v2): do submitted activations sit on plateaus like held-out real ones?

Design (docs/scoring.md):

1. **Slots.** ``n`` slots are drawn from the run seed; slot ``i`` holds a context prompt, ``k``
   random unit directions and an N(mu, Sigma) end point. Submitted row ``i`` (every submitted row
   by default, in a seeded order) and reference row ``i`` (the held-out *reference half*, see
   :func:`reference_rows`) are written in the same slot: every entry and the reference share
   contexts and randomness (a paired design). With ``contexts_per_row = c`` each row pair fills
   ``c`` slots (other contexts, directions and AP ends); folds and bootstrap keep a row's slots
   together.
2. **Probes at the point** (``challenge.probes``): the plateau radius around ``v`` (bisection
   along random directions) and P2 sharpness toward ``v``'s nearest public real activation by
   default, chosen by measured real-vs-N(mu, Sigma) separation; each gives per-point features.
3. **Headline: a classifier two-sample test.** A gradient-boosted classifier (scikit-learn)
   separates reference from submission features, cross-fitted over slot folds; the
   out-of-fold scores give an AUC, and ``score = clip(2 (1 - AUC), 0, 1)``: 1 when the
   submission's plateaus cannot be told from real ones, 0 when they always can. No division by
   a noisy spread.
4. **Precision.** A 95 % percentile interval from a bootstrap over slots (contexts with their
   reference and submission rows, resampled jointly); the bootstrap indices depend on the seed
   only, so two reports of one config are paired (``arrays["bootstrap/score"]``) and the
   leaderboard ranks entries by paired differences.

Per-feature KS statistics against the reference stay in every report as a diagnostic.
The result is a :class:`ScoreReport` written as a ``plateau-score/2`` JSON document (schema:
``challenge/schemas/score_report.schema.json``, generated from the class).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
from jaxtyping import Float
from pydantic import Field
from typing_extensions import TypedDict

import challenge
from challenge import checks, rng
from challenge import metrics as M
from challenge.directions import ActivationStats, gaussian_like
from challenge.distributed import DistributedConfig, resumable
from challenge.distributed_engine import distribute
from challenge.errors import ConfigError
from challenge.metrics import Summary
from challenge.models import LoadedModel, cache_root
from challenge.probes import ProbeConfig, Slots, run_probes, unit_directions
from challenge.results import provenance, save_result, to_jsonable
from challenge.schemas import JSON_CONFIG
from challenge.submission import SubmissionMeta

SCHEMA_ID = "plateau-score/2"
SCHEMA_NAME = "score_report"
SCORER_VERSION = "2.1"
"""Changes whenever the same inputs could score differently; part of every record's identity.
2.1: the AUC is the mean over cross-fitting repeats (``ClassifierConfig.n_repeats``)."""
FEATURES_VERSION = "2.0"
"""Changes whenever the same slots could probe to other per-point features: the key of the
cached reference features (a new headline, as in 2.1, re-uses them; :func:`rescore` re-makes a
record from its stored features)."""
SAME_FEATURES = frozenset({"2.0", "2.1"})
"""Scorer versions whose records hold features of :data:`FEATURES_VERSION`."""

Fraction = Annotated[float, Field(ge=0, le=1)]


@dataclass
class ClassifierConfig:
    """The two-sample classifier (scikit-learn ``HistGradientBoostingClassifier``)."""

    __pydantic_config__ = JSON_CONFIG

    n_folds: int = 5
    """Cross-fitting folds over slots (a slot's reference and submission rows share a fold)."""
    n_repeats: int = 5
    """Cross-fitting repeats, each with its own fold split; the AUC is their mean (one split's
    fold assignment moved the headline by up to 0.03; five repeats divide that by ~3,
    docs/scoring.md)."""
    max_iter: int = 100
    """Boosting iterations (no early stopping: the fit is deterministic)."""
    max_leaf_nodes: int = 8
    """Leaves per tree."""
    learning_rate: float = 0.1
    """Shrinkage."""
    min_samples_leaf: int = 20
    """Smallest leaf."""

    def __post_init__(self) -> None:
        checks.integer(self.n_folds, "n_folds", minimum=2)
        checks.integer(self.n_repeats, "n_repeats", minimum=1)
        checks.integer(self.max_iter, "max_iter", minimum=1)
        checks.integer(self.max_leaf_nodes, "max_leaf_nodes", minimum=2)
        checks.number(self.learning_rate, "learning_rate", positive=True)
        checks.integer(self.min_samples_leaf, "min_samples_leaf", minimum=1)


@dataclass
class ScoreConfig:
    """How a submission is probed and scored; part of every report (and of the leaderboard's
    identity: records made with another config are not ranked together)."""

    __pydantic_config__ = JSON_CONFIG

    n_points: int | None = None
    """Rows scored. ``None`` (official): every submitted row (as many as the reference half
    holds), each in ``contexts_per_row`` slots; an integer scores a seeded subset of that many
    rows (quick runs)."""
    probes: ProbeConfig = field(
        default_factory=lambda: ProbeConfig(probes=("radius", "p2"), n_directions=6, bisect_steps=7)
    )
    """The probes run at every point, and their constants."""
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    """The cross-fitted two-sample classifier."""
    contexts_per_row: int = 2
    """Contexts each scored row is probed in: row ``j`` (and its reference partner) fills slots
    ``j, j + n, ..., j + (c - 1) n``, each with its own context, directions and AP end. The
    estimand stays the per-(row, context) distribution; ``c`` buys precision where the rows run
    out (folds and bootstrap resample rows with all their slots; slots ``0 .. n - 1`` are the
    ``c = 1`` slots, so their features are shared with a ``c = 1`` run). Default 2: on
    ``smollm2-135m-l1`` v2.0.0 (1000 rows) one context per row left 3 of 7 entries above a seed
    sd of 0.025 (docs/scoring.md, "The board at two contexts per row")."""
    n_boot: int = 1000
    """Bootstrap resamples of the rows (the headline's interval)."""
    seed: int = 0
    """Run seed: slots (contexts, directions, AP ends), row order, folds and bootstrap use the
    ``scorer.*`` streams of ``challenge.rng``."""

    def __post_init__(self) -> None:
        if isinstance(self.probes, dict):
            self.probes = ProbeConfig(**self.probes)
        if isinstance(self.classifier, dict):
            self.classifier = ClassifierConfig(**self.classifier)
        if self.n_points is not None:
            checks.integer(self.n_points, "n_points", minimum=2 * self.classifier.n_folds)
        checks.integer(self.contexts_per_row, "contexts_per_row", minimum=1)
        checks.integer(self.n_boot, "n_boot", minimum=1)
        checks.integer(self.seed, "seed")

    def quick(self) -> ScoreConfig:
        """The same config made small for smoke runs: 40 points in one context each, 2
        directions, 4 bisection rounds, 11-point P2 paths, 100 bootstrap draws (its records are
        not ranked with full ones)."""
        from dataclasses import replace

        return replace(
            self,
            n_points=40,
            contexts_per_row=1,
            probes=replace(self.probes, n_directions=2, bisect_steps=4, p2_steps=11),
            n_boot=100,
        )


@dataclass
class ScoredTrack:
    """The track a report was scored on."""

    __pydantic_config__ = JSON_CONFIG

    id: str
    version: str
    manifest_sha256: Annotated[str, Field(pattern="^[0-9a-f]{64}$|^unknown$")]
    """sha256 of the track's ``manifest.json``: which published copy of the track."""
    units: dict[str, float]
    """The track's measured units (``Track.units``)."""
    data_sha256: Annotated[str | None, Field(pattern="^[0-9a-f]{64}$")] = None
    """sha256 of the track's content (``challenge.store.data_checksum``): equal for every build
    of the same data; ``None`` in records made before it was recorded."""


@dataclass
class ScoreHeadline:
    """The numbers a leaderboard ranks by."""

    __pydantic_config__ = JSON_CONFIG

    score: Fraction
    """``clip(2 (1 - AUC), 0, 1)`` of the cross-fitted classifier: 1 = indistinguishable from
    held-out real plateaus, 0 = always told apart."""
    ci: tuple[float, float]
    """95 % percentile bootstrap interval of ``score`` (slots resampled)."""
    auc: Annotated[float, Field(ge=0, le=1)]
    """Out-of-fold AUC of reference (0) vs submission (1), the mean over cross-fitting repeats."""
    n_points: int
    """Slots scored: rows x ``contexts_per_row`` (each slot holds one submission row, one
    reference row and one context)."""
    features: list[str]
    """The probe features the classifier used (fixed per track and scorer version)."""
    mean_ks: Fraction
    """Mean per-feature KS to the reference (diagnostic)."""


@dataclass
class FeatureScore:
    """One probe feature of a submission against the reference (a diagnostic)."""

    __pydantic_config__ = JSON_CONFIG

    ks: Fraction
    ks_ci: tuple[float, float]
    """95 % percentile bootstrap interval of ``ks``."""
    auc: Annotated[float, Field(ge=0, le=1)]
    """AUC of this feature alone (reference 0, submission 1; 0.5 = no difference)."""
    submission: Summary
    reference: Summary


class ScoreProvenance(TypedDict):
    """How a report was made (``challenge.results.provenance``): the keys every report has; the
    model's and engine's other fields follow."""

    suite_version: str
    torch: str
    model: str
    write_hook: str
    read_hook: str


@dataclass
class ScoreReport:
    """A score report: what was scored (``submission``, ``track``, ``config``), the ranking
    numbers (``headline``), per-feature diagnostics, provenance and, for a submission folder,
    its validation. ``to_json()`` is the ``plateau-score/2`` document; ``arrays`` (per-point
    features ``submission/<f>``, ``reference/<f>``, out-of-fold classifier scores and the
    bootstrap scores ``bootstrap/score``) go to the ``.npz``."""

    __pydantic_config__ = JSON_CONFIG

    schema: Literal["plateau-score/2"] = field(default=SCHEMA_ID, kw_only=True)
    scorer_version: str = field(default=SCORER_VERSION, kw_only=True)
    submission: SubmissionMeta
    track: ScoredTrack
    config: ScoreConfig
    headline: ScoreHeadline
    features: Annotated[dict[str, FeatureScore], Field(min_length=1)]
    provenance: ScoreProvenance
    validation: dict[str, Any] | None = None
    """The validation report's checks and statistics (records always carry it)."""
    arrays: dict[str, Any] = field(default_factory=dict, repr=False)
    path: Path | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        doc = {
            "schema": self.schema,
            "scorer_version": self.scorer_version,
            "submission": self.submission,
            "track": self.track,
            "config": self.config,
            "headline": self.headline,
            "features": self.features,
            "provenance": self.provenance,
        }
        if self.validation is not None:
            doc["validation"] = self.validation
        return to_jsonable(doc)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ScoreReport:
        """The report of a ``plateau-score/2`` document (``KeyError`` / ``TypeError`` /
        ``ConfigError`` when it is not one)."""
        if doc.get("schema") != SCHEMA_ID:
            raise KeyError(f"schema is {doc.get('schema')!r}, not {SCHEMA_ID!r}")
        return cls(
            schema=doc["schema"],
            scorer_version=doc["scorer_version"],
            submission=doc["submission"],
            track=ScoredTrack(**doc["track"]),
            config=ScoreConfig(**doc["config"]),
            headline=ScoreHeadline(**doc["headline"]),
            features={k: FeatureScore(**v) for k, v in doc["features"].items()},
            provenance=doc["provenance"],
            validation=doc.get("validation"),
        )

    def __getitem__(self, key: str) -> Any:
        """The JSON document's ``key`` (``report["headline"]["score"]``)."""
        return self.to_json()[key]

    def save(self, out_dir: str | Path, name: str) -> Path:
        """Write ``<out_dir>/<name>.json`` (+ ``.npz``); sets and returns ``self.path``."""
        self.path = save_result(out_dir, name, self.to_json(), self.arrays or None)
        return self.path


# ------------------------------------------------------------------------------ data of a run
def reference_rows(track) -> torch.Tensor:
    """The held-out *reference half*: the scorer's real sample. It is fixed per track (seed 0
    of ``scorer.reference``, whatever the run seed) so the other half stays a disjoint real
    sample: the oracle entry (``heldout_real``) and the size of a submission (:func:`n_slots`)."""
    n = len(track.acts("heldout"))
    return rng.subset(n, n // 2, 0, "scorer.reference")


def oracle_rows(track) -> torch.Tensor:
    """The held-out rows outside the reference half (the oracle's real sample)."""
    n = len(track.acts("heldout"))
    mask = torch.ones(n, dtype=torch.bool)
    mask[reference_rows(track)] = False
    return torch.nonzero(mask)[:, 0]


def n_slots(track) -> int:
    """Rows a submission carries: the size of the reference half."""
    return len(track.acts("heldout")) // 2


def make_slots(track, n: int, cfg: ScoreConfig) -> Slots:
    """The ``n * cfg.contexts_per_row`` slots of ``n`` rows, round-major (round ``r`` is slots
    ``r n .. (r + 1) n - 1``). Slot ``i``'s context comes from a seeded permutation of the
    context split (repeated when the slots exceed it), its radius directions and AP end from
    the ``scorer.*`` streams of ``cfg.seed``, drawn round after round from one generator: round
    0 is the ``c = 1`` run's slots, bit for bit."""
    m = n * cfg.contexts_per_row
    n_ctx = len(track.acts("context"))
    g = rng.generator(cfg.seed, "scorer.contexts")
    ctx = torch.cat([torch.randperm(n_ctx, generator=g) for _ in range(-(-m // n_ctx))])[:m]
    stats = ActivationStats.fit(track.acts("public"))
    k = cfg.probes.n_directions
    g_dir = rng.generator(cfg.seed, "scorer.directions")
    g_ap = rng.generator(cfg.seed, "scorer.ap_ends")
    rounds = range(cfg.contexts_per_row)
    return Slots(
        tokens=track.tokens("context")[ctx],
        context_acts=track.acts("context")[ctx],
        dirs=torch.cat([unit_directions(n, k, track.d_model, g_dir) for _ in rounds]),
        ap_ends=torch.cat([gaussian_like(stats, n, g_ap) for _ in rounds]),
    )


def track_checksum(track) -> str:
    """sha256 of the track's ``manifest.json`` (``"unknown"`` for a track held only in memory)."""
    return (
        hashlib.sha256((Path(track.path) / "manifest.json").read_bytes()).hexdigest()
        if track.path
        else "unknown"
    )


def features_cache_path(
    track, cfg: ScoreConfig, n: int, round_: int = 0, points: torch.Tensor | None = None
) -> Path:
    """Cache file of the features of ``n`` rows in context round ``round_`` (slots
    ``round_ n .. (round_ + 1) n - 1``): the reference half's (``points`` None; round 0 keeps
    the key of a ``c = 1`` run) or those of ``points`` (keyed by their bytes)."""
    key = {
        "probes": asdict(cfg.probes),
        "seed": cfg.seed,
        "n": n,
        "manifest": track_checksum(track),
        "scorer": FEATURES_VERSION,
        "suite": challenge.__version__,
    }
    if round_:
        key["round"] = round_
    prefix = "ref"
    if points is not None:
        raw = points.detach().cpu().contiguous().numpy().tobytes()
        key["points"] = hashlib.sha256(raw).hexdigest()
        prefix = "sub"
    h = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    root = cache_root() / "scores" / track.spec.track_id / f"v{track.spec.version}"
    return root / f"{prefix}_{h}.npz"


def probe_features(
    track, engine, points: torch.Tensor, slots: Slots, cfg: ScoreConfig, path: Path | None
) -> dict[str, np.ndarray]:
    """:func:`challenge.probes.run_probes` of ``points`` in ``slots``, read from / written to
    the cache file ``path`` when one is given (written whole or not at all)."""
    if path is not None and path.exists():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    feats = run_probes(engine, points, slots, track.acts("public"), track.units, cfg.probes)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **feats)
        tmp.replace(path)
    return feats


def round_features(
    track,
    engine,
    points: torch.Tensor | None,
    slots: Slots,
    n: int,
    cfg: ScoreConfig,
    cache: bool = True,
) -> dict[str, np.ndarray]:
    """Features of the ``n`` rows ``points`` (``None``: the reference half in its
    ``scorer.reference_order``) in every context round of ``slots``, round-major; each round
    cached per track, probe config, seed, ``n`` and round (and the points' bytes) unless
    ``cache`` is false or the track is held only in memory."""
    if points is None:
        ref = track.acts("heldout")[reference_rows(track)]
        rows = ref[rng.subset(len(ref), n, cfg.seed, "scorer.reference_order")]
    else:
        rows = points
    parts = []
    for r in range(cfg.contexts_per_row):
        path = features_cache_path(track, cfg, n, r, points) if cache and track.path else None
        parts.append(probe_features(track, engine, rows, slots.take(r * n, (r + 1) * n), cfg, path))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def reference_features(track, engine, slots: Slots, n: int, cfg: ScoreConfig) -> dict:
    """Probe features of the reference half's ``n`` rows in every slot (row order from the
    ``scorer.reference_order`` stream); cached per track, probe config, seed, ``n`` and round."""
    return round_features(track, engine, None, slots, n, cfg)


# -------------------------------------------------------------------------- the two-sample test
def fold_of_slots(
    n: int, n_folds: int, seed: int, repeat: int = 0, contexts: int = 1
) -> np.ndarray:
    """Fold index of each of the ``n * contexts`` slots (round-major) in cross-fitting repeat
    ``repeat``: a seeded permutation of the ``n`` rows dealt round-robin; a row's slots share
    its fold."""
    perm = torch.randperm(n, generator=rng.generator(seed, "scorer.folds", repeat)).numpy()
    folds = np.empty(n, dtype=np.int64)
    folds[perm] = np.arange(n) % n_folds
    return np.tile(folds, contexts)


def out_of_fold_scores(
    ref: Float[np.ndarray, "n f"], sub: Float[np.ndarray, "n f"], cfg: ScoreConfig
) -> tuple[Float[np.ndarray, "r n"], Float[np.ndarray, "r n"]]:
    """Cross-fitted classifier scores ``P(submission | features)`` of each reference and each
    submission row, one row per cross-fitting repeat; a slot's two rows, and every slot of a row
    (``cfg.contexts_per_row``), are held out together."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    n, k = len(ref), cfg.contexts_per_row
    c = cfg.classifier
    s_ref, s_sub = np.empty((c.n_repeats, n)), np.empty((c.n_repeats, n))
    for r in range(c.n_repeats):
        folds = fold_of_slots(n // k, c.n_folds, cfg.seed, r, k)
        for f in range(c.n_folds):
            tr, te = folds != f, folds == f
            X = np.concatenate([ref[tr], sub[tr]])
            y = np.r_[np.zeros(tr.sum()), np.ones(tr.sum())]
            clf = HistGradientBoostingClassifier(
                max_iter=c.max_iter,
                max_leaf_nodes=c.max_leaf_nodes,
                learning_rate=c.learning_rate,
                min_samples_leaf=c.min_samples_leaf,
                early_stopping=False,
                random_state=rng.seed_for(cfg.seed, "scorer.folds", r),
            )
            clf.fit(X, y)
            s_ref[r, te] = clf.predict_proba(ref[te])[:, 1]
            s_sub[r, te] = clf.predict_proba(sub[te])[:, 1]
    return s_ref, s_sub


def auc(neg: np.ndarray, pos: np.ndarray) -> float:
    """P(pos > neg) + P(pos = neg) / 2 (the Mann-Whitney AUC, ties counted half; NaN dropped)."""
    from scipy.stats import rankdata

    neg, pos = neg[np.isfinite(neg)], pos[np.isfinite(pos)]
    if not len(neg) or not len(pos):
        return 0.5
    r = rankdata(np.concatenate([neg, pos]))
    return float((r[len(neg) :].sum() - len(pos) * (len(pos) + 1) / 2) / (len(neg) * len(pos)))


def mean_auc(neg: Float[np.ndarray, "r n"], pos: Float[np.ndarray, "r m"]) -> float:
    """The mean over cross-fitting repeats (rows) of each repeat's :func:`auc`."""
    neg, pos = np.atleast_2d(neg), np.atleast_2d(pos)
    return float(np.mean([auc(a, b) for a, b in zip(neg, pos, strict=True)]))


def score_of_auc(a: float | np.ndarray) -> float | np.ndarray:
    """``clip(2 (1 - AUC), 0, 1)``."""
    return np.clip(2.0 * (1.0 - np.asarray(a, dtype=np.float64)), 0.0, 1.0)


def bootstrap_slots(n: int, n_boot: int, seed: int, contexts: int = 1) -> np.ndarray:
    """``[n_boot, n * contexts]`` slot indices: ``n`` rows drawn with replacement, each with its
    ``contexts`` slots (round-major layout); the same for every entry of a run seed and ``n``
    (paired comparisons)."""
    g = np.random.default_rng(rng.seed_for(seed, "scorer.bootstrap"))
    rows = g.integers(0, n, size=(n_boot, n))
    return np.concatenate([rows + r * n for r in range(contexts)], axis=1)


def headline_interval(
    s_ref: Float[np.ndarray, "r n"],
    s_sub: Float[np.ndarray, "r n"],
    n_boot: int,
    seed: int,
    contexts: int = 1,
) -> tuple[float, tuple[float, float], np.ndarray]:
    """Mean AUC over the repeats, the 95 % percentile interval of the score, and the bootstrap
    scores (each draw resamples rows with their ``contexts`` slots, the same in every repeat)."""
    s_ref, s_sub = np.atleast_2d(s_ref), np.atleast_2d(s_sub)
    a = mean_auc(s_ref, s_sub)
    draws = bootstrap_slots(s_ref.shape[1] // contexts, n_boot, seed, contexts)
    boot = np.array([score_of_auc(mean_auc(s_ref[:, i], s_sub[:, i])) for i in draws])
    lo, hi = np.quantile(boot, [0.025, 0.975])
    return a, (float(lo), float(hi)), boot


def stored_features(arrays: dict[str, np.ndarray], group: str) -> dict[str, np.ndarray]:
    """``{feature: [n]}`` of ``group`` (``"reference"`` or ``"submission"``) from a report's
    arrays or its ``.npz`` (keys ``<group>/<feature>``)."""
    return {k.split("/", 1)[1]: arrays[k] for k in arrays if k.startswith(f"{group}/")}


def feature_matrix(feats: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
    return np.stack([np.asarray(feats[k], np.float64) for k in names], axis=1)


def compare(
    ref: dict[str, np.ndarray], sub: dict[str, np.ndarray], cfg: ScoreConfig
) -> tuple[ScoreHeadline, dict[str, FeatureScore], dict[str, np.ndarray]]:
    """The headline, per-feature diagnostics and arrays of one submission against the reference
    (both ``{feature: [n c]}`` in the same slots, round-major for ``c = cfg.contexts_per_row``)."""
    names = sorted(ref)
    m = len(ref[names[0]])
    if m % cfg.contexts_per_row:
        raise ConfigError(
            f"{m} slots are not {cfg.contexts_per_row} contexts per row", field="contexts_per_row"
        )
    s_ref, s_sub = out_of_fold_scores(feature_matrix(ref, names), feature_matrix(sub, names), cfg)
    a, ci, boot = headline_interval(s_ref, s_sub, cfg.n_boot, cfg.seed, cfg.contexts_per_row)
    per = {}
    for k in names:
        r, s = ref[k][np.isfinite(ref[k])], sub[k][np.isfinite(sub[k])]
        if not len(r) or not len(s):
            raise ConfigError(f"feature {k!r} is NaN on every point", field="probes")
        ks = M.ks_bootstrap(s, r, n_boot=min(cfg.n_boot, 200), seed=cfg.seed)
        per[k] = FeatureScore(
            ks=ks["stat"],
            ks_ci=(ks["low"], ks["high"]),
            auc=auc(ref[k], sub[k]),
            submission=M.summarise(s),
            reference=M.summarise(r),
        )
    head = ScoreHeadline(
        score=float(score_of_auc(a)),
        ci=ci,
        auc=a,
        n_points=s_ref.shape[-1],
        features=names,
        mean_ks=float(np.mean([v.ks for v in per.values()])),
    )
    arrays = {f"submission/{k}": v for k, v in sub.items()}
    arrays |= {f"reference/{k}": v for k, v in ref.items()}
    arrays |= {"oof/reference": s_ref, "oof/submission": s_sub, "bootstrap/score": boot}
    return head, per, arrays


def score_points(
    track,
    lm: LoadedModel,
    points: torch.Tensor,
    cfg: ScoreConfig,
    meta: SubmissionMeta | None = None,
    progress: bool = True,
    distributed: DistributedConfig | None = None,
    cache: bool = True,
) -> ScoreReport:
    """Score report (with its arrays) for a set of candidate activations (``progress``: a bar
    per engine call on stderr). Every row is scored unless ``cfg.n_points`` asks for fewer.
    Each context round's features are cached (:func:`features_cache_path`) unless ``cache`` is
    false: scoring the same rows again, or with more contexts per row, probes only what is new.
    ``distributed``: the probes' engine chunks run on those workers
    (``challenge.distributed_engine``; the same report, bit for bit), resumable after an
    interruption."""
    n_max = min(len(points), n_slots(track))
    n = n_max if cfg.n_points is None else min(cfg.n_points, n_max)
    if n < 2 * cfg.classifier.n_folds:
        raise ConfigError(
            f"{n} points cannot be cross-fitted over {cfg.classifier.n_folds} folds",
            field="n_points",
        )
    engine = distribute(track.engine(lm, progress=progress), lm.spec, distributed)
    slots = make_slots(track, n, cfg)
    rows = rng.subset(len(points), n, cfg.seed, "scorer.rows")
    key = ("score", track_checksum(track), cfg, lm.spec, points[rows])
    with resumable(distributed, *key):
        ref = round_features(track, engine, None, slots, n, cfg, cache)
        sub = round_features(track, engine, points[rows], slots, n, cfg, cache)
    head, per, arrays = compare(ref, sub, cfg)
    arrays["rows"] = rows.numpy()
    return ScoreReport(
        submission=meta or {},
        track=ScoredTrack(
            id=track.spec.track_id,
            version=track.spec.version,
            manifest_sha256=track_checksum(track),
            units=track.units,
            data_sha256=track.data_sha256,
        ),
        config=cfg,
        headline=head,
        features=per,
        provenance=provenance(lm.provenance | engine.describe()),
        arrays=arrays,
    )


def validate_report(report: ScoreReport | dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` unless the report matches its committed schema."""
    from challenge.schemas import validate

    validate(report.to_json() if isinstance(report, ScoreReport) else report, SCHEMA_NAME)


def plot_report(report: ScoreReport, path: Path) -> Path:
    """Histograms of each feature: submission vs held-out real."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from challenge.plots import save_figure

    arrays = report.arrays
    feats = list(report.features)
    cols = min(5, len(feats))
    rows = (len(feats) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax, k in zip(axes.flat, feats, strict=False):
        a, b = arrays[f"reference/{k}"], arrays[f"submission/{k}"]
        a, b = a[np.isfinite(a)], b[np.isfinite(b)]
        edges = np.histogram_bin_edges(np.concatenate([a, b]), bins=20)
        ax.hist(a, bins=edges, alpha=0.5, label="held-out real", color="#1f77b4")
        ax.hist(b, bins=edges, alpha=0.5, label="submission", color="#2ca02c")
        ax.set_title(f"{k}  KS {report.features[k].ks:.2f}", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(feats) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    h = report.headline
    fig.suptitle(
        f"{report.submission.get('name', '?')} on {report.track.id}: score {h.score:.3f} "
        f"[{h.ci[0]:.3f}, {h.ci[1]:.3f}], AUC {h.auc:.3f}, {h.n_points} points",
        fontsize=10,
    )
    return save_figure(fig, path, dpi=90)


def score_submission(
    folder: str | Path,
    track,
    lm: LoadedModel,
    cfg: ScoreConfig | None = None,
    out: Path | None = None,
    distributed: DistributedConfig | None = None,
) -> ScoreReport:
    """Validate, score and (if ``out``) write ``<out>/<name>.json`` + ``.npz`` + ``.png``
    (``distributed``: see :func:`score_points`)."""
    from challenge.submission import read_submission
    from challenge.validate import validate_submission

    cfg = cfg or ScoreConfig()
    rep = validate_submission(folder, track)
    meta, acts = read_submission(folder)
    report = score_points(track, lm, acts, cfg, meta, distributed=distributed)
    report.validation = {"checks": rep.checks, **rep.stats}
    validate_report(report)
    if out is not None:
        report.save(out, meta["name"])
        plot_report(report, Path(out) / f"{meta['name']}.png")
    return report


def rescore(path: str | Path, classifier: ClassifierConfig | None = None) -> ScoreReport:
    """Re-make the record ``<name>.json`` (+ ``.npz``, ``.png``) at ``path`` under this scorer
    version with ``classifier`` (default: the default classifier) from the per-point features
    it stores: no model run. Probes, seed, points and bootstrap stay the record's own. A record
    whose features are not of this :data:`FEATURES_VERSION` is refused (``ConfigError``: score
    the submission again). The provenance names the scorer version it was re-made from."""
    from dataclasses import replace
    from datetime import date

    path = Path(path)
    old = ScoreReport.from_json(json.loads(path.read_text()))
    if old.scorer_version not in SAME_FEATURES:
        raise ConfigError(
            f"{path}: scored by scorer {old.scorer_version}, whose features this scorer "
            f"({SCORER_VERSION}) cannot re-use; score the submission again",
            field="scorer_version",
        )
    cfg = replace(old.config, classifier=classifier or ClassifierConfig())
    with np.load(path.with_suffix(".npz")) as z:
        arrays = {k: z[k] for k in z.files}
    ref, sub = stored_features(arrays, "reference"), stored_features(arrays, "submission")
    if not ref or sorted(ref) != sorted(sub) or "rows" not in arrays:
        raise ConfigError(
            f"{path.with_suffix('.npz')}: no per-point features of the submission and the "
            "reference stored; score the submission again",
            field="arrays",
        )
    head, per, new = compare(ref, sub, cfg)
    new["rows"] = arrays["rows"]
    prov = dict(old.provenance) | {
        "suite_version": challenge.__version__,
        "rescored": {"from_scorer": old.scorer_version, "date": date.today().isoformat()},
    }
    rep = ScoreReport(
        submission=old.submission,
        track=old.track,
        config=cfg,
        headline=head,
        features=per,
        provenance=prov,
        validation=old.validation,
        arrays=new,
    )
    validate_report(rep)
    rep.save(path.parent, path.stem)
    plot_report(rep, path.with_suffix(".png"))
    return rep
