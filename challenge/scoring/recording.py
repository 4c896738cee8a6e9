"""Scoring and recording: points -> report, a validated submission -> report, a folder -> record.

The flow of a submission (each arrow one call, each written file written once)::

    folder --validate_submission--> ValidatedSubmission --score_submission--> ScoreReport
           --write_record--> <board>/<track id>/<name>.json + .npz + .png

:func:`record` is that flow for the leaderboard (the name checked before it becomes a path, an
existing record refused unless ``replace``); :func:`rescore` re-makes a record from the
per-point features it stores (no model run).
"""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any, Literal

import torch
from jaxtyping import Float

import challenge
from challenge import rng
from challenge.distributed import DistributedConfig, resumable
from challenge.distributed_engine import distribute
from challenge.errors import ConfigError, SubmissionError
from challenge.models import LoadedModel
from challenge.results import provenance
from challenge.scoring.classifier import compare
from challenge.scoring.config import (
    BOARD_ROOT,
    SAME_FEATURES,
    SCORER_VERSION,
    ClassifierConfig,
    ScoreConfig,
)
from challenge.scoring.probing import make_slots, round_features, track_identity
from challenge.scoring.reference import published_reference
from challenge.scoring.report import (
    ScoredTrack,
    ScoreReport,
    load_report,
    plot_report,
    validate_report,
)
from challenge.scoring.validation import ValidatedSubmission, validate_submission
from challenge.submission import SubmissionMeta, check_name
from challenge.track import TrackLike


def score_points(
    track: TrackLike,
    lm: LoadedModel,
    points: Float[torch.Tensor, "n d"],
    cfg: ScoreConfig,
    meta: SubmissionMeta | None = None,
    progress: bool = True,
    distributed: DistributedConfig | None = None,
    cache: bool = True,
    reference: Literal["published", "probe"] = "published",
) -> ScoreReport:
    """Score report (with its arrays) for a set of candidate activations (``progress``: a bar
    per engine call on stderr). Every row is scored unless ``cfg.n_points`` asks for fewer.
    Each context round's features are cached (``probing.features_cache_path``) unless ``cache``
    is false: scoring the same rows again, or with more contexts per row, probes only what is
    new. ``distributed``: the probes' engine chunks run on those workers
    (``challenge.distributed_engine``; the same report, bit for bit), resumable after an
    interruption.

    ``reference``: ``"published"`` reads the reference half's features published with the
    track for this config and ``n`` when there are any (``challenge.scoring.reference``: the
    board's own, so every entry is compared with the same features, and only the submission
    is probed), else probes them here; ``"probe"`` always probes them here. The record's
    provenance says which (``reference_features``)."""
    n_max = min(len(points), track.required_n)
    n = n_max if cfg.n_points is None else min(cfg.n_points, n_max)
    if n < 2 * cfg.classifier.n_folds:
        raise ConfigError(
            f"{n} points cannot be cross-fitted over {cfg.classifier.n_folds} folds",
            field="n_points",
        )
    engine = distribute(track.engine(lm, progress=progress), lm.spec, distributed)
    slots = make_slots(track, n, cfg)
    rows = rng.subset(len(points), n, cfg.seed, "scorer.rows")
    key = ("score", track_identity(track), cfg, lm.spec, points[rows])
    if reference not in ("published", "probe"):
        raise ConfigError(f"must be 'published' or 'probe', got {reference!r}", field="reference")
    pub = published_reference(track, cfg, n) if reference == "published" else None
    with resumable(distributed, *key):
        if pub is None:
            ref = round_features(track, engine, None, slots, n, cfg, cache)
        else:
            ref = pub[0]
        sub = round_features(track, engine, points[rows], slots, n, cfg, cache)
    head, per, arrays = compare(ref, sub, cfg)
    arrays["rows"] = rows.numpy()
    return ScoreReport(
        submission=meta or {},
        track=ScoredTrack(
            id=track.spec.track_id,
            version=track.spec.version,
            manifest_sha256=track_identity(track),
            units=track.units,
            data_sha256=track.data_sha256,
        ),
        config=cfg,
        headline=head,
        features=per,
        provenance=provenance(lm.provenance | engine.describe() | reference_source(pub)),
        arrays=arrays,
    )


def reference_source(pub: tuple[dict, dict] | None) -> dict[str, Any]:
    """The provenance entry saying where the reference features came from (none when they were
    probed in this run, as in every record made before they were published)."""
    if pub is None:
        return {}
    meta = pub[1]
    return {
        "reference_features": {
            "source": "published",
            "file": meta["file"],
            "sha256": meta["sha256"],
            "probed_on": meta["probed_on"],
        }
    }


REFERENCE_LINE = "reference line, not ranked"
"""Why the copy check is skipped for the organiser's reference lines (real rows, never ranked)."""


def copy_check_skip(access: dict[str, Any] | None) -> str | None:
    """The reason a record's copy check is skipped (:data:`REFERENCE_LINE` for an entry whose
    ``access`` category is ``reference``), else ``None``: the check runs."""
    return REFERENCE_LINE if (access or {}).get("category") == "reference" else None


def check_reusable(old: ScoreReport, path: Path) -> None:
    """``ConfigError`` unless the record's stored features are of this ``FEATURES_VERSION``
    (its scorer version in ``SAME_FEATURES``): a record re-made without a model run
    (:func:`rescore`, ``challenge.scoring.extension``) keeps them."""
    if old.scorer_version not in SAME_FEATURES:
        raise ConfigError(
            f"{path}: scored by scorer {old.scorer_version}, whose features this scorer "
            f"({SCORER_VERSION}) cannot re-use; score the submission again",
            field="scorer_version",
        )


def score_submission(
    sub: ValidatedSubmission,
    track: TrackLike,
    lm: LoadedModel,
    cfg: ScoreConfig | None = None,
    *,
    distributed: DistributedConfig | None = None,
) -> ScoreReport:
    """The schema-checked report of a validated submission (its validation included); nothing
    is written (:func:`write_record`)."""
    report = score_points(
        track, lm, sub.acts, cfg or ScoreConfig(), sub.meta, distributed=distributed
    )
    report.validation = sub.report.as_record()
    validate_report(report)
    return report


def write_record(report: ScoreReport, out: str | Path, name: str) -> Path:
    """Write ``<out>/<name>.json`` + ``.npz`` + ``.png`` (each file atomically); returns the
    JSON path (also ``report.path``)."""
    path = report.save(out, name)
    plot_report(report, Path(out) / f"{name}.png")
    return path


def score_folder(
    folder: str | Path,
    track: TrackLike,
    lm: LoadedModel,
    cfg: ScoreConfig | None = None,
    out: Path | None = None,
    distributed: DistributedConfig | None = None,
) -> ScoreReport:
    """Validate ``folder`` once, score it and (if ``out``) write its report there (not a
    board: ``plateau score``)."""
    sub = validate_submission(folder, track)
    report = score_submission(sub, track, lm, cfg, distributed=distributed)
    if out is not None:
        write_record(report, out, sub.name)
    return report


def record(
    folder: str | Path,
    track: TrackLike,
    lm: LoadedModel,
    cfg: ScoreConfig | None = None,
    board: Path = BOARD_ROOT,
    *,
    access: dict[str, Any] | None = None,
    replace: bool = False,
    distributed: DistributedConfig | None = None,
) -> ScoreReport:
    """Validate ``folder`` once, score it and write its record once to
    ``<board>/<track id>/<name>.json`` (+ ``.npz``, ``.png``), with ``access``
    (``challenge.access.entry_access``: what the organiser verified about how it was made;
    default: unverified) in its ``submission``. A name already on the board is refused unless
    ``replace``; an invalid submission raises and records nothing. The name is checked
    (``NAME_PATTERN``) before it becomes a path. The copy check is skipped only for the
    organiser's reference lines (``access`` category ``reference``: the held-out oracle is real
    rows), which are never ranked. ``distributed``: where the probes run (the same record)."""
    from challenge.access import entry_access

    sub = validate_submission(folder, track, skip_copy_check=copy_check_skip(access))
    name = check_name(sub.name)
    out = Path(board) / track.spec.track_id
    existing = out / f"{name}.json"
    if os.path.lexists(existing) and not replace:
        raise SubmissionError(
            f"{name!r} is already on the board ({existing}); choose another name or pass "
            "--replace to replace that record",
            file=str(Path(folder) / "submission.json"),
            field="name",
        )
    report = score_submission(sub, track, lm, cfg, distributed=distributed)
    report.submission = {
        **report.submission,
        "access": access or entry_access("unverified", "none", []),
    }
    write_record(report, out, name)
    return report


def rescore(path: str | Path, classifier: ClassifierConfig | None = None) -> ScoreReport:
    """Re-make the record ``<name>.json`` (+ ``.npz``, ``.png``) at ``path`` under this scorer
    version with ``classifier`` (default: the default classifier) from the per-point features
    it stores: no model run. Probes, seed, points and bootstrap stay the record's own. A record
    whose features are not of this ``FEATURES_VERSION`` is refused (``ConfigError``: score the
    submission again), and so is one without stored features; nothing is written then. The
    provenance names the scorer version it was re-made from."""
    path = Path(path)
    old = load_report(path)
    check_reusable(old, path)
    rep = remake(old, classifier or ClassifierConfig())
    rep.provenance = dict(old.provenance) | {
        "suite_version": challenge.__version__,
        "rescored": {"from_scorer": old.scorer_version, "date": date.today().isoformat()},
    }
    validate_report(rep)
    write_record(rep, path.parent, path.stem)
    return rep


def remake(old: ScoreReport, classifier: ClassifierConfig | None = None) -> ScoreReport:
    """The report ``old`` (loaded with its arrays) re-computed from its stored per-point
    features with ``classifier`` (default: its own): headline, diagnostics and arrays; its
    submission, track, provenance and validation kept. Under the record's own config this is
    the record itself, bit for bit (``plateau scoring verify``)."""
    data = old.data
    where = old.path.with_suffix(".npz") if old.path else "the report"
    if not data.has_features() or data.rows is None:
        raise ConfigError(
            f"{where}: no per-point features of the submission and the reference stored; "
            "score the submission again",
            field="arrays",
        )
    cfg = replace(old.config, classifier=classifier or old.config.classifier)
    head, per, arrays = compare(data.reference, data.submission, cfg)
    arrays["rows"] = data.rows
    return ScoreReport(
        submission=old.submission,
        track=old.track,
        config=cfg,
        headline=head,
        features=per,
        provenance=old.provenance,
        validation=old.validation,
        arrays=arrays,
    )


def submit(
    folder: str | Path,
    track: TrackLike,
    lm: LoadedModel,
    cfg: ScoreConfig | None = None,
    board: Path = BOARD_ROOT,
    *,
    replace: bool = False,
    distributed: DistributedConfig | None = None,
) -> ScoreReport:
    """:func:`record` an activation-only submission (listed as unverified) and re-render the
    board."""
    from challenge.scoring.board import render

    rep = record(folder, track, lm, cfg, board, replace=replace, distributed=distributed)
    render(track.spec.track_id, board)
    return rep


def verify_record(path: str | Path) -> list[str]:
    """Re-make the record at ``path`` from its stored per-point features under its own config
    (:func:`remake`) and list every difference from what is stored: the JSON document, key by
    key, and each array, bit for bit (empty: the record reproduces exactly). Writes nothing."""
    import numpy as np

    old = load_report(path)
    new = remake(old)
    diffs = []
    a, b = old.to_json(), new.to_json()
    diffs += [f"json {k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    for k in sorted(set(old.arrays) | set(new.arrays)):
        x, y = old.arrays.get(k), new.arrays.get(k)
        if x is None or y is None or x.dtype != y.dtype or not np.array_equal(x, y, equal_nan=True):
            diffs.append(f"array {k}")
    if list(old.arrays) != list(new.arrays):
        diffs.append("array order")
    return diffs
