"""The scorer: do submitted activations sit on plateaus like held-out real ones?

Every candidate point v_i (submitted, or held-out real for the reference) is written at the
track's write point in context prompt c_i and probed with P1 both ways:

- **origin** (the plateau around v): path v_i -> a_{c_i}, the context's own real activation;
- **target** (v as the end of a real path): path a_{c_i} -> v_i;

each in the relative scheme (MS on L2 and KL, nonlinearity and area-ratio steps) and the
absolute scheme (plateau length), scale-free units. Per feature: KS between the candidate's and
the held-out reference's distributions, with a bootstrap CI. Two calibration points are scored
the same way: the **floor** (a second, disjoint held-out real sample: real-vs-real noise) and
the **ceiling** (N(mu, Sigma) of the public split: the random baseline). Per feature,
gap closed = (ceiling - submission) / (ceiling - floor), clipped above at 1; the headline is its
mean over features whose ceiling exceeds the floor by at least 0.05.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import challenge
from challenge import metrics as M
from challenge.directions import ActivationStats, gaussian_like
from challenge.models import LoadedModel, cache_root
from challenge.protocols import P1Config, p1_probe, resolve_p1
from challenge.results import provenance, save_result

SCHEMA = Path(__file__).parent / "schemas" / "score_report.schema.json"
MIN_SPREAD = 0.05


@dataclass
class ScoreConfig:
    """How a submission is probed; part of every report."""

    n_curves: int = 100
    n_steps: int = 50
    n_boot: int = 200
    seed: int = 0
    units: str = "scale_free"


def _indices(n_avail: int, n: int, seed: int) -> torch.Tensor:
    return torch.randperm(n_avail, generator=torch.Generator().manual_seed(seed))[:n]


def probe_features(track, engine, points: torch.Tensor, cfg: ScoreConfig) -> dict[str, np.ndarray]:
    """P1 features of ``points`` written in the track's context prompts (origin and target)."""
    n = len(points)
    ctx_idx = torch.arange(n) % len(track.acts("context"))
    toks, real = track.tokens("context")[ctx_idx], track.acts("context")[ctx_idx]
    feats: dict[str, np.ndarray] = {}
    for scheme in ("relative", "absolute"):
        pc = P1Config(scheme=scheme, units=cfg.units, n_steps=cfg.n_steps, seed=cfg.seed)
        r = resolve_p1(pc, track.units)
        keep = ("ms_l2", "ms_kl", "nl_l2", "ar_l2") if scheme == "relative" else ("plateau_length",)
        for role, (a, b) in {"origin": (points, real), "target": (real, points)}.items():
            _, f = p1_probe(engine, toks, a, b, pc, r, desc=f"{role} {scheme}")
            feats |= {f"{role}.{k}": f[k] for k in keep}
    return feats


def reference_sets(track, cfg: ScoreConfig) -> dict[str, torch.Tensor]:
    """Held-out reference (A), disjoint held-out floor sample (B), random ceiling."""
    held = track.acts("heldout")
    n = min(cfg.n_curves, len(held) // 2)
    idx = _indices(len(held), 2 * n, cfg.seed)
    stats = ActivationStats.fit(track.acts("public"))
    return {
        "reference": held[idx[:n]],
        "floor": held[idx[n:]],
        "ceiling": gaussian_like(stats, n, cfg.seed + 7),
    }


def _ref_cache_path(track, cfg: ScoreConfig) -> Path:
    key = json.dumps(
        {"cfg": asdict(cfg), "manifest": track_checksum(track), "suite": challenge.__version__},
        sort_keys=True,
    )
    h = hashlib.sha256(key.encode()).hexdigest()[:16]
    return (
        cache_root()
        / "scores"
        / track.spec.track_id
        / f"v{track.spec.version}"
        / f"reference_{h}.npz"
    )


def track_checksum(track) -> str:
    return (
        hashlib.sha256((Path(track.path) / "manifest.json").read_bytes()).hexdigest()
        if track.path
        else "unknown"
    )


def reference_features(track, engine, cfg: ScoreConfig) -> dict[str, dict[str, np.ndarray]]:
    """Features of the reference, floor and ceiling sets; cached per track and config."""
    path = _ref_cache_path(track, cfg)
    if path.exists():
        z = np.load(path)
        out: dict[str, dict[str, np.ndarray]] = {}
        for key in z.files:
            group, feat = key.split("/", 1)
            out.setdefault(group, {})[feat] = z[key]
        return out
    sets = reference_sets(track, cfg)
    out = {g: probe_features(track, engine, pts, cfg) for g, pts in sets.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{f"{g}/{k}": v for g, f in out.items() for k, v in f.items()})
    return out


def gap_closed(ks_sub: float, floor: float, ceiling: float) -> float | None:
    spread = ceiling - floor
    if spread < MIN_SPREAD:
        return None
    return float(min(1.0, (ceiling - ks_sub) / spread))


def score_points(
    track,
    lm: LoadedModel,
    points: torch.Tensor,
    cfg: ScoreConfig,
    meta: dict[str, Any] | None = None,
    progress: bool = True,
) -> tuple[dict, dict]:
    """Score report (JSON-able) and arrays for a set of candidate activations (``progress``:
    a bar per probe on stderr)."""
    engine = track.engine(lm, progress=progress)
    ref = reference_features(track, engine, cfg)
    idx = _indices(len(points), min(cfg.n_curves, len(points)), cfg.seed + 1)
    sub = probe_features(track, engine, points[idx], cfg)
    per, gaps = {}, []
    for k in sub:
        ks = M.ks_bootstrap(sub[k], ref["reference"][k], n_boot=cfg.n_boot, seed=cfg.seed)
        floor = M.ks_statistic(ref["floor"][k], ref["reference"][k])
        ceiling = M.ks_statistic(ref["ceiling"][k], ref["reference"][k])
        g = gap_closed(ks["stat"], floor, ceiling)
        per[k] = {
            "ks": ks["stat"],
            "ks_ci": [ks["low"], ks["high"]],
            "floor": floor,
            "ceiling": ceiling,
            "gap_closed": g,
            "submission": M.summarise(sub[k]),
            "reference": M.summarise(ref["reference"][k]),
        }
        if g is not None:
            gaps.append(g)
    report = {
        "schema": "plateau-score/1",
        "submission": meta or {},
        "track": {
            "id": track.spec.track_id,
            "version": track.spec.version,
            "manifest_sha256": track_checksum(track),
            "units": track.units,
        },
        "config": asdict(cfg),
        "headline": {
            "gap_closed": float(np.mean(gaps)) if gaps else None,
            "n_features": len(gaps),
            "mean_ks": float(np.mean([v["ks"] for v in per.values()])),
        },
        "features": per,
        "provenance": provenance(lm.provenance | engine.describe()),
    }
    arrays = {f"submission/{k}": v for k, v in sub.items()} | {
        f"reference/{k}": v for k, v in ref["reference"].items()
    }
    return report, arrays


def validate_report(report: dict) -> None:
    import jsonschema

    jsonschema.validate(report, json.loads(SCHEMA.read_text()))


def plot_report(report: dict, arrays: dict, path: Path) -> Path:
    """Histograms of each feature: submission vs held-out real."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from challenge.plots import save_figure

    feats = list(report["features"])
    cols = 5
    rows = (len(feats) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax, k in zip(axes.flat, feats, strict=False):
        a, b = arrays[f"reference/{k}"], arrays[f"submission/{k}"]
        edges = np.histogram_bin_edges(np.concatenate([a, b]), bins=20)
        ax.hist(a, bins=edges, alpha=0.5, label="held-out real", color="#1f77b4")
        ax.hist(b, bins=edges, alpha=0.5, label="submission", color="#2ca02c")
        ax.set_title(f"{k}  KS {report['features'][k]['ks']:.2f}", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(feats) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    g = report["headline"]["gap_closed"]
    fig.suptitle(
        f"{report['submission'].get('name', '?')} on {report['track']['id']}: gap closed {g:.2f}"
        if g is not None
        else "",
        fontsize=10,
    )
    return save_figure(fig, path, dpi=90)


def score_submission(
    folder: str | Path,
    track,
    lm: LoadedModel,
    cfg: ScoreConfig | None = None,
    out: Path | None = None,
) -> dict:
    """Validate, score and (if ``out``) write ``<out>/<name>.json`` + ``.npz`` + ``.png``."""
    from challenge.submission import read_submission
    from challenge.validate import validate_submission

    cfg = cfg or ScoreConfig()
    rep = validate_submission(folder, track)
    meta, acts = read_submission(folder)
    report, arrays = score_points(track, lm, acts, cfg, meta)
    report["validation"] = {"checks": rep.checks, **rep.stats}
    validate_report(report)
    if out is not None:
        save_result(out, meta["name"], report, arrays)
        plot_report(report, arrays, Path(out) / f"{meta['name']}.png")
    return report
