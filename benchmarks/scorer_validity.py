"""Validity and precision of the v2 headline from a scored board's arrays (docs/scoring.md).

Reads ``leaderboard/<track>/<entry>.npz`` (per-point probe features of each entry and of the
reference, all in the same seed-0 slots) and, without running the model again:

1. the **contamination curve**: the oracle (``heldout_real``) with 0, 10, 30, 50, 100 % of its
   rows (each with all its context slots) taken by the N(mu, Sigma) entry (``gaussian``) in the
   same slots, scored by the same
   classifier test; plotted to ``docs/img/scoring_contamination.png``;
2. per entry, the **classifier spread**: the headline re-computed with 5 classifier seeds (folds,
   boosting seed and bootstrap indices; the features fixed), and the bootstrap standard
   deviation of the headline (the resampling of contexts the interval is built from).

    python benchmarks/scorer_validity.py --board leaderboard/smollm2-135m-l1
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from challenge.scoring import load_report
from challenge.scoring.classifier import compare


def features(npz: Path, group: str) -> dict[str, np.ndarray]:
    return getattr(load_report(npz.with_suffix(".json")).data, group)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--board", type=Path, default=Path("leaderboard/smollm2-135m-l1"))
    ap.add_argument("--seeds", type=int, default=5, help="classifier seeds per entry (0: skip)")
    ap.add_argument("--plot", type=Path, default=Path("docs/img/scoring_contamination.png"))
    ap.add_argument("--out", type=Path, default=None, help="JSON of every number printed")
    a = ap.parse_args()
    reps = {
        p.stem: load_report(p, arrays=False)
        for p in sorted(a.board.glob("*.json"))
        if json.loads(p.read_text()).get("schema") == "plateau-score/2"
    }
    cfg = next(iter(reps.values())).config
    ref = features(a.board / "heldout_real.npz", "reference")
    real = features(a.board / "heldout_real.npz", "submission")
    gauss = features(a.board / "gaussian.npz", "submission")
    n = len(next(iter(real.values())))
    c = cfg.contexts_per_row
    rows = n // c  # slots are round-major: row j holds slots j, j + rows, ...
    order = np.random.default_rng(0).permutation(rows)
    curve = []
    for x in (0, 10, 30, 50, 100):
        take = np.zeros(rows, bool)
        take[order[: round(rows * x / 100)]] = True
        take = np.tile(take, c)  # a replaced row is replaced in every context
        mix = {k: np.where(take, gauss[k], real[k]) for k in real}
        h, _, _ = compare(ref, mix, cfg)
        curve.append({"x": x, "score": h.score, "ci": list(h.ci), "auc": h.auc})
        print(f"contamination {x:3d} %: score {h.score:.3f} [{h.ci[0]:.3f}, {h.ci[1]:.3f}]")
    spread = {}
    for name, rep in reps.items() if a.seeds else ():
        sub = features(a.board / f"{name}.npz", "submission")
        scores = [compare(ref, sub, replace(cfg, seed=s))[0].score for s in range(a.seeds)]
        boot_sd = float(np.std(load_report(a.board / f"{name}.json").data.bootstrap))
        spread[name] = {
            "score": rep.headline.score,
            "ci": list(rep.headline.ci),
            "classifier_seed_scores": scores,
            "classifier_seed_sd": float(np.std(scores, ddof=1)),
            "bootstrap_sd": boot_sd,
        }
        print(
            f"{name:20s} {rep.headline.score:.3f} [{rep.headline.ci[0]:.3f}, {rep.headline.ci[1]:.3f}]"
            f"  classifier seeds sd {spread[name]['classifier_seed_sd']:.4f}  bootstrap sd {boot_sd:.4f}"
        )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4))
    xs = [c["x"] for c in curve]
    s = np.array([c["score"] for c in curve])
    lo, hi = np.array([c["ci"][0] for c in curve]), np.array([c["ci"][1] for c in curve])
    ax.errorbar(xs, s, yerr=[s - lo, hi - s], fmt="o-", capsize=3)
    ax.set_xlabel("% of the oracle's rows replaced by N(mu, Sigma) rows")
    ax.set_ylabel("score (95 % interval)")
    ax.set_ylim(-0.02, 1.05)
    per = f" ({rows} rows x {c} contexts)" if c > 1 else ""
    ax.set_title(f"contamination curve, {n} points{per}", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    a.plot.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.plot, dpi=90)
    if a.out:
        a.out.write_text(json.dumps({"n": n, "contamination": curve, "spread": spread}, indent=1))


if __name__ == "__main__":
    main()
