"""Does a record reproduce under other floating-point rounding? Re-probe one board entry and the
reference in the board's seed-0 slots with another number of CPU threads, or other CPU kernels
(``ATEN_CPU_CAPABILITY=default``: ATen's scalar kernels instead of AVX2, other reduction orders
in softmax, norms and sums: the kind of fp32 difference another CPU makes;
``MKL_ENABLE_INSTRUCTIONS``), without the reference cache, and compare per-point features and
the headline with the committed record.

    python benchmarks/scorer_threads.py --entry token_cluster --threads 2 --out runs/threads.json
    ATEN_CPU_CAPABILITY=default python benchmarks/scorer_threads.py --threads 1 --out runs/kernels.json
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
from challenge.probes import run_probes
from challenge.scorer import (
    ScoreReport,
    compare,
    make_slots,
    n_slots,
    reference_rows,
    stored_features,
)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--track", default="smollm2-135m-l1")
    ap.add_argument("--entry", default="heldout_real")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--board", type=Path, default=Path("leaderboard"))
    ap.add_argument("--submissions", type=Path, default=Path("submissions"))
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    track = resolve_track(a.track)
    lm = load_model(track.spec.model)
    record = a.board / track.spec.track_id / f"{a.entry}.json"
    old = ScoreReport.from_json(json.loads(record.read_text()))
    cfg = old.config
    with np.load(record.with_suffix(".npz")) as z:
        arrays = dict(z)
    old_ref, old_sub = stored_features(arrays, "reference"), stored_features(arrays, "submission")
    _, points = read_submission(a.submissions / track.spec.track_id / a.entry)
    n = n_slots(track)
    slots = make_slots(track, n, cfg)
    engine = track.engine(lm, progress=True)
    t = time.perf_counter()
    ref = track.acts("heldout")[reference_rows(track)]
    ref = ref[rng.subset(len(ref), n, cfg.seed, "scorer.reference_order")]
    new_ref = run_probes(engine, ref, slots, track.acts("public"), track.units, cfg.probes)
    rows = rng.subset(len(points), n, cfg.seed, "scorer.rows")
    new_sub = run_probes(engine, points[rows], slots, track.acts("public"), track.units, cfg.probes)
    head, _, _ = compare(new_ref, new_sub, cfg)
    doc = {
        "entry": a.entry,
        "threads": a.threads,
        "cpu": platform.processor() or platform.machine(),
        "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "env": {k: os.environ.get(k) for k in ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")},
        "torch": torch.__version__,
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
    print(json.dumps(doc, indent=1))
    a.out.write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
