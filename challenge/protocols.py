"""The published protocols as typed configs and runners (see docs/protocols.md).

- P1 "teren" (Giglemiani et al. 2024): from a real activation toward a target, relative
  (``linspace(0,1,100)``) or absolute (fixed step) scheme; curve features MS, AP, NL, AR.
- P2 "stable regions" (Janiak et al. 2024): interpolation between adjacent prompts' activations,
  sharpness = max d'(alpha)/d(1).
- P3 sensitive directions (Lee & Heimersheim 2024): x + L d/||d|| over a length grid.

Units: ``gpt2`` uses the published constants (GPT-2 small's scale); ``scale_free`` derives
them from the track's measured units (``Track.units``):
absolute step = median real-to-real write distance / 100; plateau distance = 0.2 x median
read-out distance at the end of a real-to-real path; P3 lengths = published grid / 91 x median
write-point norm. Every result records which units were used and the resolved values.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from challenge import metrics as M
from challenge.directions import (
    ActivationStats,
    cov_random_mixture,
    gaussian_like,
    isotropic,
    real_mixture,
)
from challenge.engine import Curves, PerturbationEngine
from challenge.errors import ConfigError
from challenge.paths import absolute_path, arc_path, linear_path, p3_length_grid, ray_path

Units = Literal["gpt2", "scale_free"]
GPT2 = {"abs_step": 0.5, "plateau_distance": 20.0, "slope_threshold": 0.02}


# ---------------------------------------------------------------------------------------- P1
@dataclass
class P1Config:
    """P1 "teren" plateau protocol."""

    scheme: Literal["relative", "absolute"] = "relative"
    units: Units = "scale_free"
    n_curves: int = 200
    n_steps: int = 100  # relative: points on linspace(0,1); absolute: t = 0..n_steps
    slope_threshold: float = 0.02
    plateau_distance: float | None = None  # None: resolved from units
    abs_step: float | None = None  # None: resolved from units
    seed: int = 0


def resolve_p1(cfg: P1Config, units: dict[str, float]) -> dict[str, float]:
    """The constants a P1 run uses, in read-out / write-point units."""
    if cfg.units == "gpt2":
        r = dict(GPT2)
    elif cfg.units == "scale_free":
        r = {
            "abs_step": units["write_distance_median"] / 100.0,
            "plateau_distance": 0.2 * units["read_distance_median"],
            "slope_threshold": cfg.slope_threshold,
        }
    else:
        raise ConfigError(f"unknown units {cfg.units!r}", field="units")
    if cfg.plateau_distance is not None:
        r["plateau_distance"] = cfg.plateau_distance
    if cfg.abs_step is not None:
        r["abs_step"] = cfg.abs_step
    r["slope_threshold"] = cfg.slope_threshold
    r["units"] = cfg.units
    return r


def p1_paths(
    bases: Float[Tensor, "n d"], targets: Float[Tensor, "n d"], cfg: P1Config, r: dict
) -> Float[Tensor, "n steps d"]:
    if cfg.scheme == "relative":
        return linear_path(bases, targets, cfg.n_steps)
    return absolute_path(bases, targets, step_size=r["abs_step"], n_steps=cfg.n_steps + 1)


def p1_features(curves: Curves, cfg: P1Config, r: dict) -> dict[str, np.ndarray]:
    """Per-curve features: max-slope step on L2 and KL (curves normalised to end at 1),
    plateau length (first step with L2 >= plateau distance), nonlinearity and area-ratio steps."""
    th = r["slope_threshold"]
    return {
        "ms_l2": M.max_slope_step(curves.l2, threshold=th, normalise=True),
        "ms_kl": M.max_slope_step(curves.kl, threshold=th, normalise=True),
        "plateau_length": M.plateau_length(curves.l2, threshold=r["plateau_distance"]),
        "nl_l2": M.nonlinearity_step(curves.l2),
        "ar_l2": M.area_ratio_step(curves.l2),
    }


def p1_probe(
    engine: PerturbationEngine,
    tokens: Int[Tensor, "n pos"],
    bases: Float[Tensor, "n d"],
    targets: Float[Tensor, "n d"],
    cfg: P1Config,
    r: dict,
    desc: str = "P1",
) -> tuple[Curves, dict[str, np.ndarray]]:
    """Curves from each base (written in its context prompt) toward its target, and features."""
    curves = engine.curves(tokens, p1_paths(bases, targets, cfg, r), desc=desc)
    return curves, p1_features(curves, cfg, r)


def compare_features(ref: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> dict[str, dict]:
    """Per feature: summaries of both samples and the KS statistic between them."""
    return {
        k: {
            "ref": M.summarise(ref[k]),
            "other": M.summarise(other[k]),
            "ks": M.ks_statistic(ref[k], other[k]),
        }
        for k in ref
    }


# ---------------------------------------------------------------------------------------- P2
@dataclass
class P2Config:
    """P2 "stable regions" interpolation between adjacent prompts (i, i+1)."""

    n_pairs: int = 100
    n_steps: int = 51
    variant: Literal["linear", "arc"] = "linear"
    control: bool = True  # also run a cov-random-mixture direction of the same length
    seed: int = 0


def p2_paths(a: Tensor, b: Tensor, cfg: P2Config, mean: Tensor | None) -> Tensor:
    if cfg.variant == "arc":
        if mean is None:
            raise ConfigError("arc variant needs the mean activation", field="variant")
        return arc_path(a, b, mean, cfg.n_steps)
    return linear_path(a, b, cfg.n_steps)


def p2_sharpness(curves: Curves) -> dict[str, np.ndarray]:
    return {"sharpness_l2": M.sharpness(curves.l2), "sharpness_kl": M.sharpness(curves.kl)}


# ---------------------------------------------------------------------------------------- P3
@dataclass
class P3Config:
    """P3 sensitive directions: x + L d/||d|| over the published length grid."""

    units: Units = "scale_free"
    n_base: int = 100
    directions: tuple[str, ...] = ("isotropic", "gaussian", "cov_mixture", "real_mixture")
    kl_threshold: float = 0.1  # nats: the length at which the median KL first reaches it
    seed: int = 0


def p3_lengths(cfg: P3Config, units: dict[str, float]) -> Tensor:
    grid = torch.cat([torch.zeros(1), p3_length_grid()])
    if cfg.units == "gpt2":
        return grid
    return grid / 91.0 * units["write_norm_median"]


def p3_directions(
    kinds: tuple[str, ...], public: Tensor, stats: ActivationStats, n: int, seed: int
) -> dict[str, Tensor]:
    out = {}
    for i, k in enumerate(kinds):
        s = seed + 1000 * i
        if k == "isotropic":
            out[k] = isotropic(n, public.shape[1], s)
        elif k == "gaussian":
            out[k] = gaussian_like(stats, n, s)
        elif k == "cov_mixture":
            out[k] = cov_random_mixture(stats, n, s)
        elif k == "real_mixture":
            out[k] = real_mixture(public, n, s)
        else:
            raise ConfigError(f"unknown direction kind {k!r}", field="directions")
    return out


def p3_probe(
    engine: PerturbationEngine,
    tokens: Tensor,
    bases: Tensor,
    directions: dict[str, Tensor],
    lengths: Tensor,
    kl_threshold: float = 0.1,
) -> tuple[dict[str, Curves], dict[str, dict]]:
    """Curves along each direction kind from the same bases; summary per kind."""
    curves, summary = {}, {}
    for name, d in directions.items():
        c = engine.curves(tokens, ray_path(bases, d, lengths), desc=f"P3 {name}")
        curves[name] = c
        med_kl = np.median(c.kl, axis=0)
        hit = np.nonzero(med_kl >= kl_threshold)[0]
        summary[name] = {
            "median_kl": med_kl.tolist(),
            "median_l2": np.median(c.l2, axis=0).tolist(),
            "length_to_kl_threshold": float(lengths[hit[0]]) if len(hit) else None,
            "kl_at_max_length": M.summarise(c.kl[:, -1]),
        }
    return curves, summary


# ------------------------------------------------------------------------------ runners
@dataclass
class ProtocolRun:
    """A CLI run of one protocol on a built track."""

    track: str = "smollm2-135m-l1"
    protocol: Literal["p1", "p2", "p3"] = "p1"
    out: Path = Path("runs/protocols")
    p1: P1Config = field(default_factory=P1Config)
    p2: P2Config = field(default_factory=P2Config)
    p3: P3Config = field(default_factory=P3Config)


def _sample(n_avail: int, n: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n_avail, generator=g)[: min(n, n_avail)]


def run_p1(track, engine: PerturbationEngine, cfg: P1Config) -> tuple[dict, dict]:
    """Real targets (another prompt's activation) vs random N(mu, Sigma) targets."""
    r = resolve_p1(cfg, track.units)
    ctx_t, ctx_a, held = track.tokens("context"), track.acts("context"), track.acts("heldout")
    idx = _sample(len(ctx_a), cfg.n_curves, cfg.seed)
    n = len(idx)
    real_t = held[_sample(len(held), n, cfg.seed + 1)]
    stats = ActivationStats.fit(track.acts("public"))
    rand_t = gaussian_like(stats, n, cfg.seed + 2)
    c_real, f_real = p1_probe(engine, ctx_t[idx], ctx_a[idx], real_t, cfg, r, "P1 real")
    c_rand, f_rand = p1_probe(engine, ctx_t[idx], ctx_a[idx], rand_t, cfg, r, "P1 random")
    doc = {
        "protocol": "p1",
        "config": asdict(cfg),
        "resolved": r,
        "features": compare_features(f_real, f_rand),
        "n_curves": n,
    }
    arrays = {f"real_{k}": v for k, v in c_real.arrays().items()} | {
        f"random_{k}": v for k, v in c_rand.arrays().items()
    }
    arrays |= {f"real_feat_{k}": v for k, v in f_real.items()} | {
        f"random_feat_{k}": v for k, v in f_rand.items()
    }
    return doc, arrays


def run_p2(track, engine: PerturbationEngine, cfg: P2Config) -> tuple[dict, dict]:
    ctx_t, ctx_a = track.tokens("context"), track.acts("context")
    n = min(cfg.n_pairs, len(ctx_a) - 1)
    a, b, toks = ctx_a[:n], ctx_a[1 : n + 1], ctx_t[:n]
    mean = track.acts("public").mean(0)
    c_real = engine.curves(toks, p2_paths(a, b, cfg, mean), desc="P2 real")
    s_real = p2_sharpness(c_real)
    doc = {"protocol": "p2", "config": asdict(cfg), "n_pairs": n, "sharpness": {}}
    arrays = {f"real_{k}": v for k, v in c_real.arrays().items()} | {
        f"real_{k}": v for k, v in s_real.items()
    }
    groups = {"real": s_real}
    if cfg.control:
        stats = ActivationStats.fit(track.acts("public"))
        d = cov_random_mixture(stats, n, cfg.seed)
        d = d / d.norm(dim=-1, keepdim=True) * (b - a).norm(dim=-1, keepdim=True)
        c_rand = engine.curves(toks, p2_paths(a, a + d, cfg, mean), desc="P2 random")
        s_rand = p2_sharpness(c_rand)
        groups["random"] = s_rand
        arrays |= {f"random_{k}": v for k, v in c_rand.arrays().items()} | {
            f"random_{k}": v for k, v in s_rand.items()
        }
    for g, s in groups.items():
        doc["sharpness"][g] = {k: M.summarise(v) for k, v in s.items()}
    if cfg.control:
        doc["ks_real_vs_random"] = {
            k: M.ks_statistic(groups["real"][k], groups["random"][k]) for k in s_real
        }
    return doc, arrays


def run_p3(
    track, engine: PerturbationEngine, cfg: P3Config, extra: dict[str, Tensor] | None = None
) -> tuple[dict, dict]:
    """``extra``: additional direction sets ``[n_base, d]`` (e.g. SAE decoder directions)."""
    ctx_t, ctx_a = track.tokens("context"), track.acts("context")
    idx = _sample(len(ctx_a), cfg.n_base, cfg.seed)
    public = track.acts("public")
    dirs = p3_directions(cfg.directions, public, ActivationStats.fit(public), len(idx), cfg.seed)
    dirs |= extra or {}
    lengths = p3_lengths(cfg, track.units)
    curves, summary = p3_probe(engine, ctx_t[idx], ctx_a[idx], dirs, lengths, cfg.kl_threshold)
    doc = {
        "protocol": "p3",
        "config": asdict(cfg),
        "lengths": lengths.tolist(),
        "directions": summary,
    }
    arrays = {"lengths": lengths.numpy()}
    for name, c in curves.items():
        arrays |= {f"{name}_{k}": v for k, v in c.arrays().items()}
    return doc, arrays
