"""The scorer's configuration and identity: what a record was scored with.

``ScoreConfig`` (probes, classifier, contexts per row, bootstrap, seed) is part of every record and
of the leaderboard's identity (records of other configs are not ranked together);
``SCORER_VERSION`` / ``FEATURES_VERSION`` say when the same inputs could score or probe
differently.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated

from pydantic import Field

from challenge import checks
from challenge.probes import ProbeConfig
from challenge.schemas import JSON_CONFIG

BOARD_ROOT = Path("leaderboard")
"""Default leaderboard root: records go to ``<root>/<track id>/``."""
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
        default_factory=lambda: ProbeConfig(
            probes=("radius", "p2", "p2dir"), n_directions=6, bisect_steps=7
        )
    )
    """The probes run at every point, and their constants. ``p2dir`` joined the board on
    2026-12-08 (challenge v3; docs/joint-probes.md, "At the board's size"): without it, real
    radius and sharpness blocks glued across points score inside the real-vs-real band."""
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
        return replace(
            self,
            n_points=40,
            contexts_per_row=1,
            probes=replace(self.probes, n_directions=2, bisect_steps=4, p2_steps=11),
            n_boot=100,
        )
