"""Joint probes and the probe table (docs/joint-probes.md; issue "challenge v3", item 3).

On ``--n`` scorer slots (``make_slots``, one context per row, seed ``--seed``) five groups of
points are probed in the same slots: the scorer's reference half (``reference``, rows as
``probing.round_features`` picks them), a disjoint real sample (``oracle``: the oracle half, rows
as the scorer picks a submission's), N(mu, Sigma) of the public split (``gaussian``), the
rows-tier ``token_cluster`` entry (its submission folder; generated when missing) and the
statistics tier's ``stats_token_cluster`` (fitted on ``build_statistics(track, sae, k=10)``).

Per probe set (the board's radius + p2; + each joint probe; + all) and group: the scorer's score
against the reference (the board's classifier config, ``classifier.compare``, 95 % bootstrap
interval over points), the real-vs-real null band at this size (label swaps,
``scoring.null.band_of``), and two feature-level constructions (``challenge.constructions``):
N(mu, Sigma)'s features quantile-matched feature by feature onto the reference's, and the oracle
half's features with each probe's block glued across points. Seconds per point of each probe
(1 thread; the median over groups, the first group pays the shared prompt prefixes). Variants
without the two features that hold the distance to the nearest public row (``radii``), and the
board's set plus that distance alone (no probe), show how much of a set's separation is plateau.

Probe outputs are cached in ``--out-dir`` (one ``.npz`` per group and probe, keyed by the
points' bytes and the configs), so a re-run only re-scores.

    OMP_NUM_THREADS=1 python benchmarks/joint_probes.py --n 300
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from challenge import rng
from challenge.constructions import block_correlations, glue_probes, quantile_match, raw
from challenge.directions import ActivationStats, gaussian_like
from challenge.joint_probes import (
    JointProbes,
    fisher_top,
    joint_features,
    probe_of,
    run_joint_probes,
)
from challenge.neighbours import nearest
from challenge.probes import run_probes as run_board_probes
from challenge.scoring import ScoreConfig
from challenge.scoring.classifier import compare
from challenge.scoring.null import NullConfig, band_of, headline_auc, unclipped_score
from challenge.scoring.probing import make_slots, reference_points, track_identity

GROUPS = ("reference", "oracle", "gaussian", "token_cluster", "stats_token_cluster")
BOARD_PROBES = ("radius", "p2")
JOINT = ("p2dir", "sae", "fisher")
DISTANCE = ("p2dir.frac_log", "joint.sharp_per_plateau")
"""The features that hold the distance to the nearest public row (a set without them tests
whether the P2 direction's radii separate by themselves)."""
SETS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "current": (BOARD_PROBES, ()),
    "+p2dir": ((*BOARD_PROBES, "p2dir"), ()),
    "+p2dir radii": ((*BOARD_PROBES, "p2dir"), DISTANCE),
    "+sae": ((*BOARD_PROBES, "sae"), ()),
    "+fisher": ((*BOARD_PROBES, "fisher"), ()),
    "+p2dir+fisher": ((*BOARD_PROBES, "p2dir", "fisher"), ()),
    "+p2dir radii+fisher": ((*BOARD_PROBES, "p2dir", "fisher"), DISTANCE),
    "all": ((*BOARD_PROBES, *JOINT), ()),
    "all radii": ((*BOARD_PROBES, *JOINT), DISTANCE),
    "current+NN distance": ((*BOARD_PROBES, "nn"), ()),
}
"""Probe sets: the probes run and the features left out. ``nn`` is no probe: the log distance
from the point to its nearest public row over the write norm (``nn.dist_log``), a reference line
for what the distance alone separates."""


def group_points(track, sae, n: int, cfg: ScoreConfig, seed: int) -> dict[str, torch.Tensor]:
    """The five groups' ``n`` rows each."""
    from baselines.statistics_generators import StatsTokenCluster
    from challenge.statistics import StatisticsConfig, build_statistics
    from challenge.submission import read_submission

    orc = track.acts("heldout")[track.oracle_rows()]
    out = {
        "reference": reference_points(track, n, cfg),
        "oracle": orc[rng.subset(len(orc), n, cfg.seed, "scorer.rows")],
        "gaussian": gaussian_like(ActivationStats.fit(track.acts("public")), n, 1_000 + seed),
    }
    folder = Path("submissions") / track.spec.track_id / "token_cluster"
    if (folder / "activations.safetensors").exists():
        tc = read_submission(folder)[1].float()
    else:  # pragma: no cover - the committed folder is the board's entry
        from baselines.generators import TokenCluster
        from challenge.models import load_model
        from challenge.submission import generate

        path = generate(TokenCluster(), track, load_model(track.spec.model), seed=0)
        tc = read_submission(path)[1].float()
    out["token_cluster"] = tc[rng.subset(len(tc), n, cfg.seed, "scorer.rows")]
    stats = build_statistics(track, sae, StatisticsConfig(k=10))
    gen = StatsTokenCluster()
    gen.fit(stats, sae)
    st = gen.sample(track.required_n, seed=0).float()
    out["stats_token_cluster"] = st[rng.subset(len(st), n, cfg.seed, "scorer.rows")]
    return out


def cache_key(track, cfg: ScoreConfig, joint: JointProbes, probe: str, pts: torch.Tensor) -> str:
    key = {
        "track": track_identity(track),
        "probes": asdict(cfg.probes),
        "joint": asdict(joint),
        "seed": cfg.seed,
        "probe": probe,
        "points": hashlib.sha256(pts.contiguous().numpy().tobytes()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def probe_group(engine, track, sae, pts, slots, cfg, joint, probe, out_dir: Path):
    """``probe``'s features of ``pts`` (cached) and the seconds it took per point."""
    path = out_dir / f"{probe}_{cache_key(track, cfg, joint, probe, pts)}.npz"
    if path.exists():
        with np.load(path) as z:
            return {k: z[k] for k in z.files if k != "_seconds"}, float(z["_seconds"])
    public = track.acts("public")
    t0 = time.perf_counter()
    if probe in BOARD_PROBES:
        pc = replace(cfg.probes, probes=(probe,))
        feats = run_board_probes(engine, pts, slots, public, track.units, pc)
    else:
        near = public[nearest(pts, public)[1]]
        feats = run_joint_probes(
            engine, pts, slots, near, track.units, cfg.probes, joint, sae=sae, only=(probe,)
        )
    sec = (time.perf_counter() - t0) / len(pts)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, _seconds=sec, **feats)
    return feats, sec


def set_features(
    feats: dict[str, np.ndarray], probes: tuple[str, ...], kl: float, exclude: tuple[str, ...] = ()
) -> dict:
    """The raw features of ``probes`` and the derived ``joint.*`` ones computable from them, less
    ``exclude``."""
    base = {k: v for k, v in raw(feats).items() if probe_of(k) in probes}
    out = base | joint_features(base, kl)
    return {k: v for k, v in out.items() if k not in exclude}


def exclude_from(exclude: tuple[str, ...]):
    """A ``derive`` for the constructions that recomputes the derived features less ``exclude``."""

    def derive(feats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: v for k, v in joint_features(feats).items() if k not in exclude}

    return derive


def score_of(ref: dict, sub: dict, cfg: ScoreConfig) -> dict:
    head, per, _ = compare(ref, sub, cfg)
    return {
        "score": head.score,
        "ci": list(head.ci),
        "unclipped": float(unclipped_score(head.auc)),
        "auc": head.auc,
        "feature_auc": {k: v.auc for k, v in per.items()},
    }


def fmt(r: dict) -> str:
    return f"{r['score']:.3f} [{r['ci'][0]:.2f}, {r['ci'][1]:.2f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--track", default="smollm2-135m-l1")
    ap.add_argument("--n", type=int, default=300, help="slots (rows, one context each)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--swaps", type=int, default=20, help="label swaps of the null band")
    ap.add_argument("--glue-seeds", type=int, default=3, help="glued constructions averaged")
    ap.add_argument("--fisher-check", type=int, default=40, help="points of the convergence check")
    ap.add_argument(
        "--fold-seeds",
        type=int,
        default=3,
        help="classifier seeds (folds, trees) of the real-vs-real and construction re-scores",
    )
    ap.add_argument("--out-dir", default="runs/joint_probes")
    ap.add_argument("--json", default=None, help="table JSON (default: <out-dir>/table.json)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    from challenge.models import load_model
    from challenge.sae import track_sae
    from challenge.track import resolve_track

    t_start = time.perf_counter()
    track = resolve_track(a.track)
    sae = track_sae(track, train=False)
    cfg = ScoreConfig(contexts_per_row=1, seed=a.seed)  # the board's probes and classifier
    joint = JointProbes(probes=JOINT)
    n = a.n
    slots = make_slots(track, n, cfg)
    pts = group_points(track, sae, n, cfg, a.seed)
    lm = load_model(track.spec.model)
    engine = track.engine(lm, progress=False)
    out_dir = Path(a.out_dir) / track.spec.track_id / f"n{n}_s{a.seed}"
    feats: dict[str, dict[str, np.ndarray]] = {g: {} for g in GROUPS}
    secs: dict[str, dict[str, float]] = {p: {} for p in (*BOARD_PROBES, *JOINT)}
    for probe in (*BOARD_PROBES, *JOINT):
        for g in GROUPS:
            f, s = probe_group(engine, track, sae, pts[g], slots, cfg, joint, probe, out_dir)
            feats[g] |= f
            secs[probe][g] = s
            print(f"{probe} {g}: {s * 1e3:.0f} ms/point", flush=True)
    norm = track.units["write_norm_median"]
    secs["nn"] = {}
    for g in GROUPS:
        t0 = time.perf_counter()
        dist = nearest(pts[g], track.acts("public"))[0].numpy()
        feats[g]["nn.dist_log"] = np.log(dist / norm)
        secs["nn"][g] = (time.perf_counter() - t0) / n
    sec_pp = {p: float(np.median(list(v.values()))) for p, v in secs.items()}

    # power-iteration convergence on a few reference points (not cached: cheap)
    m = min(a.fisher_check, n)
    conv = {}
    for iters in (joint.fisher_iters, 2 * joint.fisher_iters):
        top = fisher_top(
            engine,
            slots.tokens[:m],
            pts["reference"][:m],
            slots.dirs[:m, 0],
            iters,
            joint.fisher_step * norm,
        )
        conv[iters] = (np.log(top.lam * norm**2), top.u)
    i1, i2 = joint.fisher_iters, 2 * joint.fisher_iters
    d_eig = np.abs(conv[i1][0] - conv[i2][0])
    cos = (conv[i1][1].double() * conv[i2][1].double()).sum(-1).abs().numpy()
    fisher_check = {
        "points": m,
        "iters": [i1, i2],
        "eig_log_abs_change": {"median": float(np.median(d_eig)), "max": float(d_eig.max())},
        "abs_cos": {"median": float(np.median(cos)), "min": float(cos.min())},
    }
    print(f"fisher convergence ({m} points, {i1} vs {i2} iterations): {fisher_check}", flush=True)

    kl = cfg.probes.radius_kl
    rows = {}
    for name, (probes, exclude) in SETS.items():
        t0 = time.perf_counter()
        F = {g: set_features(feats[g], probes, kl, exclude) for g in GROUPS}
        ref = F["reference"]
        derive = exclude_from(exclude)
        res = {g: score_of(ref, F[g], cfg) for g in GROUPS if g != "reference"}
        quant = quantile_match(F["gaussian"], ref, derive)
        res["quantile"] = score_of(ref, quant, cfg)
        glued = [glue_probes(F["oracle"], seed=s, derive=derive) for s in range(a.glue_seeds)]
        res["glued"] = score_of(ref, glued[0], cfg)
        res["glued"]["unclipped_seeds"] = [
            float(unclipped_score(headline_auc(ref, gl, cfg))) for gl in glued
        ]
        # the classifier's own noise: the same features under other fold splits and tree seeds
        for g, sub in (("oracle", F["oracle"]), ("quantile", quant), ("glued", glued[0])):
            res[g]["unclipped_fold_seeds"] = [
                float(unclipped_score(headline_auc(ref, sub, replace(cfg, seed=cfg.seed + s))))
                for s in range(a.fold_seeds)
            ]
        band = band_of(ref, F["oracle"], cfg, NullConfig(n_swaps=a.swaps, n_splits=0))
        rows[name] = {
            "probes": list(probes),
            "excluded": list(exclude),
            "features": sorted(ref),
            "seconds_per_point": sum(sec_pp[p] for p in probes),
            "null_band": [band.lo, band.hi],
            "null_median": band.median,
            "scores": res,
            "cross_block_spearman_reference": {
                f"{x}~{y}": v for (x, y), v in block_correlations(ref).items()
            },
        }
        print(f"{name}: scored in {time.perf_counter() - t0:.0f} s", flush=True)

    head = (
        "| probe set | features | s/point | real vs real (unclipped) | null band (2.5-97.5 %) "
        "| N(mu,Sigma) | token_cluster | stats_token_cluster | quantile-matched (unclipped) "
        "| glued (unclipped, mean of seeds) |"
    )
    print()
    print(head)
    print("|" + "---|" * 10)
    for name, r in rows.items():
        s = r["scores"]
        gl = float(np.mean(s["glued"]["unclipped_seeds"]))
        print(
            f"| {name} | {len(r['features'])} | {r['seconds_per_point']:.2f} | "
            f"{fmt(s['oracle'])} ({s['oracle']['unclipped']:.3f}) | "
            f"{r['null_band'][0]:.3f} - {r['null_band'][1]:.3f} | {fmt(s['gaussian'])} | "
            f"{fmt(s['token_cluster'])} | {fmt(s['stats_token_cluster'])} | "
            f"{fmt(s['quantile'])} ({s['quantile']['unclipped']:.3f}) | "
            f"{fmt(s['glued'])} ({gl:.3f}) |"
        )
    print()
    print(
        "| probe set | real vs real | quantile-matched | glued | "
        f"(unclipped, mean +- sd over {a.fold_seeds} classifier seeds) |"
    )
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        s = r["scores"]
        cells = [
            f"{np.mean(s[g]['unclipped_fold_seeds']):.3f} +- "
            f"{np.std(s[g]['unclipped_fold_seeds'], ddof=1) if a.fold_seeds > 1 else 0:.3f}"
            for g in ("oracle", "quantile", "glued")
        ]
        print(f"| {name} | " + " | ".join(cells) + " | |")
    print()
    print("| probe | s/point (median over groups) | per group |")
    print("|---|---|---|")
    for p, v in secs.items():
        per = ", ".join(f"{g} {s:.3f}" for g, s in v.items())
        print(f"| {p} | {sec_pp[p]:.3f} | {per} |")
    doc = {
        "track": a.track,
        "n": n,
        "seed": a.seed,
        "contexts_per_row": 1,
        "score_config": asdict(cfg),
        "joint": asdict(joint),
        "swaps": a.swaps,
        "glue_seeds": a.glue_seeds,
        "fold_seeds": a.fold_seeds,
        "threads": torch.get_num_threads(),
        "seconds_per_point": sec_pp,
        "seconds_per_point_by_group": secs,
        "fisher_convergence": fisher_check,
        "sets": rows,
        "wall_seconds": time.perf_counter() - t_start,
    }
    path = Path(a.json) if a.json else out_dir / "table.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
