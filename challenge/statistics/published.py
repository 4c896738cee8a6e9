"""A track's statistics artifact, where the statistics tier finds it.

The artifact published with a track lives in ``<track>/statistics/`` (beside ``saes/``; shipped
by ``plateau publish`` and fetched and verified by ``plateau download``): the same artifact on
every machine. A track without one gets it built here from its public split and its SAE
(``plateau build-statistics``) and cached in ``<cache>/statistics/<track_id>/v<version>/k<k>/``.

The artifact names the SAE it was built with (``meta["sae"]["sha256"]``); :func:`statistics_inputs`
hands a generator the artifact together with *that* SAE and refuses a mismatch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from challenge.errors import ConfigError, TrackIntegrityError
from challenge.statistics.artifact import (
    MANIFEST,
    StatisticsConfig,
    TrackStatistics,
    build_statistics,
    load_statistics,
    save_statistics,
    verify_statistics,
)

STATISTICS_FOLDER = "statistics"
"""A published track's statistics artifact: ``<track>/statistics/``."""


def published_statistics_dir(track: Any) -> Path | None:
    """The artifact published with ``track`` (``<track>/statistics/``, or the registry's copy of
    the same track version: ``challenge.track.published_folder``), or ``None``."""
    from challenge.track import published_folder

    return published_folder(track, STATISTICS_FOLDER, MANIFEST)


def statistics_cache_dir(track: Any, cfg: StatisticsConfig | None = None) -> Path:
    """Where an artifact built on this machine is cached (one per ``k``)."""
    from challenge.models import cache_root

    k = (cfg or StatisticsConfig()).k
    return cache_root() / "statistics" / track.spec.track_id / f"v{track.spec.version}" / f"k{k}"


def statistics_dir(
    track: Any, cfg: StatisticsConfig | None = None, *, rebuild: bool = False
) -> Path:
    """Where :func:`track_statistics` reads the track's artifact from: the published one
    (unless ``rebuild``), else this machine's cache for ``cfg`` (which may not exist yet)."""
    pub = None if rebuild else published_statistics_dir(track)
    return pub or statistics_cache_dir(track, cfg)


def verify_published_statistics(track_dir: str | Path) -> dict[str, Any] | None:
    """The manifest of the artifact published in ``track_dir`` after checking every file
    (``None`` when the track has none)."""
    d = Path(track_dir) / STATISTICS_FOLDER
    if not d.exists():
        return None
    return verify_statistics(d)


def track_statistics(
    track: Any,
    cfg: StatisticsConfig | None = None,
    *,
    sae: Any = None,
    build: bool = True,
    rebuild: bool = False,
) -> TrackStatistics:
    """The track's statistics artifact: the published one (``cfg`` must be None or equal to
    its config), else the one cached on this machine for ``cfg``, else (``build``) built from
    the public split and ``sae`` (default: the track's SAE, ``challenge.sae.track_sae``, which
    must exist) and cached. Verified on every load."""
    pub = None if rebuild else published_statistics_dir(track)
    if pub is not None:
        stats = load_statistics(pub)
        if cfg is not None and stats.config != cfg:
            raise ConfigError(
                f"the track publishes an artifact with {stats.config.to_dict()}; "
                f"asked for {cfg.to_dict()}",
                file=str(pub),
                field="statistics",
            )
        return stats
    d = statistics_cache_dir(track, cfg)
    if (d / MANIFEST).exists() and not rebuild:
        return load_statistics(d)
    if not build:
        raise ConfigError(
            f"no statistics artifact for {track.spec.track_id} v{track.spec.version} "
            f"(k={(cfg or StatisticsConfig()).k}); run `plateau build-statistics "
            f"{track.spec.track_id}`",
            field="statistics",
        )
    if sae is None:
        from challenge.sae import track_sae

        sae = track_sae(track, train=False)
    save_statistics(build_statistics(track, sae, cfg), d)
    return load_statistics(d)


def statistics_inputs(
    track: Any, cfg: StatisticsConfig | None = None, *, with_sae: bool = True
) -> tuple[TrackStatistics, Any]:
    """What a statistics-tier generator's ``fit`` receives: the track's artifact and the SAE it
    was built with (the track's SAE, which must exist; ``TrackIntegrityError`` when its
    checksum differs from the one the artifact names), or ``None`` for the SAE unless
    ``with_sae``."""
    from challenge.sae import track_sae

    sae = track_sae(track, train=False)
    stats = track_statistics(track, cfg, sae=sae)
    if not with_sae:
        return stats, None
    check_artifact_sae(stats.meta.get("sae") or {}, sae, str(sae.meta.get("source")))
    return stats, sae


def check_artifact_sae(info: dict[str, Any], sae: Any, where: str) -> None:
    """``sae`` is the SAE an artifact names (its ``statistics.json`` ``sae``): the same kind and
    sizes and, when both are known, the same folder checksum; ``TrackIntegrityError`` naming
    ``where`` otherwise (rebuild the artifact: ``plateau build-statistics --rebuild``)."""
    have = {"kind": sae.kind, "n_latents": int(sae.n_latents), "d_in": int(sae.d_in)}
    if sae.kind == "topk":
        have["k"] = int(sae.k)
    for key, got in have.items():
        if key in info and info[key] != got:
            raise TrackIntegrityError(
                f"the artifact was built with an SAE of {key} {info[key]!r}; this SAE has {got!r}",
                file=where,
                field="sae",
            )
    want, src = info.get("sha256"), sae.meta.get("source")
    if want and src and Path(src).is_dir():
        from challenge.store import sae_checksum

        got = sae_checksum(src)
        if got != want:
            raise TrackIntegrityError(
                f"the artifact was built with SAE {want[:16]}...; this SAE is {got[:16]}... "
                "(rebuild it: `plateau build-statistics --rebuild`)",
                file=where,
                field="sae",
            )
