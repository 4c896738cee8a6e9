"""Track commands: build, tracks, publish, download."""

from __future__ import annotations

import time
from pathlib import Path

from challenge.track import DEFAULT_TRACK


def build(track: str = DEFAULT_TRACK, /, out: Path | None = None) -> Path:
    """Build a challenge track's real activation sets (public / heldout / context splits).

    Args:
        track: registered track id (see `plateau tracks`) or a JSON TrackSpec file.
        out: output directory (default: the local cache, $PLATEAU_CACHE/tracks/<id>/v<version>).
    """
    from challenge.track import build_track, get_spec

    spec = get_spec(track)
    t0 = time.perf_counter()
    path = build_track(spec, out)
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    print(
        f"built {spec.track_id} v{spec.version} -> {path} "
        f"({size / 1e6:.1f} MB, {time.perf_counter() - t0:.1f} s)"
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


def publish(track_dir: Path, dest: str, /) -> None:
    """Publish a built track: to the hub (`hf://<org>/<repo>`) or to a local registry directory."""
    from challenge.store import publish as _publish

    print(_publish(track_dir, dest))


def download(
    source: str,
    /,
    track_id: str = DEFAULT_TRACK,
    version: str = "1.0.0",
    cache_dir: Path | None = None,
) -> None:
    """Fetch a pinned track version (hub `hf://<org>/<repo>` or local registry) and verify its
    checksums."""
    from challenge.store import download as _download

    print(_download(source, track_id=track_id, version=version, cache_dir=cache_dir))
