"""What scoring one entry costs on this machine: the default probes of ``--points`` rows of a
submission in the board's seed-0 slots, timed with 1 and with ``--threads`` torch threads
(interleaved repeats, the minimum of each), and the projected time of an entry at 1, 2 and 3
contexts per row (the reference's features are cached per track and seed, so an entry pays
for its own rows only: ``rows x contexts x seconds per point``).

    python benchmarks/scorer_cost.py --points 100 --threads 2 --out runs/cost.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from challenge import rng
from challenge.models import load_model
from challenge.probes import run_probes
from challenge.scoring import ScoreConfig
from challenge.scoring.probing import make_slots
from challenge.submission import read_submission
from challenge.track import resolve_track


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--track", default="smollm2-135m-l1")
    ap.add_argument("--entry", default="token_cluster")
    ap.add_argument("--points", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--submissions", type=Path, default=Path("submissions"))
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    track = resolve_track(a.track)
    lm = load_model(track.spec.model)
    cfg = ScoreConfig()
    _, acts = read_submission(a.submissions / track.spec.track_id / a.entry)
    pts = acts[rng.subset(len(acts), a.points, cfg.seed, "scorer.rows")]
    slots = make_slots(track, a.points, cfg)
    engine = track.engine(lm, progress=False)
    best = {1: float("inf"), a.threads: float("inf")}
    for _ in range(a.repeats):
        for th in best:
            torch.set_num_threads(th)
            t = time.perf_counter()
            run_probes(engine, pts, slots, track.acts("public"), track.units, cfg.probes)
            best[th] = min(best[th], time.perf_counter() - t)
    rows = track.required_n
    doc = {
        "entry": a.entry,
        "points": a.points,
        "cpu": platform.processor() or platform.machine(),
        "cores": torch.get_num_threads(),
        "torch": torch.__version__,
        "seconds_per_point": {str(th): s / a.points for th, s in best.items()},
        "speedup": best[1] / best[a.threads],
        "minutes_per_entry": {
            f"{th} threads, c={c}": round(rows * c * s / a.points / 60, 1)
            for th, s in best.items()
            for c in (1, 2, 3)
        },
    }
    print(json.dumps(doc, indent=1))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
