"""Track commands: build, build-statistics, tracks, publish, download."""

from __future__ import annotations

import time
from pathlib import Path

from challenge.errors import ConfigError
from challenge.track import DEFAULT_TRACK


def build(
    track: str = DEFAULT_TRACK,
    /,
    out: Path | None = None,
    private: bool = False,
    secret_seed: int | None = None,
    source: str | None = None,
) -> Path:
    """Build a challenge track's real activation sets (public / heldout / context splits), or
    with --private its never-published test split (docs/integrity.md).

    Args:
        track: registered track id (see `plateau tracks`), a JSON TrackSpec file, or (with
            --private) a built track directory.
        out: output directory (default: the local cache, $PLATEAU_CACHE/tracks/<id>/v<version>;
            with --private $PLATEAU_CACHE/private/<id>/v<version>). Keep a private split apart
            from anything published.
        private: build the private test split: windows in none of the published splits, drawn
            with a secret seed; the published held-out split becomes the dev split.
        secret_seed: the private split's seed (default: 63 random bits, recorded only in the
            private folder's track.json).
        source: the private split's prompt source (default: the track's own), e.g.
            textfile:<path> of texts the organiser keeps.
    """
    from challenge.track import build_track, get_spec, load_track, local_registry, published_copy

    t0 = time.perf_counter()
    if private:
        from challenge.models import load_model
        from challenge.private import build_private_split
        from challenge.track import resolve_track

        tr = resolve_track(track)
        path = build_private_split(
            tr, load_model(tr.spec.model), secret_seed=secret_seed, source=source, out=out
        )
        print(
            f"built the private test split of {tr.spec.track_id} -> {path} "
            f"({time.perf_counter() - t0:.1f} s); keep it apart from the published track"
        )
        return path
    spec = get_spec(track)
    path = build_track(spec, out)
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    print(
        f"built {spec.track_id} v{spec.version} -> {path} "
        f"({size / 1e6:.1f} MB, {time.perf_counter() - t0:.1f} s); "
        f"data sha256 {load_track(path).data_sha256}"
    )
    published = published_copy(spec)
    if published is not None:
        print(
            f"note: {published} publishes this version (the board's data); this build may differ "
            f"from it by fp32 rounding. `plateau download {local_registry()}` fetches it."
        )
    return path


def build_statistics(track: str = DEFAULT_TRACK, /, k: int = 10, rebuild: bool = False) -> Path:
    """Build a track's statistics artifact (the statistics tier's only view of the data:
    aggregates of the public split over >= k rows each, and SAE latent statistics of the
    track's SAE; docs/integrity.md) into the local cache; `plateau publish` ships it.

    Args:
        track: registered track id, a JSON TrackSpec file, or a built track directory.
        k: the fewest public rows any statistic may aggregate.
        rebuild: build even when the track publishes one or one is cached.
    """
    from challenge.statistics import StatisticsConfig
    from challenge.statistics.published import statistics_dir, track_statistics
    from challenge.track import resolve_track

    t0 = time.perf_counter()
    tr = resolve_track(track)
    cfg = StatisticsConfig(k=k)
    stats = track_statistics(tr, cfg, rebuild=rebuild)
    path = statistics_dir(tr, cfg, rebuild=rebuild)
    size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    print(
        f"statistics artifact of {tr.spec.track_id} v{tr.spec.version} (k = {stats.k}, "
        f"{stats.n_rows} public rows) -> {path} ({size / 1e6:.1f} MB, "
        f"{time.perf_counter() - t0:.1f} s)"
    )
    return path


def tracks() -> None:
    """List the registered track specs."""
    from challenge.track import TRACKS

    for k, s in TRACKS.items():
        print(
            f"{k:24s} v{s.version}  model={s.model.name}  write={s.write_hook}  prompts={s.prompts.source}"
        )
        print(f"{'':24s} {s.description}")


def publish(
    track_dir: Path,
    dest: str,
    /,
    sae: tuple[Path, ...] = (),
    board_saes: bool = True,
    statistics: bool = True,
) -> None:
    """Publish a built track: to the hub (`hf://<org>/<repo>`) or to a local registry directory,
    with its SAEs (SAELens layout + checksummed manifest, fetched by `plateau download`).

    Args:
        sae: more SAE folders to publish with the track.
        board_saes: also publish the SAEs the board's generators use (the track's default local
            and e2e SAEs, where trained), so every machine scores with the same ones.
        statistics: also publish the track's statistics artifact (`plateau build-statistics`),
            where built.
    """
    from challenge.sae.track import board_sae_dirs
    from challenge.statistics.published import published_statistics_dir, statistics_cache_dir
    from challenge.store import publish as _publish
    from challenge.track import load_track

    tr = load_track(track_dir)
    dirs = list(sae)
    if board_saes:
        dirs += [d for d in board_sae_dirs(tr) if d not in dirs]
    art = None
    if statistics and published_statistics_dir(tr) is None:
        cached = statistics_cache_dir(tr)
        art = cached if (cached / "manifest.json").exists() else None
    print(_publish(track_dir, dest, saes=dirs, statistics=art))
    for d in dirs:
        print(f"  with SAE {d.name}")
    if art is not None:
        print(f"  with the statistics artifact {art}")


def download(
    source: str,
    /,
    track_id: str = DEFAULT_TRACK,
    version: str | None = None,
    cache_dir: Path | None = None,
) -> None:
    """Fetch a pinned track version (hub `hf://<org>/<repo>` or local registry) and verify its
    checksums. ``version`` defaults to the registered track's current version."""
    from challenge.store import download as _download
    from challenge.track import TRACKS

    if version is None:
        if track_id not in TRACKS:
            raise ConfigError(
                f"{track_id!r} is not a registered track; give its --version", field="version"
            )
        version = TRACKS[track_id].version

    print(_download(source, track_id=track_id, version=version, cache_dir=cache_dir))
