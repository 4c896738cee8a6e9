"""Probes of the plateau *at a point*: per-point features the scorer compares between
submitted and held-out real activations.

Each probe writes the point ``v_i`` at the track's write position in context prompt ``c_i``
and runs the perturbation engine around it:

- ``radius``: the distance from ``v`` along ``k`` random isotropic unit directions at which
  KL(p(v) || p(v + r u)) first reaches ``radius_kl``, found by bisection in ``log r`` on
  ``[r_min, r_max]`` (``bisect_steps`` rounds, each one engine call with the ``k`` trial points
  of every point as one path); features: mean, min and max of ``log r`` over the directions.
- ``ap``: the published plateau length (AP, ``experiment_plateaus.ipynb``): from ``v`` toward a
  fresh N(mu, Sigma) sample in fixed steps, the first step whose read-out distance reaches the
  plateau distance (``metrics.plateau_length_published``, cut at the target step). The path is
  evaluated in chunks of steps and stops for the curves that have crossed, which gives the
  published value exactly at a fraction of the cost.
- ``p1``: P1 from ``v`` to the context's own real activation (relative scheme): max-slope step
  on KL and L2 (``metrics.max_slope_step``, suite definition on normalised curves).
- ``p2``: P2 sharpness (``metrics.sharpness``) of the path from ``v`` to its nearest public real
  activation, on KL and L2.

Which probes the scorer uses is chosen by their measured real-vs-N(mu, Sigma) separation
(``benchmarks/probe_separation.py``, ``docs/scoring.md``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from challenge import checks
from challenge import metrics as M
from challenge.engine import PerturbationEngine
from challenge.neighbours import nearest
from challenge.paths import linear_path
from challenge.schemas import JSON_CONFIG

PROBES = ("radius", "ap", "p1", "p2")


@dataclass
class ProbeConfig:
    """Which probes run around each point, and their constants (scale-free: relative to the
    track's measured units)."""

    __pydantic_config__ = JSON_CONFIG

    probes: tuple[str, ...] = ("radius", "ap")
    """Probes run (of ``radius``, ``ap``, ``p1``, ``p2``)."""
    n_directions: int = 8
    """Radius: random directions per point."""
    radius_kl: float = 0.1
    """Radius: the KL (nats) from p(v) that ends the plateau."""
    r_min: float = 0.02
    """Radius: lower end of the bisection bracket, times the track's median write norm."""
    r_max: float = 3.0
    """Radius: upper end of the bracket (a direction that never reaches ``radius_kl`` gets it)."""
    bisect_steps: int = 8
    """Radius: bisection rounds (bracket width ``log(r_max / r_min) / 2^steps`` in log r)."""
    ap_points: int = 100
    """AP: points of the published absolute path (``t = linspace(0, n, n)`` steps)."""
    ap_chunk: int = 25
    """AP: steps evaluated per engine call before finished curves are dropped."""
    p1_steps: int = 30
    """P1: points on the path from ``v`` to the context's real activation."""
    p2_steps: int = 21
    """P2: points on the path from ``v`` to its nearest public real activation."""

    def __post_init__(self) -> None:
        self.probes = tuple(self.probes)
        if not self.probes:
            checks.choice("", PROBES, "probes")
        for p in self.probes:
            checks.choice(p, PROBES, "probes")
        checks.integer(self.n_directions, "n_directions", minimum=1)
        checks.number(self.radius_kl, "radius_kl", positive=True)
        checks.number(self.r_min, "r_min", positive=True)
        checks.number(self.r_max, "r_max", positive=True)
        checks.integer(self.bisect_steps, "bisect_steps", minimum=1)
        checks.integer(self.ap_points, "ap_points", minimum=2)
        checks.integer(self.ap_chunk, "ap_chunk", minimum=1)
        checks.integer(self.p1_steps, "p1_steps", minimum=M.NL_FIT_STEPS)
        checks.integer(self.p2_steps, "p2_steps", minimum=3)
        if self.r_max <= self.r_min:
            checks.number(self.r_max, "r_max", minimum=self.r_min * (1 + 1e-9))


def unit_directions(n: int, k: int, d: int, g: torch.Generator) -> Float[Tensor, "n k d"]:
    """``n x k`` isotropic unit vectors."""
    u = torch.randn(n, k, d, generator=g)
    return u / u.norm(dim=-1, keepdim=True)


def radius(
    engine: PerturbationEngine,
    tokens: Int[Tensor, "n pos"],
    points: Float[Tensor, "n d"],
    dirs: Float[Tensor, "n k d"],
    r_min: float,
    r_max: float,
    kl: float,
    steps: int,
) -> Float[np.ndarray, "n k"]:
    """Bisection radius along each direction (see the module docstring). Each round is one
    engine call whose paths are ``[v, v + r_1 u_1, ..., v + r_k u_k]``; the result is the
    bracket's geometric midpoint after ``steps`` rounds."""
    n, k, _ = dirs.shape
    lo = torch.full((n, k), math.log(r_min), dtype=torch.float64)
    hi = torch.full((n, k), math.log(r_max), dtype=torch.float64)
    for s in range(steps):
        mid = (lo + hi) / 2
        trial = points[:, None, :] + mid.exp().float()[..., None] * dirs
        paths = torch.cat([points[:, None, :], trial], dim=1)
        c = engine.curves(tokens, paths, desc=f"radius {s + 1}/{steps}", js=False)
        above = torch.from_numpy(c.kl[:, 1:] >= kl)
        hi = torch.where(above, mid, hi)
        lo = torch.where(above, lo, mid)
    return ((lo + hi) / 2).exp().numpy()


def plateau_length_ap(
    engine: PerturbationEngine,
    tokens: Int[Tensor, "n pos"],
    points: Float[Tensor, "n d"],
    ends: Float[Tensor, "n d"],
    step_size: float,
    threshold: float,
    n_points: int = 100,
    chunk: int = 25,
) -> Int[np.ndarray, " n"]:
    """The published AP of ``paths.published_path(points, ends, n_points, step_size)``, cut at
    each path's target step, evaluated ``chunk`` steps at a time (each chunk's path starts with
    ``v`` itself, the reference of the read-out distance) and only for curves not yet decided:
    equal to ``metrics.plateau_length_published`` on the full curves."""
    d = ends - points
    norm = d.norm(dim=-1)
    u = d / norm[:, None]
    cut = torch.floor(norm / step_size).to(torch.int64)
    t_all = torch.linspace(0, n_points, n_points)
    ap = torch.full((len(points),), M.PUBLISHED_AP_NONE, dtype=torch.int64)
    todo = torch.arange(len(points))
    for s in range(1, n_points, chunk):  # step 0 is v itself: distance 0 < threshold
        todo = todo[cut[todo] > s]
        if not len(todo):
            break
        idx = torch.arange(s, min(s + chunk, n_points))
        x = points[todo, None, :] + u[todo, None, :] * (t_all[idx] * step_size)[None, :, None]
        paths = torch.cat([points[todo, None, :], x], dim=1)
        desc = f"AP steps {s}-{idx[-1].item()}"
        l2 = engine.curves(tokens[todo], paths, desc=desc, js=False).l2[:, 1:]
        hit = (l2 >= threshold) & (idx[None, :] < cut[todo, None]).numpy()
        found = hit.any(axis=1)
        ap[todo[found]] = torch.from_numpy(idx.numpy()[hit.argmax(axis=1)[found]])
        todo = todo[~torch.from_numpy(found)]
    return ap.numpy()


def path_features(
    engine: PerturbationEngine,
    tokens: Int[Tensor, "n pos"],
    points: Float[Tensor, "n d"],
    targets: Float[Tensor, "n d"],
    n_steps: int,
    kind: str,
    slope_threshold: float = M.SLOPE_THRESHOLD,
) -> dict[str, np.ndarray]:
    """P1 max-slope steps (``kind="p1"``) or P2 sharpness (``kind="p2"``) of the linear paths
    ``points -> targets`` on KL and L2."""
    c = engine.curves(tokens, linear_path(points, targets, n_steps), desc=kind, js=False)
    if kind == "p1":
        return {
            "ms_kl": M.max_slope_step(c.kl, threshold=slope_threshold, normalise=True),
            "ms_l2": M.max_slope_step(c.l2, threshold=slope_threshold, normalise=True),
        }
    return {"sharpness_kl": M.sharpness(c.kl), "sharpness_l2": M.sharpness(c.l2)}


@dataclass
class Slots:
    """What every scored point ``i`` shares across entries (the paired design): its context
    prompt, its random radius directions and its AP end point."""

    tokens: Int[Tensor, "n pos"]
    context_acts: Float[Tensor, "n d"]
    """The real activation of each slot's context prompt (P1's end point)."""
    dirs: Float[Tensor, "n k d"]
    ap_ends: Float[Tensor, "n d"]

    def take(self, start: int, stop: int) -> Slots:
        """Slots ``start .. stop - 1``."""
        return Slots(
            tokens=self.tokens[start:stop],
            context_acts=self.context_acts[start:stop],
            dirs=self.dirs[start:stop],
            ap_ends=self.ap_ends[start:stop],
        )


def run_probes(
    engine: PerturbationEngine,
    points: Float[Tensor, "n d"],
    slots: Slots,
    public: Float[Tensor, "m d"],
    units: dict[str, float],
    cfg: ProbeConfig,
) -> dict[str, np.ndarray]:
    """Every configured probe's features for ``points`` in their slots: ``{probe.feature: [n]}``."""
    n = len(points)
    if len(slots.tokens) < n:
        raise ValueError(f"{len(slots.tokens)} slots for {n} points")
    tok = slots.tokens[:n]
    norm = units["write_norm_median"]
    out: dict[str, np.ndarray] = {}
    if "radius" in cfg.probes:
        r = radius(
            engine,
            tok,
            points,
            slots.dirs[:n, : cfg.n_directions],
            cfg.r_min * norm,
            cfg.r_max * norm,
            cfg.radius_kl,
            cfg.bisect_steps,
        )
        lr = np.log(r / norm)
        out |= {
            "radius.mean_log": lr.mean(1),
            "radius.min_log": lr.min(1),
            "radius.max_log": lr.max(1),
        }
    if "ap" in cfg.probes:
        out["ap.plateau_length"] = plateau_length_ap(
            engine,
            tok,
            points,
            slots.ap_ends[:n],
            step_size=units["write_distance_median"] / 100.0,
            threshold=0.2 * units["read_distance_median"],
            n_points=cfg.ap_points,
            chunk=cfg.ap_chunk,
        ).astype(np.float64)
    if "p1" in cfg.probes:
        f = path_features(engine, tok, points, slots.context_acts[:n], cfg.p1_steps, "p1")
        out |= {f"p1.{k}": v.astype(np.float64) for k, v in f.items()}
    if "p2" in cfg.probes:
        near = public[nearest(points, public)[1]]
        f = path_features(engine, tok, points, near, cfg.p2_steps, "p2")
        out |= {f"p2.{k}": v for k, v in f.items()}
    return out
