"""How much the v2 headline moves with the scorer seed (other contexts, directions, reference
row order, folds and bootstrap): re-score committed submissions with other seeds.

    python benchmarks/scorer_seeds.py --seeds 1 2 --entries heldout_real gaussian token_cluster
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
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    track = resolve_track(a.track)
    lm = load_model(track.spec.model)
    out = json.loads(a.out.read_text()) if a.out.exists() else {}
    for seed in a.seeds:
        cfg = replace(ScoreConfig(), seed=seed)
        for name in a.entries:
            key = f"{name}/seed{seed}"
            if key in out:
                continue
            _, acts = read_submission(a.submissions / track.spec.track_id / name)
            t = time.perf_counter()
            h = score_points(track, lm, acts, cfg, progress=False).headline
            out[key] = {"score": h.score, "ci": list(h.ci), "seconds": time.perf_counter() - t}
            print(key, out[key], flush=True)
            a.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
