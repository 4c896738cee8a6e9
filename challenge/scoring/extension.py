"""Records re-made with added probes: the stored features kept, only the new probes run.

A record stores every per-point feature it was scored on, the rows it scored and its config;
its slots (contexts, directions, AP ends) are a function of the config's seed, ``n`` and
contexts per row (:func:`challenge.scoring.probing.make_slots`). A probe added to the config
(e.g. ``p2dir``) is a separate computation at the same points in the same slots, so the record
under the wider config is the stored features plus the new probe's, scored again: the same
report a full scoring run makes on one machine, bit for bit (tests/scoring/test_extension.py),
at the new probe's cost only. The board is re-made this way when its probe set grows
(``plateau extend-records``).

The submission is read again from its folder and validated once (:func:`validate_submission`);
its metadata must be the record's and its validation statistics the record's (to float
rounding across machines), else nothing is written: the folder is not the one the record
scored. The record's validation gains the statistics it lacks that validation now computes
(the memorisation test's). The reference half's added features are probed once per board (or
read from the track's published reference features for the new config, which must agree with
the stored ones).
"""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch

import challenge
from challenge.errors import ChallengeError, ConfigError, SubmissionError
from challenge.models import LoadedModel
from challenge.probes import PROBES, derived_features
from challenge.results import provenance
from challenge.scoring.classifier import compare
from challenge.scoring.config import ScoreConfig
from challenge.scoring.probing import make_slots, round_features
from challenge.scoring.recording import (
    check_reusable,
    copy_check_skip,
    reference_source,
    write_record,
)
from challenge.scoring.reference import published_reference
from challenge.scoring.report import ScoreReport, load_report, validate_report
from challenge.scoring.validation import validate_submission
from challenge.track import TrackLike

STAT_RTOL = 1e-5
"""Relative tolerance of a validation statistic re-computed on another machine. The statistics
are distances (``torch.cdist`` in float64 of float32 rows, ``challenge.neighbours.nearest``),
their quantiles and counts; another machine's float64 kernels move a distance between norm-40
rows by a relative ~1e-10 at worst (576 terms x 1.1e-16, times the ~1600 that the cancellation
in ``|x|^2 + |y|^2 - 2 x.y`` costs at distance 1), far inside 1e-5, while another submission's
rows move them by far more."""


def widened(cfg: ScoreConfig, probes: tuple[str, ...]) -> ScoreConfig:
    """``cfg`` with ``probes`` appended to its probe set (``ConfigError`` for an unknown probe
    or one it already runs)."""
    have = cfg.probes.probes
    for p in probes:
        if p not in PROBES:
            raise ConfigError(f"unknown probe {p!r} (one of {', '.join(PROBES)})", field="probes")
        if p in have:
            raise ConfigError(f"the config already runs {p!r}", field="probes")
    if not probes:
        raise ConfigError("no probe to add", field="probes")
    return replace(cfg, probes=replace(cfg.probes, probes=(*have, *probes)))


def added_features(
    track: TrackLike,
    engine,
    points: torch.Tensor | None,
    cfg: ScoreConfig,
    added: tuple[str, ...],
    n: int,
) -> dict[str, np.ndarray]:
    """The ``added`` probes' own features of the ``n`` rows ``points`` (``None``: the reference
    half's) in every context round of ``cfg``'s slots, round-major as a record stores them;
    no derived features. The scorer's per-round path and cache
    (:func:`challenge.scoring.probing.round_features` under a config that runs only ``added``)."""
    only = replace(cfg, probes=replace(cfg.probes, probes=added))
    return round_features(track, engine, points, make_slots(track, n, cfg), n, only)


def merged(stored: dict[str, np.ndarray], added: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Stored features plus added ones and the derived features relating them."""
    out = dict(stored) | added
    return out | derived_features(out)


def _check_folder(old: ScoreReport, sub, where: str) -> None:
    """The folder re-validated is the one the record scored: same metadata (less ``access``),
    same checks, statistics equal to ``STAT_RTOL``."""
    meta = {k: v for k, v in old.submission.items() if k != "access"}
    if {k: sub.meta.get(k) for k in meta} != meta:
        raise SubmissionError(
            "the folder's metadata is not the record's; score the submission again",
            file=where,
            field="submission.json",
        )
    val = old.validation or {}
    new = sub.report.as_record()
    bad = [
        k
        for k, v in val.items()
        if k not in new
        or (
            new[k] != v
            if not isinstance(v, float)
            else not math.isclose(new[k], v, rel_tol=STAT_RTOL, abs_tol=1e-12)
        )
    ]
    if bad:
        raise SubmissionError(
            f"validation {bad} differ from the record's: not the activations it scored",
            file=where,
            field="activations",
        )


class ReferenceExtension:
    """The reference half's features under the widened config, made once per board: read from
    the track's published reference features for that config when there are any (their stored
    probes must equal the record's), else the record's stored reference features plus the added
    probes run here."""

    def __init__(self, track: TrackLike, engine, cfg: ScoreConfig, added: tuple[str, ...]):
        self.track, self.engine, self.cfg, self.added = track, engine, cfg, added
        self._feats: dict[str, np.ndarray] | None = None
        self.source: dict[str, Any] = {}

    def features(self, stored: dict[str, np.ndarray], n: int, where: str) -> dict[str, np.ndarray]:
        if self._feats is None:
            pub = published_reference(self.track, self.cfg, n)
            if pub is not None:
                self._feats, self.source = pub[0], reference_source(pub)
            else:
                add = added_features(self.track, self.engine, None, self.cfg, self.added, n)
                self._feats = merged(stored, add)
                self.source = {"reference_features": {"source": "stored + added here"}}
        bad = [k for k in stored if not np.array_equal(stored[k], self._feats.get(k))]
        if bad:
            raise ChallengeError(
                f"reference features {bad} differ from the board's other records",
                file=where,
            )
        return self._feats


def extend_report(
    path: str | Path,
    track: TrackLike,
    lm: LoadedModel,
    added: tuple[str, ...],
    *,
    folder: str | Path | None = None,
    reference: ReferenceExtension | None = None,
    engine=None,
) -> ScoreReport:
    """The record at ``path`` re-made under its config with ``added`` probes (nothing
    written): its submission folder (default ``submissions/<track>/<name>``) validated once and
    checked to be the one it scored, the added probes run at the record's rows in its slots,
    the stored features kept, the reference's from ``reference`` (one per board), scored with
    the record's classifier. Provenance: the record's, plus what was added, where and when."""
    path = Path(path)
    old = load_report(path)
    check_reusable(old, path)
    data = old.data
    if not data.has_features() or data.rows is None:
        raise ConfigError(f"{path}: no per-point features stored", field="arrays")
    if old.track.manifest_sha256 != track.manifest_sha256:
        raise ConfigError(f"{path}: scored on other track data", field="track.manifest_sha256")
    cfg = widened(old.config, added)
    name = old.submission.get("name", path.stem)
    folder = Path(folder) if folder else Path("submissions") / track.spec.track_id / name
    sub = validate_submission(
        folder, track, skip_copy_check=copy_check_skip(old.submission.get("access"))
    )
    _check_folder(old, sub, str(folder))
    engine = engine or track.engine(lm, progress=False)
    reference = reference or ReferenceExtension(track, engine, cfg, added)
    if reference.cfg != cfg:
        raise ConfigError(f"{path}: another config than the board's other records", field="config")
    n = len(data.rows)
    rows = torch.from_numpy(np.asarray(data.rows, dtype=np.int64))
    ref = reference.features(data.reference, n, str(path))
    feats = merged(data.submission, added_features(track, engine, sub.acts[rows], cfg, added, n))
    head, per, arrays = compare(ref, feats, cfg)
    arrays["rows"] = data.rows
    here = provenance()
    machine = {k: here.get(k) for k in ("cpu", "cpu_capability", "device", "torch")}
    prov = {k: v for k, v in old.provenance.items() if k != "reference_features"}
    rep = ScoreReport(
        submission=old.submission,
        track=old.track,
        config=cfg,
        headline=head,
        features=per,
        provenance=prov
        | reference.source
        | {
            "extended": {
                "probes": list(added),
                "from_probes": list(old.config.probes.probes),
                "suite_version": challenge.__version__,
                "date": date.today().isoformat(),
                "added_probed_on": machine,
            }
        },
        validation=(old.validation or {})
        | {k: v for k, v in sub.report.as_record().items() if k.startswith("memorisation_")},
        arrays=arrays,
    )
    validate_report(rep)
    return rep


def extend_records(
    track: TrackLike,
    lm: LoadedModel,
    added: tuple[str, ...],
    board: str | Path,
    only: tuple[str, ...] | None = None,
    progress: bool = True,
) -> list[Path]:
    """Re-make every record of ``<board>/<track id>/`` (or ``only`` those) with ``added``
    probes (:func:`extend_report`) and write each one as it lands (json + npz + png), one
    reference extension shared by all. A record whose config already runs them is skipped (an
    interrupted run resumes); the first failure raises with nothing of that record written.
    Returns the paths written."""
    from tqdm.auto import tqdm

    out = Path(board) / track.spec.track_id
    paths = sorted(p for p in out.glob("*.json") if p.with_suffix(".npz").exists())
    if only:
        missing = sorted(set(only) - {p.stem for p in paths})
        if missing:
            raise ConfigError(f"no record named {missing} in {out}", field="only")
        paths = [p for p in paths if p.stem in only]
    configs = {p: load_report(p, arrays=False).config for p in paths}
    todo = [p for p in paths if not set(added) <= set(configs[p].probes.probes)]
    if not todo:
        return []
    engine = track.engine(lm, progress=False)
    reference = ReferenceExtension(track, engine, widened(configs[todo[0]], added), added)
    written = []
    for p in tqdm(
        todo,
        desc=f"extend {track.spec.track_id} (+{'+'.join(added)})",
        unit="record",
        disable=not progress,
    ):
        rep = extend_report(p, track, lm, added, reference=reference, engine=engine)
        written.append(write_record(rep, out, p.stem))
        h = rep.headline
        tqdm.write(f"{p.stem}: {h.score:.3f} [{h.ci[0]:.3f}, {h.ci[1]:.3f}]")
    return written
