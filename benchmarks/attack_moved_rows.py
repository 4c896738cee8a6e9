"""Moved public rows against the memorisation test (distance to closest record).

Issue 30 item 2: a generator that sees the public split can move public rows inside their
plateaus and score like the oracle while passing the copy check. This script measures
``challenge.scoring.memorisation`` (distances only: no model) on a track for

- every committed submission in ``submissions/<track>/*/``;
- a fresh real sample the generator never saw: the context split;
- the attacks: ``reflection`` (each public row moved away from its nearest other public row
  by their gap, ``x = p + (p - nn(p))``; 1000 public rows, seed 0), ``noisy copies`` (public
  rows + N(0, Sigma) noise at 10 % of the row's norm, ``baselines.generators.moved_rows``,
  seed 1: another draw than the committed ``noisy_copy``), token_cluster's rows pulled half-way
  to their nearest public row, half noisy copies + half token_cluster rows, and the reflection
  diluted into N(mu, Sigma) rows (10 / 25 / 50 % of the rows) to find the detection limit;
- token_cluster's rows split by their last token: tokens with one public row (their cluster
  mean *is* that row), the rest, and the rest by the number of public rows behind the mean.

For each it prints the verdict and writes JSON. The table also gives the design the module
does not use (``KS vs real``: the two-sample one-sided KS of the rows' statistic against the
oracle half's, with the asymptotic critical value) to show its false refusals. Then the
real-vs-real calibration: random splits of all real rows into public / holdout / fresh sample.

    python benchmarks/attack_moved_rows.py [--track smollm2-135m-l1] [--resamples 100]
                                           [--out runs/memorisation]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from baselines.generators import Gaussian, TokenCluster, moved_rows
from challenge.directions import ActivationStats, as_generator
from challenge.neighbours import nearest
from challenge.scoring import memorisation as mem
from challenge.submission import read_submission
from challenge.track import DEFAULT_TRACK, resolve_track


def reflection(public: Float[Tensor, "m d"], n: int, seed: int = 0) -> Float[Tensor, "n d"]:
    """``n`` public rows (seeded), each moved away from its nearest other public row by their
    gap: ``x = p + (p - nn(p))`` (its distance to the nearest public row is a real one)."""
    _, nn = nearest(public, public, exclude_self=True)
    rows = torch.randperm(len(public), generator=as_generator(seed))[:n]
    return (public + (public - public[nn]))[rows]


def pulled(x: Float[Tensor, "n d"], public: Float[Tensor, "m d"], frac: float = 0.5) -> Tensor:
    """Each row moved ``frac`` of the way to its nearest public row."""
    _, nn = nearest(x, public)
    return x + frac * (public[nn] - x)


def token_cluster_rows(track, acts: Tensor, seed: int) -> tuple[Tensor, Tensor]:
    """token_cluster's rows regenerated (checked equal to the committed ones) and, per row, the
    number of public rows that end in its last token."""
    gen = TokenCluster()
    gen.fit(track, None)
    x = gen.sample(len(acts), seed=seed)
    if not torch.allclose(x, acts, atol=1e-5):
        raise SystemExit("token_cluster does not regenerate the committed rows")
    rows = torch.randint(len(gen.row_token), (len(acts),), generator=as_generator(seed))
    return x, gen.counts[gen.row_token[rows]]


def ks_vs_real(s: np.ndarray, real: np.ndarray, alpha: float = mem.ALPHA) -> tuple[float, float]:
    """The rejected design: two-sample one-sided KS of ``s`` below a real sample's statistic,
    with the asymptotic critical value."""
    grid = np.sort(np.concatenate([s, real]))
    f_s = np.searchsorted(np.sort(s), grid, side="right") / len(s)
    f_r = np.searchsorted(np.sort(real), grid, side="right") / len(real)
    return float(max((f_s - f_r).max(), 0.0)), mem.ks_critical(len(s), len(real), alpha)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--track", default=DEFAULT_TRACK)
    ap.add_argument("--resamples", type=int, default=100, help="real-vs-real calibration runs")
    ap.add_argument("--resample-relabel", type=int, default=999)
    ap.add_argument("--out", type=Path, default=Path("runs/memorisation"))
    a = ap.parse_args()
    t_start = time.perf_counter()
    track = resolve_track(a.track)
    tid = track.spec.track_id
    pub = track.acts("public")
    n = track.required_n
    holdout, holdout_name = mem.holdout_rows(track)
    oracle = track.acts("heldout")[track.oracle_rows()]
    s_oracle = mem.row_statistic(oracle, pub, holdout).numpy()

    entries: dict[str, tuple[str, Tensor]] = {}
    subs = {}
    for folder in sorted(p for p in Path("submissions", tid).iterdir() if p.is_dir()):
        meta, acts = read_submission(folder)
        subs[folder.name] = (meta, acts)
        entries[folder.name] = ("submission", acts)
    entries["context split (fresh real)"] = ("real", track.acts("context"))
    entries["reflection p + (p - nn(p))"] = ("attack", reflection(pub, n))
    noisy = moved_rows(pub, n, 0.10, as_generator(1), ActivationStats.fit(pub).chol)
    entries["noisy copies 10 % (seed 1)"] = ("attack", noisy)
    if "token_cluster" in subs:
        meta, tc = subs["token_cluster"]
        tc, counts = token_cluster_rows(track, tc, int(meta.get("seed", 0)))
        entries["token_cluster pulled half-way"] = ("attack", pulled(tc, pub))
        half = n // 2
        entries["half noisy copies + half token_cluster"] = (
            "attack",
            torch.cat([noisy[:half], tc[half:]]),
        )
        entries["token_cluster, once-seen last tokens"] = ("subset", tc[counts == 1])
        entries["token_cluster, repeated last tokens"] = ("subset", tc[counts > 1])
        for lo, hi in ((2, 5), (6, 20), (21, None)):
            keep = (counts >= lo) & (counts <= hi) if hi else counts >= lo
            label = f"{lo}-{hi}" if hi else f"{lo}+"
            entries[f"token_cluster, last token on {label} public rows"] = ("subset", tc[keep])
    gauss = Gaussian()
    gauss.fit(track, None)
    filler = gauss.sample(n, seed=1)
    refl = reflection(pub, n, seed=2)
    for pct in (10, 25, 50):
        k = n * pct // 100
        mixed = torch.cat([refl[:k], filler[k:]])
        entries[f"reflection {pct} % + gaussian"] = ("attack", mixed)

    rows = {}
    print(
        f"{'entry':46s} {'kind':10s} {'n':>5s} {'pub %':>6s} {'null':>6s} {'med s':>7s} "
        f"{'null':>7s} {'KS':>6s} {'thr':>6s} {'asym':>6s} {'p':>7s} {'verdict':8s} "
        f"{'KS vs real':>10s}",
        flush=True,
    )
    for name, (kind, x) in entries.items():
        t0 = time.perf_counter()
        r = mem.memorisation_test(x, track)
        ks_r, crit_r = ks_vs_real(mem.row_statistic(x, pub, holdout).numpy(), s_oracle)
        rows[name] = {
            "kind": kind,
            **r.to_dict(),
            "ks_vs_real": ks_r,
            "ks_vs_real_critical": crit_r,
            "seconds": round(time.perf_counter() - t0, 1),
        }
        print(
            f"{name:46s} {kind:10s} {r.n:5d} {r.closer_to_public:6.1%} "
            f"{r.closer_to_public_null:6.1%} {r.median:+7.3f} {r.null_quantiles['q0.5']:+7.3f} "
            f"{r.ks:6.3f} {r.threshold:6.3f} {r.threshold_asymptotic:6.3f} {r.p_value:7.4f} "
            f"{'REFUSED' if r.refused else 'accepted':8s} {ks_r:5.3f}/{crit_r:.3f}",
            flush=True,
        )

    t0 = time.perf_counter()
    real = torch.cat([track.acts(s) for s in ("public", "heldout", "context")])
    res = mem.real_resamples(
        real, len(pub), len(holdout), n, a.resamples, n_relabel=a.resample_relabel
    )
    cal = {
        **mem.summary(res),
        "n_relabel": a.resample_relabel,
        "bound_refused": mem.false_refusal_bound(a.resamples),
        "threshold_median": float(np.median([r.threshold for r in res])),
        "threshold_asymptotic": res[0].threshold_asymptotic,
        "ks_median": float(np.median([r.ks for r in res])),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print("real-vs-real calibration:", json.dumps(cal), flush=True)
    out = {
        "track": tid,
        "version": track.spec.version,
        "holdout": holdout_name,
        "sizes": {"public": len(pub), "holdout": len(holdout), "submission": n},
        "alpha": mem.ALPHA,
        "n_relabel": mem.N_RELABEL,
        "entries": rows,
        "calibration": cal,
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / f"{tid}_moved_rows.json"
    path.write_text(json.dumps(out, indent=1))
    print("wrote", path)


if __name__ == "__main__":
    main()
