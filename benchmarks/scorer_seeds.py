"""How much the v2 headline moves with the scorer seed (other contexts, directions, reference
row order, folds and bootstrap): re-score committed submissions with other seeds. Each report
(JSON + per-point features in ``.npz``) lands in ``<out>/seed<s>/``, so the headline can be
recomputed from the features (``benchmarks/scorer_resolution.py``); ``<out>/summary.json``
holds every score.

``--contexts-per-row C`` scores each row in C contexts (``ScoreConfig.contexts_per_row``); with
``--round0 DIR`` the submission's round-0 features are taken from that seed's one-context report
(``DIR/seed<s>/<name>.npz``, the board's record for seed 0) through the scorer's feature cache,
after checking that its rows are the ones this run would score, so only the new rounds are
probed (the reference's round 0 is the scorer's own cache).

    python benchmarks/scorer_seeds.py --seeds 1 3 --entries heldout_real gaussian --out runs/seeds
    python benchmarks/scorer_seeds.py --seeds 0 1 2 3 4 --contexts-per-row 2 --round0 runs/seeds \
        --entries token_cluster --out runs/contexts2
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from challenge import rng
from challenge.models import load_model
from challenge.scorer import (
    ScoreConfig,
    features_cache_path,
    n_slots,
    score_points,
    stored_features,
)
from challenge.submission import read_submission
from challenge.track import resolve_track


def prime_round0(track, acts, cfg: ScoreConfig, npz: Path) -> None:
    """Write ``npz``'s submission features as the cached round 0 of ``acts`` under ``cfg``
    (nothing when there is no such report: round 0 is then probed too)."""
    n = min(len(acts), n_slots(track))  # as score_points counts them
    n = n if cfg.n_points is None else min(cfg.n_points, n)
    rows = rng.subset(len(acts), n, cfg.seed, "scorer.rows")
    path = features_cache_path(track, cfg, len(rows), 0, acts[rows])
    if path.exists() or not npz.exists():
        return
    with np.load(npz) as z:
        arrays = dict(z)
    if not np.array_equal(arrays["rows"], rows.numpy()):
        raise SystemExit(f"{npz}: its rows are not the ones seed {cfg.seed} scores")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **stored_features(arrays, "submission"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--track", default="smollm2-135m-l1")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--entries", nargs="+", default=["heldout_real", "gaussian", "token_cluster"])
    ap.add_argument("--submissions", type=Path, default=Path("submissions"))
    ap.add_argument("--out", type=Path, required=True, help="a folder")
    ap.add_argument("--contexts-per-row", type=int, default=1)
    ap.add_argument("--round0", type=Path, help="one-context reports to take round 0 from")
    ap.add_argument("--board", type=Path, default=Path("leaderboard/smollm2-135m-l1"))
    a = ap.parse_args()
    track = resolve_track(a.track)
    lm = load_model(track.spec.model)
    for name in a.entries:  # entries outer: each entry's seeds complete before the next entry
        for seed in a.seeds:
            out_dir = a.out / f"seed{seed}"
            if (out_dir / f"{name}.json").exists():
                continue
            meta, acts = read_submission(a.submissions / track.spec.track_id / name)
            cfg = replace(ScoreConfig(), seed=seed, contexts_per_row=a.contexts_per_row)
            if a.round0 is not None:
                one = a.board if seed == 0 else a.round0 / f"seed{seed}"
                prime_round0(track, acts, cfg, one / f"{name}.npz")
            t = time.perf_counter()
            rep = score_points(track, lm, acts, cfg, meta, progress=False)
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
