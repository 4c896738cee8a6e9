"""Validation of a submission before any scoring; each failure is one line naming file and field.

Checks, in order: the folder's two files are regular files (no links, pipes or devices) within
size limits; metadata well-formed (``challenge.submission.check_meta``: keys, types, the name's
pattern, text limits) and for this track (id and version); the activations file is safetensors
holding only an ``activations`` tensor; dtype float32; shape [N, d_model] with the track's N and
d_model; finite; every row's norm inside the band [q0.1% / 3, q99.9% x 3] of the public real
norms; no duplicate rows; the per-row copy check (``challenge.copycheck``) against every real
row of the track (public, held-out, context, and a private test split when present) and among
the submitted rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from challenge import copycheck
from challenge.errors import SubmissionError
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

NORM_BAND = (1 / 3, 3.0)  # times the public 0.1 % and 99.9 % norm quantiles
_CALIBRATIONS: dict[str, copycheck.Calibration] = {}
_SKIP_COPY_CHECK: ContextVar[str | None] = ContextVar("skip_copy_check", default=None)


@contextmanager
def copy_check_skipped(reason: str) -> Iterator[None]:
    """Within the block, validation skips the copy check and records ``reason``: only for the
    organiser's own reference lines (the held-out oracle *is* real rows; they are never
    ranked), never for a participant's submission."""
    token = _SKIP_COPY_CHECK.set(reason)
    try:
        yield
    finally:
        _SKIP_COPY_CHECK.reset(token)


def required_n(track: Any) -> int:
    """Submissions carry as many activations as the scorer's reference half of the held-out
    split holds (``scorer.n_slots``): one per slot, every row scored."""
    return int(track.meta["sizes"]["heldout"]) // 2


@dataclass
class ValidationReport:
    n: int
    d_model: int
    checks: list[str] = field(default_factory=list)
    stats: dict[str, float] = field(default_factory=dict)
    name: str = ""
    """the submission's (validated) name"""


def _meta(folder: Path, track: Any) -> dict[str, Any]:
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


def _acts(folder: Path, track: Any) -> torch.Tensor:
    path = str(folder / ACTS_FILE)
    # up to 8 bytes per value, so that a float64 file of the right shape gets the dtype message
    limit = 8 * required_n(track) * track.d_model + HEADER_BYTES
    return load_acts(read_regular(path, limit, "activations file"), path)


def nearest_distances(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Distance of each row of ``x`` to its nearest row of ``ref`` (float32)."""
    return copycheck.nearest_distances(x, ref).float()


def real_rows(track: Any) -> torch.Tensor:
    """Every real row the track holds (public, held-out, context, a private test split...)."""
    return torch.cat([track.acts(s) for s in sorted(track.splits)])


def copy_calibration(track: Any) -> copycheck.Calibration:
    """The copy check's calibration on the track's real rows (cached by their content)."""
    real = real_rows(track)
    key = hashlib.sha256(real.numpy().tobytes()).hexdigest()
    if key not in _CALIBRATIONS:
        if len(_CALIBRATIONS) > 8:
            _CALIBRATIONS.clear()
        _CALIBRATIONS[key] = copycheck.calibrate(real)
    return _CALIBRATIONS[key]


def validate_submission(folder: str | Path, track: Any) -> ValidationReport:
    """Raise ``SubmissionError`` on the first failed check; return a report otherwise."""
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
    if n != required_n(track):
        raise SubmissionError(
            f"N is {n}, the track needs {required_n(track)}", file=path, field=ACTS_KEY
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
    if (skip := _SKIP_COPY_CHECK.get()) is None:
        cal = copy_calibration(track)
        found, stats = copycheck.copy_findings(acts, real_rows(track), cal)
        for f in found:
            if f.refused:
                raise SubmissionError(f.message(n), file=path, field=ACTS_KEY)
        rep.checks.append("copy check")
    else:
        rep.checks.append(f"copy check skipped: {skip}")
    rep.n, rep.d_model, rep.name = n, d, meta["name"]
    rep.stats = {"norm_band_low": lo, "norm_band_high": hi, **stats}
    return rep
