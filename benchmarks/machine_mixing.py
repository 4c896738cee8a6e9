"""What mixing machines does to a board: the reference features probed here against the ones the
board's records hold (probed on another machine), and every record's headline re-made with this
machine's reference against its stored submission features (docs/scoring.md, "Reference
features and machines").

The reference half is probed here once (cached per round like any scoring run; ~6 min at 2
threads for the SmolLM2 layer-1 board), then each record costs one classifier run.

    python benchmarks/machine_mixing.py --track smollm2-135m-l1 --out runs/mixing/mixing.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from challenge.models import load_model
from challenge.results import machine
from challenge.scoring.board import load_records
from challenge.scoring.classifier import compare
from challenge.scoring.probing import make_slots, round_features
from challenge.scoring.reference import board_reference
from challenge.track import resolve_track


def drift(here: dict[str, np.ndarray], there: dict[str, np.ndarray]) -> dict[str, dict]:
    """Per feature: the share of points equal bit for bit, and |here - there| quantiles."""
    out = {}
    for k in sorted(there):
        d = np.abs(here[k] - there[k])
        out[k] = {
            "equal": float((d == 0).mean()),
            "median": float(np.median(d)),
            "p95": float(np.quantile(d, 0.95)),
            "max": float(d.max()),
            "sd_of_feature": float(np.std(there[k])),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--track", default="smollm2-135m-l1")
    ap.add_argument("--board", type=Path, default=Path("leaderboard"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    track = resolve_track(a.track)
    recs = load_records(track.spec.track_id, a.board)
    there, prov = board_reference(recs)
    cfg = next(iter(recs.values())).config
    n = len(next(iter(there.values()))) // cfg.contexts_per_row
    t0 = time.perf_counter()
    lm = load_model(track.spec.model)
    here = round_features(
        track, track.engine(lm, progress=False), None, make_slots(track, n, cfg), n, cfg
    )
    seconds = time.perf_counter() - t0
    rows = []
    for _, rep in sorted(recs.items()):
        arr = rep.load_arrays()
        head, _, _ = compare(here, arr.submission, cfg)
        boot = arr.bootstrap
        rows.append(
            {
                "name": rep.submission["name"],
                "record": rep.headline.score,
                "mixed": head.score,
                "delta": head.score - rep.headline.score,
                "bootstrap_sd": float(np.std(boot)) if boot is not None else None,
            }
        )
    doc = {
        "track": track.spec.track_id,
        "records_probed_on": {k: prov.get(k) for k in ("cpu", "cpu_capability", "torch")},
        "here": machine() | {"platform": platform.platform()},
        "reference_seconds_here": round(seconds, 1),
        "feature_drift": drift(here, there),
        "headlines": rows,
        "max_abs_delta": max(abs(r["delta"]) for r in rows),
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(doc, indent=1))
    print("| feature | equal bit for bit | median abs diff | 95 % | max | feature sd |")
    print("|---|---|---|---|---|---|")
    for k, v in doc["feature_drift"].items():
        print(
            f"| {k} | {v['equal']:.1%} | {v['median']:.2e} | {v['p95']:.2e} | {v['max']:.2e} "
            f"| {v['sd_of_feature']:.3f} |"
        )
    print("\n| entry | record | reference probed here | delta | bootstrap sd |")
    print("|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: -r["record"]):
        print(
            f"| {r['name']} | {r['record']:.3f} | {r['mixed']:.3f} | {r['delta']:+.3f} "
            f"| {r['bootstrap_sd']:.3f} |"
        )


if __name__ == "__main__":
    main()
