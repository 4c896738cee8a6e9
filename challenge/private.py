"""The private test split: held-out real rows that are never published.

The published track's ``heldout`` split is public (and rebuildable from its seed), so it serves
as the **dev** split with its own board. The official board scores against a **test** split
built by :func:`build_private_split` from prompt windows of the track's text source (or another
source the organiser keeps) that are in none of the published splits, drawn with a secret seed
(fresh from ``os.urandom`` unless given), and stored apart from the track
(``<cache>/private/<track id>/v<version>/`` by default; never published).

:func:`with_test_split` returns a :class:`~challenge.track.Track` whose ``heldout`` split is
the test split and whose ``dev`` split is the published held-out: the scorer (which reads
``track.acts("heldout")``) scores against the test split unchanged, validation's copy check
covers every real row including both, and records carry the private directory's manifest
checksum, so test-board and dev-board records are never ranked together.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from challenge import rng
from challenge.errors import ConfigError, TrackIntegrityError
from challenge.models import cache_root
from challenge.prompts import iter_texts, token_windows
from challenge.store import read_track, write_track
from challenge.track import SPLITS, Track

KIND = "plateau-private-test/1"


def private_dir(track: Track) -> Path:
    """Default home of a track's test split, apart from the published track's cache."""
    return cache_root() / "private" / track.spec.track_id / f"v{track.spec.version}"


def _published_checksum(track: Track) -> str:
    return track.manifest_sha256 or "unknown"


def build_private_split(
    track: Track,
    lm: Any,
    *,
    secret_seed: int | None = None,
    source: str | None = None,
    out: str | Path | None = None,
    batch_size: int = 256,
) -> Path:
    """Build the test split of ``track`` (as many rows as its held-out split) and write it to
    ``out`` (default :func:`private_dir`). Windows come from ``source`` (default: the track's
    own prompt source), minus every window of the published splits, drawn with
    ``secret_seed`` (default: 63 random bits, recorded only in the private directory)."""
    from challenge.engine import EngineConfig, PerturbationEngine

    spec = track.spec
    seed = int.from_bytes(os.urandom(8), "little") >> 1 if secret_seed is None else secret_seed
    if not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"must be a non-negative integer, got {seed!r}", field="secret_seed")
    prompts = replace(spec.prompts, source=source) if source else spec.prompts
    if prompts.source.startswith("template:"):
        raise ConfigError("template sources have no private windows", field="source")
    windows = token_windows(
        iter_texts(prompts),
        lm.tokenizer,
        prompts.n_tokens,
        prepend_bos=prompts.prepend_bos,
        seed=rng.seed_for(seed, "private.windows"),
    )
    published = {tuple(r) for s in SPLITS for r in track.splits[s]["tokens"].tolist()}
    fresh = np.array([w for w in windows.tolist() if tuple(w) not in published], dtype=np.int64)
    n = int(track.meta["sizes"]["heldout"])
    if len(fresh) < n:
        raise ConfigError(
            f"only {len(fresh)} windows of {prompts.source!r} are in no published split; the "
            f"test split needs {n} (give a larger --source)",
            field="source",
        )
    toks = torch.from_numpy(fresh[:n])
    engine = PerturbationEngine(
        lm.model, EngineConfig(write_hook=spec.write_hook, read_hook=spec.read_hook)
    )
    acts = engine.clean(toks, batch_size=batch_size, read=False)["write"]
    split = {
        "tokens": toks.numpy(),
        "activation": acts.cpu().numpy().astype(np.float32),
        "text": np.array(lm.tokenizer.batch_decode(toks.tolist()), dtype=object),
    }
    meta = {
        "kind": KIND,
        "track_id": spec.track_id,
        "version": spec.version,
        "published_manifest_sha256": _published_checksum(track),
        "secret_seed": seed,
        "source": prompts.source,
        "sizes": {"heldout": n},
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    card = (
        f"# PRIVATE test split of `{spec.track_id}` v{spec.version}\n\n"
        "Do not publish: the official board is scored against these rows "
        "(`plateau score --heldout <this folder>`). The secret seed is in track.json.\n"
    )
    out = Path(out) if out is not None else private_dir(track)
    write_track(out, meta, {"heldout": split}, card)
    return out


def with_test_split(track: Track, private: str | Path) -> Track:
    """``track`` with its ``heldout`` split replaced by the private test split in ``private``
    and the published held-out kept as ``dev`` (see the module docstring); ``path`` is the
    private directory, so reports name its manifest. Refuses a split made for other data."""
    private = Path(private)
    meta, splits = read_track(private, verify=True)
    where = str(private / "track.json")
    if meta.get("kind") != KIND or "heldout" not in splits:
        raise TrackIntegrityError("not a private test split (plateau build --private)", file=where)
    for key, want in (("track_id", track.spec.track_id), ("version", track.spec.version)):
        if meta.get(key) != want:
            raise TrackIntegrityError(
                f"is {meta.get(key)!r}, the track is {want!r}", file=where, field=key
            )
    if meta.get("published_manifest_sha256") != _published_checksum(track):
        raise TrackIntegrityError(
            "was built for other published track data (manifest sha256 differs)",
            file=where,
            field="published_manifest_sha256",
        )
    test = splits["heldout"]
    sizes = {
        **track.meta["sizes"],
        "heldout": len(test["tokens"]),
        "dev": track.meta["sizes"]["heldout"],
    }
    return Track(
        spec=track.spec,
        meta={
            **track.meta,
            "sizes": sizes,
            "test_split": {k: meta[k] for k in ("source", "built_at")},
        },
        splits={**track.splits, "heldout": test, "dev": track.splits["heldout"]},
        path=private,
    )
