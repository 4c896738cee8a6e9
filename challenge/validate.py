"""Validation of a submission before any scoring; each failure is one line naming file and field.

Checks, in order: metadata present and well-formed; track id and version; the activations file
is safetensors with an ``activations`` tensor; dtype float32; shape [N, d_model] with the
track's N and d_model; finite; every row's norm inside the band [q0.1% / 3, q99.9% x 3] of the
public real norms; no duplicate rows; no memorisation: the median distance of submitted points
to their nearest public real activation must be at least the 5th percentile of the same
distance for held-out real activations (copies of public activations have distance 0).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from challenge.errors import SubmissionError
from challenge.submission import ACTS_FILE, ACTS_KEY, META_FILE, REQUIRED, USES

NORM_BAND = (1 / 3, 3.0)  # times the public 0.1 % and 99.9 % norm quantiles
MEMORISATION_QUANTILE = 0.05


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


def _meta(folder: Path, track: Any) -> dict[str, Any]:
    path = folder / META_FILE
    if not path.exists():
        raise SubmissionError("metadata file missing", file=str(path))
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SubmissionError(f"not valid JSON ({e.msg} at line {e.lineno})", file=str(path)) from e
    if not isinstance(meta, dict):
        raise SubmissionError("must be a JSON object", file=str(path))
    for key, typ in REQUIRED.items():
        if key not in meta:
            raise SubmissionError("missing", file=str(path), field=key)
        if not isinstance(meta[key], typ) or (typ is int and isinstance(meta[key], bool)):
            raise SubmissionError(
                f"must be {typ.__name__}, got {type(meta[key]).__name__}", file=str(path), field=key
            )
    bad = [u for u in meta["uses"] if u not in USES]
    if bad:
        raise SubmissionError(
            f"unknown entries {bad}; allowed {list(USES)}", file=str(path), field="uses"
        )
    if meta["track_id"] != track.spec.track_id:
        raise SubmissionError(
            f"is {meta['track_id']!r}, the track is {track.spec.track_id!r}",
            file=str(path),
            field="track_id",
        )
    if meta["track_version"] != track.spec.version:
        raise SubmissionError(
            f"is {meta['track_version']!r}, the track is {track.spec.version!r}",
            file=str(path),
            field="track_version",
        )
    return meta


def _acts(folder: Path) -> torch.Tensor:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = folder / ACTS_FILE
    if not path.exists():
        raise SubmissionError("activations file missing", file=str(path))
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise SubmissionError(f"not a safetensors file ({str(e)[:80]})", file=str(path)) from e
    if ACTS_KEY not in tensors:
        raise SubmissionError(
            f"no tensor named {ACTS_KEY!r} (found {sorted(tensors)[:5]})",
            file=str(path),
            field=ACTS_KEY,
        )
    return tensors[ACTS_KEY]


def nearest_distances(x: torch.Tensor, ref: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """Distance of each row of ``x`` to its nearest row of ``ref``."""
    out = [
        torch.cdist(x[i : i + chunk].double(), ref.double()).min(dim=1).values
        for i in range(0, len(x), chunk)
    ]
    return torch.cat(out).float()


def validate_submission(folder: str | Path, track: Any) -> ValidationReport:
    """Raise ``SubmissionError`` on the first failed check; return a report otherwise."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SubmissionError("submission folder does not exist", file=str(folder))
    _meta(folder, track)
    acts = _acts(folder)
    path = str(folder / ACTS_FILE)
    rep = ValidationReport(n=0, d_model=0, checks=["metadata", "track version", "safetensors"])
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
    sub_nn = nearest_distances(acts, public)
    held_nn = nearest_distances(track.acts("heldout"), public)
    floor = float(held_nn.quantile(MEMORISATION_QUANTILE))
    med = float(sub_nn.median())
    if med < floor:
        raise SubmissionError(
            f"memorisation: median distance to the nearest public real activation is {med:.3f}, "
            f"below the {MEMORISATION_QUANTILE:.0%} quantile of held-out real points' ({floor:.3f})",
            file=path,
            field=ACTS_KEY,
        )
    rep.checks.append("no memorisation")
    rep.n, rep.d_model = n, d
    rep.stats = {
        "norm_band_low": lo,
        "norm_band_high": hi,
        "nn_median": med,
        "nn_heldout_q05": floor,
        "nn_heldout_median": float(held_nn.median()),
    }
    return rep
