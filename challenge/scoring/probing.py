"""A scoring run's slots and the probe features of its points (the engine runs here only).

Slot ``i`` holds a context prompt, ``k`` random unit directions and an N(mu, Sigma) AP end; a
submitted row and a reference row are probed in the same slot (a paired design). With
``contexts_per_row = c`` each row pair fills ``c`` slots, round-major. Each round's features are
cached per track, probe config, seed, ``n`` and round (and the points' bytes).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

import challenge
from challenge import rng
from challenge.directions import ActivationStats, gaussian_like
from challenge.models import cache_root
from challenge.probes import Slots, run_probes, unit_directions
from challenge.scoring.config import FEATURES_VERSION, ScoreConfig
from challenge.track import TrackLike


def track_identity(track: TrackLike) -> str:
    """The track's manifest sha256 as records and caches name it (``"unknown"`` for a track held
    only in memory)."""
    return track.manifest_sha256 or "unknown"


def make_slots(track: TrackLike, n: int, cfg: ScoreConfig) -> Slots:
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


def features_cache_path(
    track: TrackLike, cfg: ScoreConfig, n: int, round_: int = 0, points: torch.Tensor | None = None
) -> Path:
    """Cache file of the features of ``n`` rows in context round ``round_`` (slots
    ``round_ n .. (round_ + 1) n - 1``): the reference half's (``points`` None; round 0 keeps
    the key of a ``c = 1`` run) or those of ``points`` (keyed by their bytes)."""
    key = {
        "probes": asdict(cfg.probes),
        "seed": cfg.seed,
        "n": n,
        "manifest": track_identity(track),
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
    track: TrackLike,
    engine,
    points: torch.Tensor,
    slots: Slots,
    cfg: ScoreConfig,
    path: Path | None,
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


def reference_points(track: TrackLike, n: int, cfg: ScoreConfig) -> torch.Tensor:
    """The reference half's ``n`` rows in the order they fill the slots (the
    ``scorer.reference_order`` stream of ``cfg.seed``)."""
    ref = track.acts("heldout")[track.reference_rows()]
    return ref[rng.subset(len(ref), n, cfg.seed, "scorer.reference_order")]


def round_features(
    track: TrackLike,
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
    rows = reference_points(track, n, cfg) if points is None else points
    parts = []
    for r in range(cfg.contexts_per_row):
        path = features_cache_path(track, cfg, n, r, points) if cache and track.path else None
        parts.append(probe_features(track, engine, rows, slots.take(r * n, (r + 1) * n), cfg, path))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def reference_features(track: TrackLike, engine, slots: Slots, n: int, cfg: ScoreConfig) -> dict:
    """Probe features of the reference half's ``n`` rows in every slot (row order from the
    ``scorer.reference_order`` stream); cached per track, probe config, seed, ``n`` and round."""
    return round_features(track, engine, None, slots, n, cfg)
