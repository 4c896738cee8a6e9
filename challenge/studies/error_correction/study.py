"""The study: its typed result, the per-family and per-pair summaries, ``run`` and ``plot``."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from challenge.paths import ray_path
from challenge.results import Result
from challenge.schemas import JSON_CONFIG
from challenge.studies._common import StudyEnv, as_env, finish
from challenge.studies.controls import mde_from_interval
from challenge.studies.error_correction.config import NAME, ErrorCorrectionConfig, _seed
from challenge.studies.error_correction.families import directions
from challenge.studies.error_correction.fit import (
    _est,
    _med,
    eps_at,
    fit_exponent,
    local_slopes,
    lp_inverse_exponent,
)


@dataclass
class FamilyP:
    """One family's exponent: median over points [95% bootstrap interval], and the paired
    difference of medians against ``random``."""

    __pydantic_config__ = JSON_CONFIG

    p: float | None
    lo: float | None
    hi: float | None
    n_fit: int
    diff_vs_random: float | None
    diff_lo: float | None
    diff_hi: float | None


@dataclass
class ErrorCorrectionHeadline:
    """Per traced direction set the median slope exponent p (KL ~ eps^p); per pair family the
    paper's L^p exponent at ``kl_threshold`` and the mixture's robustness against its pure
    directions."""

    __pydantic_config__ = JSON_CONFIG

    families: dict[str, FamilyP]
    lp_inverse_exponent: dict[str, list[float | None]]
    """[median, lo, hi] of q = 1/p of the L^p model at kl_threshold (0.5: p = 2; < 0.5: p > 2,
    the mixture more robust than a quadratic form allows; 0: p infinite)"""
    mixture_log10_eps_ratio: dict[str, list[float | None]]
    """[median, lo, hi] of log10(eps_mix / sqrt(eps_a eps_b)) at kl_threshold (> 0: the
    mixture needs a larger push; the p = 2 value is log10(|a + b| / sqrt 2) ~ 0)"""


@dataclass
class ErrorCorrectionResult(Result):
    """The study's result; ``detail`` holds per-family summaries, the floor and the grid."""

    __pydantic_config__ = JSON_CONFIG

    kind: Literal["error_correction"]
    config: ErrorCorrectionConfig
    headline: ErrorCorrectionHeadline


def summarise(p: dict[str, np.ndarray], cfg: ErrorCorrectionConfig) -> dict:
    """Median p [interval] per family, and the paired difference of medians vs random."""
    ref = p["random"]
    doc = {}
    for f, v in p.items():
        m = _est(_med, v, cfg=cfg)
        dv = _est(lambda a, b: _med(a) - _med(b), v, ref, cfg=cfg)
        mde = None
        if dv[1] is not None and dv[2] is not None:
            mde = float(mde_from_interval(dv[1], dv[2]))
        doc[f] = {
            "p": m,
            "n_fit": int(np.isfinite(v).sum()),
            "n_points": len(v),
            "diff_vs_random": dv,
            "diff_mde": mde,
            "quartiles": np.nanpercentile(v, [25, 75]).tolist() if np.isfinite(v).any() else None,
        }
    return doc


def _p_of_q(v: list[float | None]) -> list[float | None]:
    """[median, lo, hi] of q = 1/p as [median, lo, hi] of p (the order of the ends flips; None
    where q is 0 or missing: p infinite or undefined, JSON has no infinity)."""
    inv = lambda q: None if not q else 1.0 / q  # noqa: E731
    return [inv(v[0]), inv(v[2]), inv(v[1])]


def pair_summary(f, eps, kl, eps_thr, cos, cfg, ref=None) -> dict:
    """The L^p exponent of family ``f``'s pairs at every threshold (median of q = 1/p over
    points, interval, as p), the mixture's robustness ratio, and the difference of median q
    against random's pairs."""
    s0 = 1 + len(cfg.noise_eps)
    doc, qs = {"cos_median": float(np.median(cos)), "by_threshold": {}}, {}
    for t in cfg.lp_thresholds:
        e = {k: eps_at(eps, kl[k][:, s0:], t) for k in (f, f + "_b", f + "_mix")}
        q = lp_inverse_exponent(e[f], e[f + "_b"], e[f + "_mix"], cos)
        qs[t] = q
        doc["by_threshold"][f"{t:g}"] = {
            "q": _est(_med, q, cfg=cfg),
            "p_lp": _p_of_q(_est(_med, q, cfg=cfg)),
            "n": int(np.isfinite(q).sum()),
            "fraction_p_infinite": float((q == 0).mean()),
        }
    q = qs.get(cfg.kl_threshold, qs[cfg.lp_thresholds[0]])
    ea, eb, em = (eps_thr[k] for k in (f, f + "_b", f + "_mix"))
    ratio = np.log10(em) - (np.log10(ea) + np.log10(eb)) / 2
    doc |= {
        "q": _est(_med, q, cfg=cfg),
        "p_lp": _p_of_q(_est(_med, q, cfg=cfg)),
        "n": int(np.isfinite(q).sum()),
        "log10_eps_mix_over_pure": _est(_med, ratio, cfg=cfg),
        "log10_eps_mix_over_pure_p2": float(np.median(np.log10(np.sqrt(2 + 2 * cos) / np.sqrt(2)))),
        "_q": q,
    }
    if ref is not None:
        dq = _est(lambda a, b: _med(a) - _med(b), q, ref["_q_ref"], cfg=cfg)
        doc["q_diff_vs_random"] = dq
        ok = dq[1] is not None and dq[2] is not None
        doc["q_diff_mde"] = float(mde_from_interval(dq[1], dq[2])) if ok else None
    if f == "random":
        doc["_q_ref"] = q
    return doc


def run(
    cfg: ErrorCorrectionConfig, env: StudyEnv | str | Path, *, out: Path, draw: bool = True
) -> ErrorCorrectionResult:
    """The study on ``env``; writes ``<out>/error_correction.{json,npz}`` (+ ``.png``)."""
    env = as_env(env)
    timings: dict[str, float] = {}
    toks_all, acts_all = env.track.tokens("public"), env.track.acts("public")
    g = torch.Generator().manual_seed(_seed(cfg.seed, "points"))
    idx = torch.randperm(len(acts_all), generator=g)[: cfg.n_points]
    tokens, x = toks_all[idx], acts_all[idx].float()
    dirs, info, cos = directions(env, cfg, tokens, x, timings)
    eps = cfg.grid()
    noise = np.asarray(cfg.noise_eps, dtype=np.float64)
    rel = np.concatenate([[0.0], noise, eps])  # step 0: x itself, the reference
    n_noise = len(noise)
    norms = x.norm(dim=-1)
    kl, l2 = {}, {}
    t = time.perf_counter()
    for f, u in dirs.items():
        paths = torch.cat(
            [
                ray_path(x[i : i + 1], u[i : i + 1], torch.as_tensor(rel) * norms[i].double())
                for i in range(len(x))
            ]
        )
        c = env.eng.curves(tokens, paths, js=False, desc=f"error correction: {f}")
        kl[f], l2[f] = c.kl.astype(np.float64), c.l2.astype(np.float64)
    timings["curves"] = round(time.perf_counter() - t, 1)
    # the floor: float32 noise of the KL of the noise probes, pooled over the point's directions
    noise_kl = np.stack([k[:, 1 : 1 + n_noise].max(1) for k in kl.values()], 1).max(1)
    noise_l2 = np.stack([v[:, 1 : 1 + n_noise].max(1) for v in l2.values()], 1).max(1)
    floor = cfg.floor_factor * np.maximum(noise_kl, np.finfo(np.float32).tiny)
    floor_l2 = cfg.floor_factor * np.maximum(noise_l2, np.finfo(np.float32).tiny)
    s0 = 1 + n_noise
    p, p_l2, p_small, eps_thr, arrays = (
        {},
        {},
        {},
        {},
        {"eps": eps, "noise_eps": noise, "points": idx.numpy()},
    )
    for f in dirs:
        K, L = kl[f][:, s0:], l2[f][:, s0:]
        p[f], n_used = fit_exponent(eps, K, floor, cfg.kl_max, cfg.min_fit_points)
        # the read-out L2 over the same grid points (and above its own floor)
        inwin = (K > floor[:, None]) & (K < cfg.kl_max)
        Lm = np.where(inwin & (floor_l2[:, None] < L), L, 0.0)
        p_l2[f], _ = fit_exponent(eps, Lm, 0.0, np.inf, cfg.min_fit_points)
        p_small[f], _ = fit_exponent(eps, K, floor, cfg.kl_max_small, cfg.min_fit_points)
        eps_thr[f] = eps_at(eps, K, cfg.kl_threshold)
        arrays |= {
            f"{f}_kl": K,
            f"{f}_l2": L,
            f"{f}_p": p[f],
            f"{f}_p_l2": p_l2[f],
            f"{f}_p_small": p_small[f],
        }
        arrays |= {f"{f}_n_fit_points": n_used, f"{f}_eps_at_threshold": eps_thr[f]}
    arrays |= {"floor_kl": floor, "noise_kl": noise_kl, "norms": norms.numpy()}
    fams = list(dirs)
    doc_f = summarise({f: p[f] for f in fams}, cfg)
    doc_l2 = summarise({f: p_l2[f] for f in fams}, cfg)
    doc_small = summarise({f: p_small[f] for f in fams}, cfg)
    for f in fams:
        doc_f[f]["p_l2"] = doc_l2[f]["p"]
        doc_f[f]["p_l2_diff_vs_random"] = doc_l2[f]["diff_vs_random"]
        doc_f[f]["p_small"] = doc_small[f]["p"]
        doc_f[f]["p_small_n_fit"] = doc_small[f]["n_fit"]
        doc_f[f]["p_small_diff_vs_random"] = doc_small[f]["diff_vs_random"]
        doc_f[f]["log10_eps_at_threshold"] = _est(_med, np.log10(eps_thr[f]), cfg=cfg)
        doc_f[f]["fraction_reaching_threshold"] = float(np.isfinite(eps_thr[f]).mean())
        with warnings.catch_warnings():  # an all-NaN column (KL 0 at the smallest eps)
            warnings.simplefilter("ignore", RuntimeWarning)
            slopes = np.nanmedian(local_slopes(eps, kl[f][:, s0:]), 0)
        doc_f[f]["median_local_slope"] = [None if not np.isfinite(v) else float(v) for v in slopes]
    pairs = {}
    for f in sorted(cos, key=lambda f: f != "random"):  # random first: the reference
        c = cos[f]
        pairs[f] = pair_summary(f, eps, kl, eps_thr, c, cfg, ref=pairs.get("random"))
        arrays |= {f"{f}_pair_cos": c, f"{f}_pair_q": pairs[f].pop("_q")}
    pairs.get("random", {}).pop("_q_ref", None)
    doc = {
        "question": "Is a mixture unit(a + b) of two feature directions more robust than a pure "
        "one (L^p exponent > 2), and does KL(p(x) || p(x + eps |x| u)) grow faster than eps^2 "
        "along feature directions than along random / PCA ones?",
        "families": doc_f,
        "pairs": pairs,
        "floor": {
            "noise_kl_median": float(np.median(noise_kl)),
            "noise_kl_max": float(noise_kl.max()),
            "floor_kl_median": float(np.median(floor)),
            "noise_l2_median": float(np.median(noise_l2)),
        },
        "write_norm_median": float(norms.median()),
        "n_points": len(x),
        "directions": info,
        "timings_s": timings,
    }
    h = ErrorCorrectionHeadline(
        families={f: FamilyP(*d["p"], d["n_fit"], *d["diff_vs_random"]) for f, d in doc_f.items()},
        lp_inverse_exponent={f: d["q"] for f, d in pairs.items()},
        mixture_log10_eps_ratio={f: d["log10_eps_mix_over_pure"] for f, d in pairs.items()},
    )
    return finish(
        env, cfg, NAME, ErrorCorrectionResult, h, doc, arrays, plot=plot, out=out, draw=draw
    )


def plot(res: ErrorCorrectionResult, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from challenge.plots import save_figure

    A, doc = res.arrays, res.detail
    eps = A["eps"]
    fams = [f for f in doc["families"] if not f.endswith(("_b", "_mix"))]
    fig, axes = plt.subplots(1, 4, figsize=(24, 5))
    cmap = plt.get_cmap("tab10")
    for j, f in enumerate(fams):
        col, d = cmap(j % 10), doc["families"][f]
        pm = d["p"][0]
        K = np.where(A[f"{f}_kl"] > 0, A[f"{f}_kl"], np.nan)
        axes[0].plot(eps, np.nanmedian(K, 0), color=col, label=f"{f}: p={pm:.2f}" if pm else f)
        sl = np.array([np.nan if v is None else v for v in d["median_local_slope"]])
        axes[1].plot(np.sqrt(eps[1:] * eps[:-1]), sl, color=col, label=f)
    axes[0].axhline(float(np.median(A["floor_kl"])), color="k", ls=":", lw=0.8, label="floor")
    axes[0].axhline(res.config.kl_max, color="k", ls="--", lw=0.8, label="kl_max")
    axes[0].set(xscale="log", yscale="log", xlabel="eps (x |x|)", ylabel="median KL (nats)")
    axes[1].axhline(2.0, color="k", ls=":", lw=0.8)
    axes[1].set(xscale="log", xlabel="eps (x |x|)", ylabel="median d log KL / d log eps")
    axes[1].set_ylim(0, 6)
    data = [A[f"{f}_p"][np.isfinite(A[f"{f}_p"])] for f in fams]
    axes[2].boxplot(data, showfliers=True)
    axes[2].set_xticks(range(1, len(fams) + 1), fams, rotation=30, fontsize=8)
    axes[2].axhline(2.0, color="k", ls=":", lw=0.8)
    axes[2].set_ylabel("slope exponent p per point (KL ~ eps^p)")
    pf = list(doc["pairs"])
    axes[3].boxplot([A[f"{f}_pair_q"][np.isfinite(A[f"{f}_pair_q"])] for f in pf])
    axes[3].set_xticks(range(1, len(pf) + 1), pf, rotation=30, fontsize=8)
    axes[3].axhline(0.5, color="k", ls=":", lw=0.8)
    axes[3].set_ylabel(
        f"1 / p of the L^p model (pairs; KL {res.config.kl_threshold:g}; 0.5: p = 2)"
    )
    for ax in axes[:2]:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(
        f"Error correction: KL ~ eps^p per direction family ({res.track.id}, "
        f"{doc['n_points']} points)",
        fontsize=10,
    )
    return save_figure(fig, path, dpi=100)
