"""Which point probes separate real activations from N(mu, Sigma)? (docs/scoring.md)

For ``--n`` slots (context prompt, radius directions, AP end), three groups of points are probed
in the same slots: held-out real A, a disjoint held-out real sample B (real-vs-real noise) and
N(mu, Sigma) of the public split G. Per feature: AUC of A vs G (separation; 0.5 = none) and of A
vs B (noise), the KS statistics, and each probe's seconds per point.

    python benchmarks/probe_separation.py --track smollm2-135m-l1 --n 200
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from challenge import metrics as M
from challenge.directions import ActivationStats, gaussian_like
from challenge.metrics import auc as scorer_auc
from challenge.models import load_model
from challenge.probes import PROBES, ProbeConfig, Slots, run_probes, unit_directions
from challenge.track import resolve_track


def auc(a: np.ndarray, b: np.ndarray) -> float:
    """Separation of two samples whichever is larger: max(AUC, 1 - AUC) (``metrics.auc``)."""
    s = scorer_auc(a, b)
    return max(s, 1 - s)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--track", default="smollm2-135m-l1")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--probes", nargs="+", default=list(PROBES))
    ap.add_argument("--out", default=None, help="JSON file for the table")
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    track = resolve_track(a.track)
    lm = load_model(track.spec.model)
    engine = track.engine(lm, progress=False)
    n = a.n
    g = torch.Generator().manual_seed(a.seed)
    held = track.acts("heldout")
    perm = torch.randperm(len(held), generator=g)
    ctx = torch.randint(len(track.acts("context")), (n,), generator=g)
    stats = ActivationStats.fit(track.acts("public"))
    slots = Slots(
        tokens=track.tokens("context")[ctx],
        context_acts=track.acts("context")[ctx],
        dirs=unit_directions(n, 8, track.d_model, g),
        ap_ends=gaussian_like(stats, n, g),
    )
    groups = {
        "real_a": held[perm[:n]],
        "real_b": held[perm[n : 2 * n]],
        "gaussian": gaussian_like(stats, n, g),
    }
    feats: dict[str, dict[str, np.ndarray]] = {k: {} for k in groups}
    secs: dict[str, float] = {}
    for probe in a.probes:
        cfg = ProbeConfig(probes=(probe,))
        t0 = time.perf_counter()
        for name, pts in groups.items():
            feats[name] |= run_probes(engine, pts, slots, track.acts("public"), track.units, cfg)
        secs[probe] = (time.perf_counter() - t0) / (3 * n)
        print(f"{probe}: {secs[probe] * 1e3:.1f} ms per point", flush=True)
    rows = []
    for f in feats["real_a"]:
        A, B, G = (feats[k][f] for k in ("real_a", "real_b", "gaussian"))
        rows.append(
            dict(
                feature=f,
                real_median=float(np.nanmedian(A)),
                gaussian_median=float(np.nanmedian(G)),
                auc_real_vs_gaussian=auc(A, G),
                auc_real_vs_real=auc(A, B),
                ks_real_vs_gaussian=M.ks_statistic(A[np.isfinite(A)], G[np.isfinite(G)]),
                ks_real_vs_real=M.ks_statistic(A[np.isfinite(A)], B[np.isfinite(B)]),
                ms_per_point=secs[f.split(".")[0]] * 1e3,
            )
        )
    print(
        "| feature | real median | N(mu,Sigma) median | AUC real vs N | AUC real vs real | KS real vs N | KS real vs real | ms/point |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['feature']} | {r['real_median']:.3g} | {r['gaussian_median']:.3g} | "
            f"{r['auc_real_vs_gaussian']:.3f} | {r['auc_real_vs_real']:.3f} | "
            f"{r['ks_real_vs_gaussian']:.3f} | {r['ks_real_vs_real']:.3f} | {r['ms_per_point']:.0f} |"
        )
    if a.out:
        with open(a.out, "w") as fh:
            json.dump(dict(track=a.track, n=n, seed=a.seed, rows=rows), fh, indent=1)


if __name__ == "__main__":
    main()
