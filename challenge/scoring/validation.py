"""Validation of a submission before any scoring; each failure is one line naming file and field.

The memorisation test's statistics (``challenge.scoring.memorisation``) are computed for every
submission and kept in the report (not a check: :func:`memorisation_stats`).

Checks, in order: the folder's two files are regular files (no links, pipes or devices) within
size limits; metadata well-formed (``challenge.submission.check_meta``: keys, types, the name's
pattern, text limits) and for this track (id and version); the activations file is safetensors
holding only an ``activations`` tensor; dtype float32; shape [N, d_model] with the track's N and
d_model; finite; every row's norm inside the band [q0.1% / 3, q99.9% x 3] of the public real
norms; no duplicate rows; the per-row copy check (``challenge.copycheck``) against every real
row of the track (public, held-out, context, and a private test split when present) and among
the submitted rows. The copy check runs unless the caller names why it is skipped
(``skip_copy_check``: only the organiser's reference lines, which are real rows and never ranked).

:func:`validate_submission` reads the folder once and returns the validated metadata and
activations (:class:`ValidatedSubmission`): scoring uses those, never the files again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float

from challenge.errors import SubmissionError
from challenge.scoring import copycheck
from challenge.submission import (
    ACTS_FILE,
    ACTS_KEY,
    HEADER_BYTES,
    MAX_META_BYTES,
    META_FILE,
    check_meta,
    load_acts,
    parse_json,
    read_regular,
)
from challenge.track import TrackLike

NORM_BAND = (1 / 3, 3.0)  # times the public 0.1 % and 99.9 % norm quantiles
_CALIBRATIONS: dict[str, copycheck.Calibration] = {}


@dataclass
class ValidationReport:
    """Which checks a submission passed, and the copy check's statistics."""

    n: int
    d_model: int
    checks: list[str] = field(default_factory=list)
    stats: dict[str, float] = field(default_factory=dict)
    name: str = ""
    """the submission's (validated) name"""

    def as_record(self) -> dict[str, Any]:
        """What a record keeps of it (``ScoreReport.validation``): the checks and statistics."""
        return {"checks": self.checks, **self.stats}


@dataclass
class ValidatedSubmission:
    """A submission folder read and validated once: what scoring uses."""

    meta: dict[str, Any]
    """the validated ``submission.json``"""
    acts: Float[torch.Tensor, "n d"]
    """the validated activations"""
    report: ValidationReport

    @property
    def name(self) -> str:
        return self.report.name


def _meta(folder: Path, track: TrackLike) -> dict[str, Any]:
    path = str(folder / META_FILE)
    meta = check_meta(parse_json(read_regular(path, MAX_META_BYTES, "metadata file"), path), path)
    if meta["track_id"] != track.spec.track_id:
        raise SubmissionError(
            f"is {meta['track_id']!r}, the track is {track.spec.track_id!r}",
            file=path,
            field="track_id",
        )
    if meta["track_version"] != track.spec.version:
        raise SubmissionError(
            f"is {meta['track_version']!r}, the track is {track.spec.version!r}",
            file=path,
            field="track_version",
        )
    return meta


def _acts(folder: Path, track: TrackLike) -> torch.Tensor:
    path = str(folder / ACTS_FILE)
    # up to 8 bytes per value, so that a float64 file of the right shape gets the dtype message
    limit = 8 * track.required_n * track.d_model + HEADER_BYTES
    return load_acts(read_regular(path, limit, "activations file"), path)


def nearest_distances(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Distance of each row of ``x`` to its nearest row of ``ref`` (float32)."""
    return copycheck.nearest_distances(x, ref).float()


def real_rows(track: TrackLike) -> torch.Tensor:
    """Every real row the track holds (public, held-out, context, a private test split...)."""
    return torch.cat([track.acts(s) for s in sorted(track.splits)])


def copy_calibration(track: TrackLike) -> copycheck.Calibration:
    """The copy check's calibration on the track's real rows (cached by their content)."""
    real = real_rows(track)
    key = hashlib.sha256(real.numpy().tobytes()).hexdigest()
    if key not in _CALIBRATIONS:
        if len(_CALIBRATIONS) > 8:
            _CALIBRATIONS.clear()
        _CALIBRATIONS[key] = copycheck.calibrate(real)
    return _CALIBRATIONS[key]


def memorisation_stats(acts: Float[torch.Tensor, "n d"], track: TrackLike) -> dict[str, float]:
    """The memorisation test's statistics (``challenge.scoring.memorisation``), as a record's
    validation keeps them. A statistic, not a check: it refuses moved public rows and also the
    means of a few public rows (token_cluster), so the rows tier it would gate is shown
    unranked and this says, per entry, whether its rows favour the public split
    (``memorisation_refused``: 1.0 when its p-value is at most alpha)."""
    from challenge.scoring.memorisation import memorisation_test

    r = memorisation_test(acts, track)
    return {
        "memorisation_ks": r.ks,
        "memorisation_threshold": min(r.threshold, 1.0),  # inf (B too small) -> 1: D+ <= 1
        "memorisation_p": r.p_value,
        "memorisation_refused": float(r.refused),
        "memorisation_closer_to_public": r.closer_to_public,
        "memorisation_closer_to_public_null": r.closer_to_public_null,
        "memorisation_median": r.median,
        "memorisation_median_null": r.null_quantiles["q0.5"],
    }


def validate_submission(
    folder: str | Path,
    track: TrackLike,
    *,
    skip_copy_check: str | None = None,
    memorisation: bool = True,
) -> ValidatedSubmission:
    """Read and validate ``folder`` once: raise ``SubmissionError`` (file, field, problem) on
    the first failed check; return the validated metadata, activations and report otherwise.
    ``skip_copy_check``: why the copy check is not run (recorded in the checks); only for the
    organiser's reference lines. ``memorisation``: also compute the memorisation test's
    statistics (:func:`memorisation_stats`; no check depends on them), which callers whose
    report is not kept leave out."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SubmissionError("submission folder does not exist", file=str(folder))
    meta = _meta(folder, track)
    acts = _acts(folder, track)
    path = str(folder / ACTS_FILE)
    rep = ValidationReport(
        n=0, d_model=0, checks=["files", "metadata", "track version", "safetensors"]
    )
    if acts.dtype != torch.float32:
        raise SubmissionError(
            f"dtype is {acts.dtype}, must be torch.float32", file=path, field=ACTS_KEY
        )
    if acts.dim() != 2:
        raise SubmissionError(
            f"shape {tuple(acts.shape)} is not [N, d_model]", file=path, field=ACTS_KEY
        )
    n, d = acts.shape
    if d != track.d_model:
        raise SubmissionError(
            f"d_model is {d}, the track's is {track.d_model}", file=path, field=ACTS_KEY
        )
    if n != track.required_n:
        raise SubmissionError(
            f"N is {n}, the track needs {track.required_n}", file=path, field=ACTS_KEY
        )
    if not torch.isfinite(acts).all():
        bad = int((~torch.isfinite(acts)).any(dim=1).sum())
        raise SubmissionError(f"{bad} rows contain NaN or inf", file=path, field=ACTS_KEY)
    rep.checks += ["dtype", "shape", "finite"]
    public = track.acts("public")
    pn = public.norm(dim=-1)
    lo, hi = float(pn.quantile(0.001)) * NORM_BAND[0], float(pn.quantile(0.999)) * NORM_BAND[1]
    norms = acts.norm(dim=-1)
    out = (norms < lo) | (norms > hi)
    if out.any():
        i = int(out.nonzero()[0])
        raise SubmissionError(
            f"{int(out.sum())} rows have norms outside the real band [{lo:.2f}, {hi:.2f}] (row {i}: {float(norms[i]):.2f})",
            file=path,
            field=ACTS_KEY,
        )
    uniq = torch.unique(acts, dim=0)
    if len(uniq) != n:
        raise SubmissionError(f"{n - len(uniq)} duplicate rows", file=path, field=ACTS_KEY)
    rep.checks += ["norm band", "no duplicates"]
    stats: dict[str, float] = {}
    if skip_copy_check is None:
        cal = copy_calibration(track)
        found, stats = copycheck.copy_findings(acts, real_rows(track), cal)
        for f in found:
            if f.refused:
                raise SubmissionError(f.message(n), file=path, field=ACTS_KEY)
        rep.checks.append("copy check")
    else:
        rep.checks.append(f"copy check skipped: {skip_copy_check}")
    rep.n, rep.d_model, rep.name = n, d, meta["name"]
    rep.stats = {
        "norm_band_low": lo,
        "norm_band_high": hi,
        **stats,
        **(memorisation_stats(acts, track) if memorisation else {}),
    }
    return ValidatedSubmission(meta=meta, acts=acts, report=rep)
