"""``plateau``: the command line over the whole suite. ``plateau <command> --help`` explains each."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

import tyro

from challenge.errors import ChallengeError

log = logging.getLogger("plateau")


def _track(track: str, build: bool = True):
    """A track by directory, or by registered id (built into the cache when missing)."""
    from challenge.track import build_track, default_track_dir, get_spec, load_track

    p = Path(track)
    if (p / "track.json").exists():
        return load_track(p)
    spec = get_spec(track)
    d = default_track_dir(spec)
    if not (d / "manifest.json").exists():
        if not build:
            raise ChallengeError(
                f"track {track} is not built; run `plateau build {track}`", field="track"
            )
        print(f"[plateau] building track {spec.track_id} into {d}", file=sys.stderr)
        build_track(spec, d)
    return load_track(d)


def build(track: str = "smollm2-135m-l1", /, out: Path | None = None) -> Path:
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
        f"built {spec.track_id} v{spec.version} -> {path} ({size / 1e6:.1f} MB, {time.perf_counter() - t0:.1f} s)"
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
    track_id: str = "smollm2-135m-l1",
    version: str = "1.0.0",
    cache_dir: Path | None = None,
) -> None:
    """Fetch a pinned track version (hub `hf://<org>/<repo>` or local registry) and verify its checksums."""
    from challenge.store import download as _download

    print(_download(source, track_id=track_id, version=version, cache_dir=cache_dir))


def protocol(
    protocol: str = "p1",
    /,
    track: str = "smollm2-135m-l1",
    out: Path = Path("runs/protocols"),
    scheme: str = "relative",
    units: str = "scale_free",
    n: int = 200,
    seed: int = 0,
    sae: Path | None = None,
) -> Path:
    """Run a published protocol (p1 teren, p2 stable regions, p3 sensitive directions) on a track.

    Writes <out>/<track>_<protocol>[_<scheme>].json (+ .npz arrays, + .png plot).

    Args:
        protocol: p1, p2 or p3.
        track: registered track id or a track directory.
        scheme: P1 step scheme, relative or absolute.
        units: gpt2 (published constants) or scale_free (relative to the track's measured norms).
        n: number of curves (P1), pairs (P2) or base activations (P3).
        sae: P3 only: an SAE directory (from `plateau train-sae`) to add SAE decoder directions.
    """
    from challenge import protocols as P
    from challenge.models import load_model
    from challenge.plots import plot_curve_groups
    from challenge.results import provenance, save_result

    tr = _track(track)
    lm = load_model(tr.spec.model)
    eng = tr.engine(lm)
    name = f"{tr.spec.track_id}_{protocol}"
    if protocol == "p1":
        cfg = P.P1Config(scheme=scheme, units=units, n_curves=n, seed=seed)
        doc, arrays = P.run_p1(tr, eng, cfg)
        name += f"_{scheme}_{units}"
        panels = {
            "L2 at read-out (normalised)": {
                "real": arrays["real_l2"],
                "random": arrays["random_l2"],
            },
            "KL (normalised)": {"real": arrays["real_kl"], "random": arrays["random_kl"]},
        }
        plot_kw = {"normalise": True}
    elif protocol == "p2":
        cfg = P.P2Config(n_pairs=n, seed=seed)
        doc, arrays = P.run_p2(tr, eng, cfg)
        groups = {"real": arrays["real_l2"]} | (
            {"random": arrays["random_l2"]} if "random_l2" in arrays else {}
        )
        panels = {"d(alpha)/d(1)": groups}
        plot_kw = {
            "normalise": True,
            "x": __import__("numpy").linspace(0, 1, cfg.n_steps),
            "xlabel": "alpha",
        }
    elif protocol == "p3":
        cfg = P.P3Config(units=units, n_base=n, seed=seed)
        extra = None
        if sae is not None:
            from challenge.sae import load_sae, sae_direction_sets

            extra = sae_direction_sets(load_sae(sae), tr, n_base=n, seed=seed)
        doc, arrays = P.run_p3(tr, eng, cfg, extra)
        name += f"_{units}"
        kinds = list(doc["directions"])
        panels = {
            "KL(original || perturbed)": {k: arrays[f"{k}_kl"] for k in kinds},
            "L2 at read-out": {k: arrays[f"{k}_l2"] for k in kinds},
        }
        plot_kw = {"x": arrays["lengths"], "xlabel": "perturbation length"}
    else:
        raise ChallengeError(f"unknown protocol {protocol!r} (p1, p2, p3)", field="protocol")
    doc["track"] = {"id": tr.spec.track_id, "version": tr.spec.version, "units": tr.units}
    doc["provenance"] = provenance(lm.provenance | eng.describe())
    path = save_result(out, name, doc, arrays)
    plot_curve_groups(
        {},
        out / f"{name}.png",
        panels=panels,
        title=f"{protocol.upper()} on {tr.spec.track_id}",
        **plot_kw,
    )
    print(json.dumps(_headline(doc), indent=1))
    print(f"wrote {path}")
    return path


def _headline(doc: dict) -> dict:
    if doc["protocol"] == "p1":
        return {
            k: {"real": v["ref"]["mean"], "random": v["other"]["mean"], "ks": v["ks"]}
            for k, v in doc["features"].items()
        }
    if doc["protocol"] == "p2":
        return doc["sharpness"]
    return {k: v["length_to_kl_threshold"] for k, v in doc["directions"].items()}


def _commands() -> dict:
    cmds = {
        "build": build,
        "tracks": tracks,
        "publish": publish,
        "download": download,
        "protocol": protocol,
    }
    # each area contributes its commands as a COMMANDS dict in its own cli module
    import importlib

    for mod in CLI_MODULES:
        try:
            cmds |= importlib.import_module(mod).COMMANDS
        except ModuleNotFoundError as e:
            if not (
                e.name and mod.startswith(e.name)
            ):  # a missing area is fine; a broken one is not
                raise
    return cmds


CLI_MODULES = (
    "challenge.challenge_cli",  # generate, validate, score, submit, leaderboard, main
    "baselines.cli",  # train-sae, find-features
    "challenge.studies.cli",  # study
    "challenge.interactions.cli",  # interactions
)


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    try:
        tyro.extras.subcommand_cli_from_dict(
            _commands(),
            args=argv,
            prog="plateau",
            description=__doc__,
            config=(tyro.conf.OmitArgPrefixes,),
        )
    except ChallengeError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
