"""The radius probe's Illinois root-finder against the board's 7-round bisection: ``--points``
rows each of held-out real activations (the scorer's reference half) and of committed
submissions, probed in the board's seed-0 slots with the board's probe config
(``ScoreConfig()``), both methods on the same engine settings in one run. Prints, per set, the
``|log r|`` differences from bisection (per direction and per point's ``radius.mean_log``), the
tail rows per point of each method (``engine.curves`` paths x steps), the prompts whose prefix
cache each recomputed, and seconds (a fresh engine per timing, so neither reuses the other's
prefix caches; interleaved repeats, the minimum of each).

    python benchmarks/bench_radius.py --points 200 --threads 2 --out runs/bench_radius.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from challenge import rng
from challenge.models import load_model
from challenge.probes import RadiusSearch, radius, radius_illinois
from challenge.results import machine
from challenge.scoring import ScoreConfig
from challenge.scoring.probing import make_slots
from challenge.submission import read_submission
from challenge.track import resolve_track

METHODS = ("bisect", "illinois")


class Counted:
    """An engine whose ``curves`` rows (paths x steps) and prefix-cache misses are counted."""

    def __init__(self, engine):
        self.engine, self.cfg = engine, engine.cfg
        self.rows = self.calls = self.prompts = 0
        prefix = engine._prefix

        def counted(tokens):
            before = len(engine._prefixes)
            out = prefix(tokens)
            if len(engine._prefixes) > before:  # a miss (nothing is evicted at these sizes)
                self.prompts += len(tokens)
            return out

        engine._prefix = counted

    def curves(self, tokens, paths, **kw):
        self.rows += paths.shape[0] * paths.shape[1]
        self.calls += 1
        return self.engine.curves(tokens, paths, **kw)


SEARCH = RadiusSearch("illinois")
"""The root-finder measured (its default tolerance: the bisection's final width)."""


def run(method: str, track, lm, args: tuple, pc) -> tuple[np.ndarray, dict]:
    """``log r`` [n, k] of one method on a fresh engine, and its cost."""
    eng = Counted(track.engine(lm, progress=False))
    t = time.perf_counter()
    if method == "bisect":
        lr = np.log(radius(eng, *args, pc.bisect_steps))
        width = np.full(lr.shape, math.log(pc.r_max / pc.r_min) / 2**pc.bisect_steps)
    else:
        br = radius_illinois(eng, *args, SEARCH.log_tol(pc), SEARCH.max_iter)
        lr, width = np.log(br.radius), br.hi - br.lo
    seconds = time.perf_counter() - t
    n = lr.shape[0]
    cost = {
        "seconds": seconds,
        "rows_per_point": eng.rows / n,
        "calls": eng.calls,
        "prefix_prompts_per_point": eng.prompts / n,
    }
    return lr, cost | {"width": width}


def quantiles(x: np.ndarray) -> dict:
    return {
        "median": float(np.median(x)),
        "q95": float(np.quantile(x, 0.95)),
        "max": float(np.max(x)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--track", default="smollm2-135m-l1")
    ap.add_argument("--points", type=int, default=200)
    ap.add_argument("--entries", nargs="+", default=["token_cluster", "gaussian"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--submissions", type=Path, default=Path("submissions"))
    ap.add_argument("--out", type=Path, default=Path("runs/bench_radius.json"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    track = resolve_track(a.track)
    lm = load_model(track.spec.model)
    cfg = ScoreConfig()
    pc = replace(cfg.probes, probes=("radius",))
    n = a.points
    slots = make_slots(track, n, cfg).take(0, n)  # context round 0 (the c = 1 slots)
    ref = track.acts("heldout")[track.reference_rows()]
    sets = {"heldout_real": ref[rng.subset(len(ref), n, cfg.seed, "scorer.reference_order")]}
    for e in a.entries:
        _, acts = read_submission(a.submissions / track.spec.track_id / e)
        sets[e] = acts[rng.subset(len(acts), n, cfg.seed, "scorer.rows")]
    norm = track.units["write_norm_median"]
    dirs = slots.dirs[:, : pc.n_directions]
    print(
        f"{a.track}: {n} points per set, {pc.n_directions} directions, bisection "
        f"{pc.bisect_steps} rounds vs illinois (tol {SEARCH.log_tol(pc):.4f} in log r, "
        f"cap {SEARCH.max_iter}), {a.threads} threads, {machine()['cpu']}",
        flush=True,
    )
    results: dict[str, dict] = {}
    for rep in range(a.repeats):
        for name, pts in sets.items():
            args = (slots.tokens, pts, dirs, pc.r_min * norm, pc.r_max * norm, pc.radius_kl)
            order = METHODS if rep % 2 == 0 else METHODS[::-1]
            for m in order:
                lr, cost = run(m, track, lm, args, pc)
                res = results.setdefault(name, {}).setdefault(m, {"lr": lr, **cost})
                if not np.array_equal(res["lr"], lr):
                    raise RuntimeError(f"{name} {m}: repeat {rep} differs")
                res["seconds"] = min(res["seconds"], cost["seconds"])
                res.setdefault("all_seconds", []).append(cost["seconds"])
                print(f"  repeat {rep} {name:14s} {m:8s} {cost['seconds']:7.1f} s", flush=True)
    table, doc = [], {}
    for name, r in results.items():
        b, i = r["bisect"], r["illinois"]
        err = np.abs(b["lr"] - i["lr"])
        err_mean = np.abs(b["lr"].mean(1) - i["lr"].mean(1))
        other = err > (b["width"] + i["width"]) / 2 + 1e-9
        doc[name] = {
            "err_direction": quantiles(err),
            "err_point_mean_log": quantiles(err_mean),
            "directions": int(err.size),
            "other_crossing": int(other.sum()),
            "illinois_max_width": float(i["width"].max()),
            **{
                m: {k: v for k, v in r[m].items() if k not in ("lr", "width")}
                for m in ("bisect", "illinois")
            },
            "rows_ratio": i["rows_per_point"] / b["rows_per_point"],
            "seconds_ratio": i["seconds"] / b["seconds"],
        }
        table.append((name, doc[name]))
    print(
        "\nset            |dlog r| per direction     |d mean_log| per point   other  "
        "rows/pt bis  ill  ratio  prefix/pt bis ill  calls bis ill  s bis    ill   ratio"
    )
    print("               median   q95     max       median   q95     max      cross")
    for name, d in table:
        e, p, b, i = d["err_direction"], d["err_point_mean_log"], d["bisect"], d["illinois"]
        print(
            f"{name:14s} {e['median']:.4f}  {e['q95']:.4f}  {e['max']:.4f}    "
            f"{p['median']:.4f}  {p['q95']:.4f}  {p['max']:.4f}  {d['other_crossing']:4d}   "
            f"{b['rows_per_point']:5.1f} {i['rows_per_point']:5.1f}  {d['rows_ratio']:.3f}  "
            f"{b['prefix_prompts_per_point']:6.2f} {i['prefix_prompts_per_point']:4.2f}  "
            f"{b['calls']:5d} {i['calls']:3d}  {b['seconds']:6.1f} {i['seconds']:6.1f}  "
            f"{d['seconds_ratio']:.3f}"
        )
    tot = {m: sum(d[m]["seconds"] for _, d in table) for m in METHODS}
    rows = {m: sum(d[m]["rows_per_point"] for _, d in table) / len(table) for m in METHODS}
    p2 = cfg.probes.p2_steps
    summary = {
        "rows_per_point": rows,
        "rows_ratio": rows["illinois"] / rows["bisect"],
        "seconds": tot,
        "seconds_ratio": tot["illinois"] / tot["bisect"],
        "slot_rows_with_p2": {m: rows[m] + p2 for m in METHODS},
    }
    print(
        f"all sets: rows/point {rows['bisect']:.1f} -> {rows['illinois']:.1f} "
        f"({summary['rows_ratio']:.3f}); seconds {tot['bisect']:.1f} -> {tot['illinois']:.1f} "
        f"({summary['seconds_ratio']:.3f}); a slot with P2 ({p2} rows): "
        f"{rows['bisect'] + p2:.1f} -> {rows['illinois'] + p2:.1f} rows"
    )
    out = {
        "track": a.track,
        "points": n,
        "threads": a.threads,
        "repeats": a.repeats,
        "probes": {
            "n_directions": pc.n_directions,
            "bisect_steps": pc.bisect_steps,
            "radius_tol": SEARCH.log_tol(pc),
            "radius_max_iter": SEARCH.max_iter,
        },
        "machine": {**machine(), "node": platform.node(), "cpu_count": os.cpu_count()},
        "torch": torch.__version__,
        "sets": doc,
        "summary": summary,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=1))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
