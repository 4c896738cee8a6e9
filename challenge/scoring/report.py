"""The score report: what was scored, the ranking numbers, per-feature diagnostics, provenance,
and its per-point arrays, with the one loader of stored records (:func:`load_report`).

A record is ``<name>.json`` (the ``plateau-score/2`` document; schema
``challenge/schemas/score_report.schema.json``, generated from :class:`ScoreReport`) beside
``<name>.npz`` (the arrays: per-point features ``submission/<f>`` and ``reference/<f>``,
out-of-fold classifier scores ``oof/*``, bootstrap scores ``bootstrap/score``, scored ``rows``).
Nothing outside ``challenge.scoring`` opens a record's files: read them with
:func:`load_report` and its typed :attr:`ScoreReport.data`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from jaxtyping import Float, Int
from pydantic import Field
from typing_extensions import TypedDict

from challenge.errors import ChallengeError
from challenge.metrics import Summary
from challenge.results import save_result, to_jsonable
from challenge.schemas import JSON_CONFIG
from challenge.scoring.config import (
    SCHEMA_ID,
    SCHEMA_NAME,
    SCORER_VERSION,
    ClassifierConfig,
    Fraction,
    ScoreConfig,
)
from challenge.submission import SubmissionMeta

__all__ = [
    "ClassifierConfig",
    "FeatureScore",
    "ScoreArrays",
    "ScoreHeadline",
    "ScoreProvenance",
    "ScoreReport",
    "ScoredTrack",
    "load_report",
    "plot_report",
    "validate_report",
]


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
class ScoreArrays:
    """A report's per-point arrays, typed (the ``.npz`` beside its JSON). ``m`` slots = scored
    rows x contexts per row, round-major; ``r`` cross-fitting repeats; ``b`` bootstrap draws."""

    reference: dict[str, Float[np.ndarray, " m"]]
    """per-point features of the reference half, by feature name"""
    submission: dict[str, Float[np.ndarray, " m"]]
    """per-point features of the submission, in the same slots"""
    oof_reference: Float[np.ndarray, "r m"] | None = None
    """out-of-fold classifier scores P(submission) of the reference points"""
    oof_submission: Float[np.ndarray, "r m"] | None = None
    """out-of-fold classifier scores of the submission's points"""
    bootstrap: Float[np.ndarray, " b"] | None = None
    """the headline's bootstrap scores (the same row draws for every entry of a seed)"""
    rows: Int[np.ndarray, " n"] | None = None
    """the submitted rows scored, in slot order"""

    @classmethod
    def of(cls, arrays: dict[str, np.ndarray]) -> ScoreArrays:
        """The typed view of a report's ``arrays`` dict (its ``.npz`` keys)."""

        def group(g: str) -> dict[str, np.ndarray]:
            return {k.split("/", 1)[1]: arrays[k] for k in arrays if k.startswith(f"{g}/")}

        return cls(
            reference=group("reference"),
            submission=group("submission"),
            oof_reference=arrays.get("oof/reference"),
            oof_submission=arrays.get("oof/submission"),
            bootstrap=arrays.get("bootstrap/score"),
            rows=arrays.get("rows"),
        )

    def has_features(self) -> bool:
        """Both groups' per-point features are stored, for the same feature names."""
        return bool(self.reference) and sorted(self.reference) == sorted(self.submission)


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

    def load_arrays(self) -> ScoreArrays:
        """Read the ``.npz`` beside ``self.path`` into ``arrays``; returns :attr:`data`
        (``ChallengeError`` naming the file when it is missing or unreadable)."""
        npz = Path(self.path or "").with_suffix(".npz")
        try:
            with np.load(npz) as z:
                self.arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise ChallengeError(f"arrays unreadable: {e}", file=str(npz)) from None
        return self.data

    @property
    def data(self) -> ScoreArrays:
        """The typed per-point arrays (empty groups when the report holds none)."""
        return ScoreArrays.of(self.arrays)

    def __getitem__(self, key: str) -> Any:
        """The JSON document's ``key`` (``report["headline"]["score"]``)."""
        return self.to_json()[key]

    def save(self, out_dir: str | Path, name: str) -> Path:
        """Write ``<out_dir>/<name>.json`` (+ ``.npz``); sets and returns ``self.path``."""
        self.path = save_result(out_dir, name, self.to_json(), self.arrays or None)
        return self.path


def load_report(path: str | Path, arrays: bool = True) -> ScoreReport:
    """The record at ``path`` (``<name>.json``; ``path`` set), with its ``.npz`` arrays when
    ``arrays`` (missing file: no arrays). Raises ``ChallengeError`` naming the file when it is
    not a readable ``plateau-score/2`` record."""
    path = Path(path)
    try:
        rep = ScoreReport.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ChallengeError(f"not a readable score record: {e}", file=str(path)) from None
    rep.path = path
    if arrays and path.with_suffix(".npz").exists():
        rep.load_arrays()
    return rep


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
