"""The board's reference features as challenge data: probed once, published with the track.

Every entry of a board is compared with the same reference rows in the same slots (the paired
design). The reference half's per-point features depend only on the track, the scorer config
(probes, seed, rows, contexts per row) and the machine's kernels, so the organiser publishes the
board's own: ``<track>/reference_features/<key>.npz`` beside a ``<key>.json`` that holds the key,
the npz's sha256 and the machine they were probed on. A participant's scorer then reads them
(verified) instead of probing the reference, and probes only the submission: half the model
time, and every entry on the board is compared with the very same reference features
(docs/scoring.md, "Reference features and machines", measures what mixing machines does).

The features of a board are taken from its records (each record stores the reference features
it was scored against; :func:`board_reference` refuses a board whose records disagree).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from challenge.errors import ChallengeError, TrackIntegrityError
from challenge.scoring.config import FEATURES_VERSION, ScoreConfig
from challenge.scoring.probing import track_identity
from challenge.track import TrackLike

FOLDER = "reference_features"
"""Where a track publishes its boards' reference features: ``<track>/reference_features/``."""
FORMAT = "plateau-reference-features/1"
INDEX = "index.json"
"""``{key name: npz file}`` of a published folder (the marker ``published_folder`` looks for)."""


def reference_key(track: TrackLike, cfg: ScoreConfig, n: int) -> dict[str, Any]:
    """What the reference features of a scoring run depend on (besides the machine)."""
    return {
        "probes": asdict(cfg.probes),
        "seed": cfg.seed,
        "n": n,
        "contexts_per_row": cfg.contexts_per_row,
        "manifest": track_identity(track),
        "features_version": FEATURES_VERSION,
    }


def key_name(key: dict[str, Any]) -> str:
    """The file stem of a key: 16 hex digits of its canonical JSON's sha256."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def board_reference(records: dict[Path, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The reference features every record of a board was scored against, and the provenance
    of the first record that holds them (its machine); ``ChallengeError`` naming the file when
    a record's reference features differ from the others' (e.g. another machine's)."""
    ref: dict[str, np.ndarray] | None = None
    prov: dict[str, Any] = {}
    for p, rep in sorted(records.items()):
        got = rep.load_arrays().reference
        if not got:
            continue
        if ref is None:
            ref, prov = got, dict(rep.provenance)
            continue
        bad = [k for k in ref if k not in got or not np.array_equal(ref[k], got[k])]
        if bad or set(got) != set(ref):
            raise ChallengeError(
                f"reference features {bad or sorted(set(got) ^ set(ref))} differ from the "
                "board's other records",
                file=str(p),
            )
    if ref is None:
        raise ChallengeError("no record of this board stores reference features")
    return ref, prov


def _sha256(path: Path) -> str:
    from challenge.store import sha256_file

    return sha256_file(path)


def save_reference(
    feats: dict[str, np.ndarray],
    key: dict[str, Any],
    provenance: dict[str, Any],
    folder: str | Path,
) -> Path:
    """Write ``<folder>/<key name>.npz`` and ``.json`` and update ``index.json``; a file of
    this key already there must hold the same features. Returns the npz path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = key_name(key)
    npz, meta = folder / f"{name}.npz", folder / f"{name}.json"
    if npz.exists():
        old = load_reference_file(npz)
        if set(old) != set(feats) or any(not np.array_equal(old[k], feats[k]) for k in feats):
            raise TrackIntegrityError(
                "already holds other reference features for this key; bump the track version",
                file=str(npz),
            )
        return npz
    tmp = folder / f".{name}.tmp.npz"
    np.savez(tmp, **{k: np.asarray(v, dtype=np.float64) for k, v in sorted(feats.items())})
    tmp.replace(npz)
    machine = {k: provenance.get(k) for k in ("cpu", "cpu_capability", "device", "torch")}
    doc = {
        "format": FORMAT,
        "key": key,
        "file": npz.name,
        "sha256": _sha256(npz),
        "rows": int(len(next(iter(feats.values())))),
        "probed_on": machine,
    }
    ext = provenance.get("extended")
    if ext:  # probes added later (challenge.scoring.extension) ran on another machine
        doc["added_probed_on"] = {"probes": ext["probes"], **ext["added_probed_on"]}
    meta.write_text(json.dumps(doc, indent=1, sort_keys=True))
    index_path = folder / INDEX
    index = json.loads(index_path.read_text()) if index_path.exists() else {}
    index[name] = npz.name
    index_path.write_text(json.dumps(index, indent=1, sort_keys=True))
    return npz


def load_reference_file(npz: Path) -> dict[str, np.ndarray]:
    with np.load(npz) as z:
        return {k: z[k] for k in z.files}


def published_reference(
    track: TrackLike, cfg: ScoreConfig, n: int
) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """The published reference features for this track, config and ``n`` (verified: the key
    and the npz's sha256) and their metadata, or ``None`` when none are published."""
    from challenge.track import published_folder

    folder = published_folder(track, FOLDER, INDEX)
    if folder is None:
        return None
    key = json.loads(json.dumps(reference_key(track, cfg, n)))  # as JSON holds it
    name = key_name(key)
    meta_path, npz = folder / f"{name}.json", folder / f"{name}.npz"
    if not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError as e:
        raise TrackIntegrityError(f"not valid JSON ({e})", file=str(meta_path)) from None
    if meta.get("format") != FORMAT or meta.get("key") != key:
        raise TrackIntegrityError(
            "the file's key is not the one its name stands for", file=str(meta_path), field="key"
        )
    if not npz.is_file() or _sha256(npz) != meta.get("sha256"):
        raise TrackIntegrityError("missing, or sha256 mismatch", file=str(npz), field="sha256")
    feats = load_reference_file(npz)
    rows = n * cfg.contexts_per_row
    if any(len(v) != rows for v in feats.values()):
        raise TrackIntegrityError(f"must hold {rows} rows per feature", file=str(npz))
    return feats, meta


def publish_board_reference(track: TrackLike, records: dict[Path, Any], folder: str | Path) -> Path:
    """Publish a board's reference features (:func:`board_reference`) under the key of its
    records' config into ``folder`` (a track's ``reference_features/``)."""
    feats, prov = board_reference(records)
    rep = next(iter(records.values()))
    n = len(next(iter(feats.values()))) // rep.config.contexts_per_row
    if rep.track.manifest_sha256 != track_identity(track):
        raise ChallengeError(
            "the board was scored on other track data than this track",
            file=str(next(iter(records))),
            field="track.manifest_sha256",
        )
    return save_reference(feats, reference_key(track, rep.config, n), prov, folder)


def verify_reference_folder(folder: str | Path) -> dict[str, str]:
    """Check a published ``reference_features/`` folder: every entry of ``index.json`` has its
    ``.json`` (format, file name, the key its name stands for) and an ``.npz`` of that sha256,
    and no other file is there; ``{name: sha256}``. ``TrackIntegrityError`` naming the file."""
    folder = Path(folder)
    index_path = folder / INDEX
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError) as e:
        raise TrackIntegrityError(f"unreadable index ({e})", file=str(index_path)) from None
    if not isinstance(index, dict):
        raise TrackIntegrityError("must map key names to files", file=str(index_path))
    expected = {INDEX} | {f"{n}.json" for n in index} | {f"{n}.npz" for n in index}
    extra = sorted(p.name for p in folder.iterdir() if p.name not in expected)
    if extra:
        raise TrackIntegrityError(f"files not in the index: {extra}", file=str(folder))
    out = {}
    for name, file in sorted(index.items()):
        meta_path, npz = folder / f"{name}.json", folder / f"{name}.npz"
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as e:
            raise TrackIntegrityError(f"unreadable ({e})", file=str(meta_path)) from None
        if (
            meta.get("format") != FORMAT
            or file != npz.name
            or meta.get("file") != npz.name
            or key_name(meta.get("key", {})) != name
        ):
            raise TrackIntegrityError(
                "format, file or key does not match its name", file=str(meta_path)
            )
        if not npz.is_file() or _sha256(npz) != meta.get("sha256"):
            raise TrackIntegrityError("missing, or sha256 mismatch", file=str(npz), field="sha256")
        out[name] = meta["sha256"]
    return out
