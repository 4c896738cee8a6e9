"""Does the board reproduce under other floating-point rounding, or on another machine? Re-probe
the reference and board entries in the board's seed-0 slots (every context round of the
records' config) with no cache, with another number of CPU threads, other CPU kernels
(``ATEN_CPU_CAPABILITY=default``: ATen's scalar kernels instead of AVX2, other reduction orders in softmax, norms and sums: the kind of fp32 difference
another CPU makes; ``MKL_ENABLE_INSTRUCTIONS``) or on a fresh machine, and compare per-point
features and headlines with the committed records. The reference is probed once for all
entries; the track built here is compared with the records' manifest checksum.

    python benchmarks/scorer_threads.py --entry token_cluster --threads 2 --out runs/threads.json
    ATEN_CPU_CAPABILITY=default python benchmarks/scorer_threads.py --threads 1 --out runs/kernels.json
    python benchmarks/scorer_threads.py --entry all --threads 2 --out runs/machine.json   # a fresh machine
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from challenge import rng
from challenge.models import load_model
from challenge.results import machine, to_jsonable
from challenge.scoring import ScoreReport, load_report
from challenge.scoring.classifier import compare
from challenge.scoring.probing import make_slots, round_features, track_identity
from challenge.submission import read_submission
from challenge.track import resolve_track


def agreement(new: dict, old: dict) -> dict:
    """Per feature: share of points bit-identical, and the largest absolute difference."""
    return {
        k: {
            "identical": float(np.mean(new[k] == old[k])),
            "max_abs_diff": float(np.max(np.abs(new[k] - old[k]))),
        }
        for k in sorted(new)
    }


def run_machine() -> dict:
    """What the probes ran on."""
    return {
        **machine(),
        "node": platform.node(),
        "cpu_count": os.cpu_count(),
        "env": {k: os.environ.get(k) for k in ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")},
        "torch": torch.__version__,
    }


def load_record(path: Path) -> tuple[ScoreReport, dict, dict]:
    """A committed report and its stored per-point features (reference, submission)."""
    report = load_report(path)
    return report, report.data.reference, report.data.submission


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--track", default="smollm2-135m-l1")
    ap.add_argument("--entry", nargs="+", default=["heldout_real"], help="entries, or `all`")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--board", type=Path, default=Path("leaderboard"))
    ap.add_argument("--submissions", type=Path, default=Path("submissions"))
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    track = resolve_track(a.track)
    board = a.board / track.spec.track_id
    entries = a.entry
    if entries == ["all"]:
        entries = sorted(p.stem for p in board.glob("*.json") if (board / f"{p.stem}.npz").exists())
    missing = [e for e in entries if not (board / f"{e}.npz").exists()]
    if missing or not entries:
        raise SystemExit(f"{board}: no record with per-point features for {missing or 'any entry'}")
    records = {e: load_record(board / f"{e}.json") for e in entries}
    configs = {json.dumps(to_jsonable(r.config), sort_keys=True) for r, _, _ in records.values()}
    if len(configs) != 1:
        raise SystemExit(
            f"{board}: the entries were scored with {len(configs)} configs; pass one config's"
        )
    cfg = next(iter(records.values()))[0].config
    lm = load_model(track.spec.model)
    n = track.required_n
    slots = make_slots(track, n, cfg)
    engine = track.engine(lm, progress=True)
    doc = {
        "threads": a.threads,
        "machine": run_machine(),
        "track": {
            "built_here": track_identity(track),
            "records": sorted({r.track.manifest_sha256 for r, _, _ in records.values()}),
        },
        "entries": {},
    }
    t = time.perf_counter()
    new_ref = round_features(track, engine, None, slots, n, cfg, cache=False)
    doc["reference"] = {"seconds": round(time.perf_counter() - t, 1)}
    for e, (old, old_ref, old_sub) in records.items():
        t = time.perf_counter()
        _, points = read_submission(a.submissions / track.spec.track_id / e)
        rows = rng.subset(len(points), n, cfg.seed, "scorer.rows")
        new_sub = round_features(track, engine, points[rows], slots, n, cfg, cache=False)
        head, _, _ = compare(new_ref, new_sub, cfg)
        doc["entries"][e] = {
            "seconds": round(time.perf_counter() - t, 1),
            "reference": agreement(new_ref, old_ref),
            "submission": agreement(new_sub, old_sub),
            "headline": {
                "new": head.score,
                "new_ci": list(head.ci),
                "record": old.headline.score,
                "record_ci": list(old.headline.ci),
            },
        }
        print(e, json.dumps(doc["entries"][e]["headline"]), flush=True)
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(doc, indent=1))  # after every entry: a partial run is kept
    print(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
