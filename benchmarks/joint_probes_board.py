"""The joint probe ``p2dir`` at the board's size, on the board's own points (issue "challenge
v3", item 3; docs/joint-probes.md, "At the board's size").

The board's records store every entry's per-point features (radius + p2) and the rows it scored;
the published reference features are the board's reference. This script probes ``p2dir`` (the
radius along the P2 path's direction and its opposite, ``challenge.joint_probes``) at the same
points in the same slots (``make_slots`` of the board's config; every context round), so that each
entry can be scored with the board's features plus ``p2dir`` without probing radius and p2 again:

- ``current``: the stored features (reproduces the record's headline, a check);
- ``+p2dir radii``: + ``p2dir.toward_log``, ``p2dir.away_log`` and their ``joint.*`` ratios to
  the isotropic radius (plateau features only);
- ``+p2dir``: + ``p2dir.frac_log`` and ``joint.sharp_per_plateau`` (which hold the distance to the
  nearest public row).

Per set: the real-vs-real null band (label swaps of the oracle's features, ``heldout_real``'s
record, against the reference; ``scoring.null.band_of``), the two feature-level constructions of
``challenge.constructions`` (the oracle's blocks glued across rows, ``glue_seeds`` seeds; the
``gaussian`` entry's features quantile-matched onto the reference's), and every entry's score.

p2dir features are cached per entry in ``--out-dir`` (keyed by the points' bytes and the
configs); the table is rewritten after every entry (resumable).

    OMP_NUM_THREADS=1 python benchmarks/joint_probes_board.py --track smollm2-135m-l1
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from challenge.constructions import glue_probes, quantile_match
from challenge.joint_probes import JointProbes, run_joint_probes
from challenge.neighbours import nearest
from challenge.scoring.null import NullConfig, band_of, headline_auc, unclipped_score
from challenge.scoring.probing import make_slots, reference_points, track_identity
from challenge.scoring.reference import published_reference
from challenge.scoring.report import load_report

sys.path.insert(0, str(Path(__file__).parent))
from joint_probes import DISTANCE, exclude_from, score_of, set_features  # noqa: E402

SETS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "current": (("radius", "p2"), ()),
    "+p2dir radii": (("radius", "p2", "p2dir"), DISTANCE),
    "+p2dir": (("radius", "p2", "p2dir"), ()),
}
FIRST = ("heldout_real", "gaussian", "stats_token_cluster", "token_cluster")
"""Entries probed first (the null band, the constructions and the tiers' tops need them)."""


def entry_points(track, name: str, rows: np.ndarray) -> torch.Tensor:
    """The rows an entry's record scored, from its submission folder."""
    from challenge.submission import read_submission

    acts = read_submission(Path("submissions") / track.spec.track_id / name)[1].float()
    return acts[torch.from_numpy(np.asarray(rows, dtype=np.int64))]


def p2dir_features(engine, track, pts, slots, n, cfg, joint, out_dir: Path) -> tuple[dict, float]:
    """``p2dir``'s features of ``pts`` in every context round (round-major, as the board's),
    cached by the points' bytes; and the seconds they took (0 when read from the cache)."""
    key = {
        "track": track_identity(track),
        "probes": asdict(cfg.probes),
        "joint": asdict(joint),
        "seed": cfg.seed,
        "contexts": cfg.contexts_per_row,
        "points": hashlib.sha256(pts.contiguous().numpy().tobytes()).hexdigest(),
    }
    h = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = out_dir / f"p2dir_{h}.npz"
    if path.exists():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}, 0.0
    public = track.acts("public")
    near = public[nearest(pts, public)[1]]
    t0 = time.perf_counter()
    parts = []
    for r in range(cfg.contexts_per_row):
        s = slots.take(r * n, (r + 1) * n)
        parts.append(
            run_joint_probes(engine, pts, s, near, track.units, cfg.probes, joint, only=("p2dir",))
        )
    feats = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    sec = time.perf_counter() - t0
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **feats)
    tmp.replace(path)
    return feats, sec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--track", default="smollm2-135m-l1")
    ap.add_argument("--board", default="leaderboard")
    ap.add_argument("--only", nargs="*", default=None, help="entries (default: every record)")
    ap.add_argument("--swaps", type=int, default=40, help="label swaps of the null band")
    ap.add_argument("--glue-seeds", type=int, default=3)
    ap.add_argument("--out-dir", default="runs/joint_board")
    ap.add_argument("--no-score", action="store_true", help="probe only")
    a = ap.parse_args()
    torch.set_num_threads(1)
    from challenge.models import load_model
    from challenge.track import resolve_track

    t_start = time.perf_counter()
    track = resolve_track(a.track)
    board = Path(a.board) / track.spec.track_id
    records = {p.stem: p for p in sorted(board.glob("*.json"))}
    names = [n for n in FIRST if n in records] + [n for n in records if n not in FIRST]
    if a.only:
        names = [n for n in names if n in a.only or n in FIRST]
    reports = {n: load_report(records[n]) for n in names}
    cfg = reports["heldout_real"].config
    assert all(r.config == cfg for r in reports.values()), "records of one config only"
    n = len(reports["heldout_real"].arrays["rows"])
    pub = published_reference(track, cfg, n)
    assert pub is not None, "the board's reference features must be published"
    joint = JointProbes(probes=("p2dir",))
    slots = make_slots(track, n, cfg)
    lm = load_model(track.spec.model)
    engine = track.engine(lm, progress=False)
    out_dir = Path(a.out_dir) / track.spec.track_id
    kl = cfg.probes.radius_kl

    feats: dict[str, dict] = {}
    secs: dict[str, float] = {}
    f, secs["reference"] = p2dir_features(
        engine, track, reference_points(track, n, cfg), slots, n, cfg, joint, out_dir
    )
    feats["reference"] = dict(pub[0]) | f
    print(f"reference: p2dir {secs['reference']:.0f} s", flush=True)
    table_path = out_dir / "table.json"
    sets: dict[str, dict] = {}
    for name in names:
        arr = reports[name].load_arrays()
        pts = entry_points(track, name, arr.rows)
        f, secs[name] = p2dir_features(engine, track, pts, slots, n, cfg, joint, out_dir)
        feats[name] = dict(arr.submission) | f
        print(f"{name}: p2dir {secs[name]:.0f} s", flush=True)
    if a.no_score:
        return
    for sname, (probes, exclude) in SETS.items():
        t0 = time.perf_counter()
        F = {g: set_features(v, probes, kl, exclude) for g, v in feats.items()}
        ref = F["reference"]
        derive = exclude_from(exclude)
        band = band_of(ref, F["heldout_real"], cfg, NullConfig(n_swaps=a.swaps))
        glued = [
            glue_probes(F["heldout_real"], seed=s, contexts=cfg.contexts_per_row, derive=derive)
            for s in range(a.glue_seeds)
        ]
        quant = quantile_match(F["gaussian"], ref, derive)
        res = {
            "features": sorted(ref),
            "null_band": [band.lo, band.hi],
            "null_median": band.median,
            "glued": score_of(ref, glued[0], cfg)
            | {
                "unclipped_seeds": [
                    float(unclipped_score(headline_auc(ref, g, cfg))) for g in glued
                ]
            },
            "quantile_matched": score_of(ref, quant, cfg),
            "entries": {},
        }
        for name in names:
            res["entries"][name] = score_of(ref, F[name], cfg)
            if sname == "current":
                res["entries"][name]["record"] = reports[name].headline.score
        sets[sname] = res
        print(f"{sname}: scored in {time.perf_counter() - t0:.0f} s", flush=True)
    doc = {
        "track": a.track,
        "manifest": track_identity(track),
        "n_rows": n,
        "contexts_per_row": cfg.contexts_per_row,
        "score_config": asdict(cfg),
        "joint": asdict(joint),
        "swaps": a.swaps,
        "glue_seeds": a.glue_seeds,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "p2dir_seconds": secs,
        "sets": sets,
        "wall_seconds": time.perf_counter() - t_start,
    }
    table_path.parent.mkdir(parents=True, exist_ok=True)
    table_path.write_text(json.dumps(doc, indent=1))
    print_table(doc)
    print(f"\nwrote {table_path}")


def fmt(r: dict) -> str:
    return f"{r['score']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]"


def print_table(doc: dict) -> None:
    sets = doc["sets"]
    print("\n| | " + " | ".join(sets) + " |")
    print("|---|" + "---|" * len(sets))
    print(
        "| null band | "
        + " | ".join(f"{s['null_band'][0]:.3f} - {s['null_band'][1]:.3f}" for s in sets.values())
        + " |"
    )
    for c in ("glued", "quantile_matched"):
        print(
            f"| {c} (unclipped) | "
            + " | ".join(f"{fmt(s[c])} ({s[c]['unclipped']:.3f})" for s in sets.values())
            + " |"
        )
    first = next(iter(sets.values()))
    for name in first["entries"]:
        print(f"| {name} | " + " | ".join(fmt(s["entries"][name]) for s in sets.values()) + " |")


if __name__ == "__main__":
    main()
