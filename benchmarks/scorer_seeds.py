"""How much the v2 headline moves with the scorer seed (other contexts, directions, reference
row order, folds and bootstrap): re-score committed submissions with other seeds. Each report
(JSON + per-point features in ``.npz``) lands in ``<out>/seed<s>/``, so the headline can be
recomputed from the features (``benchmarks/scorer_resolution.py``); ``<out>/summary.json``
holds every score.

    python benchmarks/scorer_seeds.py --seeds 1 3 --entries heldout_real gaussian --out runs/seeds
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from challenge.models import load_model
from challenge.scorer import ScoreConfig, score_points
from challenge.submission import read_submission
from challenge.track import resolve_track


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--track", default="smollm2-135m-l1")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--entries", nargs="+", default=["heldout_real", "gaussian", "token_cluster"])
    ap.add_argument("--submissions", type=Path, default=Path("submissions"))
    ap.add_argument("--out", type=Path, required=True, help="a folder")
    a = ap.parse_args()
    track = resolve_track(a.track)
    lm = load_model(track.spec.model)
    for name in a.entries:  # entries outer: each entry's seeds complete before the next entry
        for seed in a.seeds:
            out_dir = a.out / f"seed{seed}"
            if (out_dir / f"{name}.json").exists():
                continue
            meta, acts = read_submission(a.submissions / track.spec.track_id / name)
            t = time.perf_counter()
            rep = score_points(
                track, lm, acts, replace(ScoreConfig(), seed=seed), meta, progress=False
            )
            rep.save(out_dir, name)
            h = rep.headline
            row = {"score": h.score, "ci": list(h.ci), "seconds": time.perf_counter() - t}
            print(f"{name}/seed{seed}", row, flush=True)
            summary = a.out / "summary.json"
            doc = json.loads(summary.read_text()) if summary.exists() else {}
            doc[f"{name}/seed{seed}"] = row
            summary.write_text(json.dumps(doc, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
