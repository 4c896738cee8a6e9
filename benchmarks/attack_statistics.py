"""The statistics artifact's privacy measurement: can the artifact alone place a row near a real
row?

For each k, build the artifact of the track's public split with the track's published SAE
(``challenge.statistics.build_statistics``), run every reconstruction attack of
``challenge.statistics.attack`` on it and measure each candidate's distance to its nearest real
row (public, held-out, context) in units of the copy check's ``tau`` (``copycheck.calibrate``
on every real row of the track). ``sign_oracle`` is a bound, not an attack (it takes each
coordinate's sign from the real row). Then, at ``--generators-k``, the statistics tier's
generators are sampled (``required_n`` rows, seed 0) and put through the copy check's tests.

    python benchmarks/attack_statistics.py [--track smollm2-135m-l1] [--ks 1 2 3 5 10 20]
                                           [--generators-k 10] [--out runs/attack_statistics]

Prints the table and writes ``<out>/<track>.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from challenge.scoring.copycheck import calibrate, copy_findings
from challenge.statistics import DEFAULT_K, StatisticsConfig, build_statistics
from challenge.statistics.attack import candidates, measure, sign_oracle
from challenge.track import DEFAULT_TRACK, resolve_track

BOUND = "sign_oracle (bound)"


def attack_table(track, sae, ks, real, split_of, cal) -> dict[int, dict]:
    out = {}
    for k in ks:
        t0 = time.perf_counter()
        stats = build_statistics(track, sae, StatisticsConfig(k=k))
        cands = candidates(stats, sae)
        cands[BOUND] = sign_oracle(stats, track.acts("public"), track.tokens("public")[:, -1])
        res = measure(
            {n: c for n, c in cands.items() if len(c)}, real, cal.tau, split_of, cal.p_close
        )
        covered = int(stats["token_counts"].sum())
        out[k] = {
            "attacks": res,
            "tokens_listed": len(stats["token_ids"]),
            "rows_in_listed_tokens": covered,
            "latents_listed": len(stats["latent_ids"]),
            "cofiring_pairs": len(stats["cofiring_pairs"]),
            "no_attack_within_tau": all(r["within_tau"] == 0 for n, r in res.items() if n != BOUND),
            "no_attack_beyond_chance": all(
                r["within_tau"] <= r["allowed"] for n, r in res.items() if n != BOUND
            ),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        for name, r in res.items():
            print(
                f"k={k:<3} {name:<20} n={r['n']:<6} within_tau={r['within_tau']:<5} "
                f"(singles {r['singles']}, real sample <= {r['allowed']}) "
                f"min={r['min']:.3f} q01={r['q01']:.3f} median={r['median']:.3f} "
                f"min(heldout)={r['min_by_split'].get('heldout', float('nan')):.3f}",
                flush=True,
            )
    return out


def generator_checks(track, sae, k, real, cal) -> dict[str, dict]:
    from baselines.statistics_generators import STATISTICS_GENERATORS

    stats = build_statistics(track, sae, StatisticsConfig(k=k))
    out = {}
    for name, cls in STATISTICS_GENERATORS.items():
        t0 = time.perf_counter()
        gen = cls()
        gen.fit(stats, sae)
        x = gen.sample(track.required_n, seed=0)
        found, st = copy_findings(x, real, cal)
        out[name] = {
            "close": f"{found[0].count} / {found[0].allowed}",
            "near_dups": f"{found[1].count} / {found[1].allowed}",
            "ks": f"{found[2].statistic:.3f} / {found[2].critical:.3f}",
            "refused": any(f.refused for f in found),
            "nn_real_median": st["nn_real_median"],
            "nn_real_q01": st["nn_real_q01"],
            "norm_median": float(x.norm(dim=1).median()),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        print(name, json.dumps(out[name]), flush=True)
    return out


def toy_sae(track):
    """The SAE the tests train on the tiny track (128 latents, k 8, 40 steps)."""
    from challenge.sae import SAEConfig, train_sae

    cfg = SAEConfig(n_latents=128, k=8, steps=40, batch=128, positions="last")
    return train_sae(track.acts("public"), cfg, progress=False)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--track", default=DEFAULT_TRACK)
    ap.add_argument("--ks", type=int, nargs="+", default=[1, 2, 3, 5, 10, 20])
    ap.add_argument("--generators-k", type=int, default=DEFAULT_K, help="0: skip")
    ap.add_argument("--out", type=Path, default=Path("runs/attack_statistics"))
    ap.add_argument(
        "--sae", choices=["published", "toy"], default="published", help="toy: the tests' SAE"
    )
    a = ap.parse_args()
    from challenge.sae import track_sae

    track = resolve_track(a.track)  # the registry's copy; the tiny track is built (model)
    # the published SAE (no model); an unpublished track trains a toy one on its public rows
    sae = track_sae(track, train=False) if a.sae == "published" else toy_sae(track)
    names = sorted(track.splits)
    real = torch.cat([track.acts(s) for s in names])
    split_of = np.concatenate([[s] * len(track.acts(s)) for s in names])
    cal = calibrate(real)
    print(f"{track.spec.track_id} v{track.spec.version}: {len(real)} real rows, tau {cal.tau:.4f}")
    table = attack_table(track, sae, a.ks, real, split_of, cal)
    safe = [k for k in sorted(table) if table[k]["no_attack_within_tau"]]
    smallest = next((k for k in safe if all(j in safe for j in table if j >= k)), None)
    print(f"smallest k with no attack candidate within tau (and none above it): {smallest}")
    result = {
        "track": track.spec.track_id,
        "version": track.spec.version,
        "real_rows": len(real),
        "tau": cal.tau,
        "sae": sae.meta.get("source", a.sae),
        "table": table,
        "smallest_safe_k": smallest,
        "default_k": DEFAULT_K,
    }
    if a.generators_k:
        result["generators"] = {"k": a.generators_k} | generator_checks(
            track, sae, a.generators_k, real, cal
        )
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / f"{track.spec.track_id}.json"
    path.write_text(json.dumps(result, indent=1, default=str))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
