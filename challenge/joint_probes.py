"""Joint probes: probes that tie one point's plateau together (challenge v3 candidates,
docs/joint-probes.md; not on the board). The radius along the P2 path's own direction
(``p2dir``), along the point's top SAE latents' decoder directions (``sae``), the curvature and
quadratic fit along the most sensitive direction (``fisher``), and derived ``joint.*`` features
relating probes (:func:`joint_features`). They reuse ``challenge.probes.search_radii`` (the
radius probe's bisection or the run's ``RadiusSearch``) and the one engine;
``challenge.probes.run_probes(..., joint=JointProbes(...))`` runs them after the board's probes,
whose features stay the board's, bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from challenge import checks
from challenge.engine import PerturbationEngine
from challenge.probes import (
    ProbeConfig,
    RadiusSearch,
    Slots,
    derived_features,
    p2_directions,
    p2dir_radii,
    search_radii,
)
from challenge.schemas import JSON_CONFIG

JOINT_PROBES = ("p2dir", "sae", "fisher")
JOINT_PREFIX = "joint."
"""Derived features (:func:`joint_features`): functions of other probes' features at one point."""


@dataclass
class JointProbes:
    """Joint probes: probes that tie one point's plateau together (challenge v3 candidates,
    docs/joint-probes.md). Kept apart from :class:`ProbeConfig`, as :class:`RadiusSearch` is:
    ``ProbeConfig`` is part of every record and of the board's identity, and a run without joint
    probes is the board's, bit for bit. The radii use ``ProbeConfig``'s ``radius_kl``, bracket
    and ``bisect_steps`` (and the run's :class:`RadiusSearch`).

    - ``p2dir``: the radius along the P2 path's own direction (the unit vector toward the
      point's nearest public real row) and its opposite; features ``p2dir.toward_log``,
      ``p2dir.away_log`` (log r / write norm) and ``p2dir.frac_log`` (log of the toward radius
      over the distance to that row: where along the P2 path the plateau ends).
    - ``sae``: the radius along ``+-`` the unit decoder rows of the point's ``sae_latents`` top
      active SAE latents (by ``f_j ||W_dec_j||``); features ``sae.plus_log``, ``sae.minus_log``
      (mean over the latents of log r / write norm) and ``sae.off_log`` (mean of log of the
      ``-`` radius over the latent's own contribution ``f_j ||W_dec_j||``: whether the plateau
      outlasts removing the latent).
    - ``fisher``: the most sensitive direction ``u`` at the point: ``fisher_iters`` power
      iterations on the Fisher matrix of the next-token distribution (the Hessian of
      KL(p(v) || p(v + x)) at ``x = 0``; Fisher-vector products ``J^T (diag p - p p^T) J u``,
      ``J u`` by a central difference of step ``fisher_step`` x write norm, ``J^T w`` by
      autograd); features ``fisher.eig_log`` (log of the top eigenvalue times the squared
      write norm), ``fisher.kl_log`` (mean over ``+-u`` of log KL / ``radius_kl`` at the
      quadratic prediction ``r_q = sqrt(2 radius_kl / lambda)`` of the radius: 0 where the KL is
      exactly quadratic along ``u``), ``fisher.kl_asym`` (``|log KL(+r_q u) - log KL(-r_q u)|``)
      and ``fisher.p2_cos`` (``|cos|`` of ``u`` and the P2 direction).

    Derived ``joint.*`` features relate probes (:func:`joint_features`; computed wherever their
    inputs are)."""

    __pydantic_config__ = JSON_CONFIG

    probes: tuple[str, ...] = ()
    """Joint probes run (of ``p2dir``, ``sae``, ``fisher``); empty: none."""
    sae_latents: int = 2
    """sae: top active latents whose decoder directions are probed (2 radii each)."""
    fisher_iters: int = 3
    """fisher: power iterations (each one Fisher-vector product)."""
    fisher_step: float = 0.005
    """fisher: central-difference step of ``J u``, times the track's median write norm."""

    def __post_init__(self) -> None:
        self.probes = tuple(self.probes)
        for p in self.probes:
            checks.choice(p, JOINT_PROBES, "probes")
        checks.integer(self.sae_latents, "sae_latents", minimum=1)
        checks.integer(self.fisher_iters, "fisher_iters", minimum=1)
        checks.number(self.fisher_step, "fisher_step", positive=True)


def probe_of(feature: str) -> str:
    """The probe (feature block) a feature belongs to: the part of its name before the dot."""
    return feature.split(".", 1)[0]


def _safe_log(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x > 0, np.log(np.where(x > 0, x, 1.0)), np.nan)


def joint_features(feats: dict[str, np.ndarray], radius_kl: float = 0.1) -> dict[str, np.ndarray]:
    """Derived per-point features relating probes, each where its inputs are in ``feats``:

    - ``joint.toward_vs_iso`` / ``joint.away_vs_iso``: ``p2dir.toward_log`` / ``p2dir.away_log``
      minus ``radius.mean_log`` (the P2 direction's radius against the isotropic one);
    - ``joint.sae_vs_iso``: the mean of ``sae.plus_log`` and ``sae.minus_log`` minus
      ``radius.mean_log``;
    - ``joint.fisher_aniso``: ``fisher.eig_log + 2 radius.mean_log - log(2 radius_kl)``, the log
      of the top eigenvalue over the mean curvature the isotropic radius implies (KL ~ r^2 u^T F
      u / 2): how much stiffer the most sensitive direction is than a random one;
    - ``joint.sharp_per_plateau``: ``log p2.sharpness_kl + p2dir.frac_log``, the P2 path's
      steepest normalised slope per plateau length along that path (sharpness vs radius along
      the same direction).

    A pure function of the features (the constructions of :mod:`challenge.constructions`
    recompute it after moving features between points)."""
    f = feats
    out = derived_features(f)  # the two p2dir ratios, as the board's probes derive them
    if "sae.plus_log" in f and "radius.mean_log" in f:
        out["joint.sae_vs_iso"] = (f["sae.plus_log"] + f["sae.minus_log"]) / 2 - f[
            "radius.mean_log"
        ]
    if "fisher.eig_log" in f and "radius.mean_log" in f:
        out["joint.fisher_aniso"] = (
            f["fisher.eig_log"] + 2 * f["radius.mean_log"] - math.log(2 * radius_kl)
        )
    if "p2.sharpness_kl" in f and "p2dir.frac_log" in f:
        out["joint.sharp_per_plateau"] = _safe_log(f["p2.sharpness_kl"]) + f["p2dir.frac_log"]
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def sae_directions(
    sae, points: Float[Tensor, "n d"], m: int
) -> tuple[Float[Tensor, "n m d"], Float[np.ndarray, "n m"]]:
    """Unit decoder rows of each point's ``m`` top active latents (by ``f_j ||W_dec_j||``) and
    those contributions' norms ``f_j ||W_dec_j||`` (0 where fewer than ``m`` latents fire; the
    direction is then still the ``j``-th largest)."""
    with torch.no_grad():
        f = sae.encode(points.to(sae.W_dec.dtype)).float()
        dn = sae.W_dec.float().norm(dim=-1)
        size, idx = (f * dn).topk(min(m, f.shape[-1]), dim=-1)
        dirs = sae.W_dec.float()[idx] / dn[idx][..., None].clamp_min(1e-12)
    return dirs, size.double().numpy()


@dataclass
class FisherTop:
    """What :func:`fisher_top` ends with: per point the Rayleigh quotient ``lam`` of the last
    iterate ``u`` (unit), and the same of the iterate before (convergence)."""

    lam: Float[np.ndarray, " n"]
    u: Float[Tensor, "n d"]
    lam_before: Float[np.ndarray, " n"]


def fisher_top(
    engine: PerturbationEngine,
    tokens: Int[Tensor, "n pos"],
    points: Float[Tensor, "n d"],
    start: Float[Tensor, "n d"],
    iters: int,
    step: float,
    per: int | None = None,
) -> FisherTop:
    """Power iteration on the Fisher matrix ``F = J^T (diag p - p p^T) J`` of the next-token
    distribution at each point (``J``: Jacobian of the logits at the write point; ``F`` is the
    Hessian of KL(p(v) || p(v + x)) at 0), from ``start``. Each iteration: ``J u`` by a central
    difference ``(logits(v + h u) - logits(v - h u)) / 2h`` (one engine forward of two rows per
    point), then ``F u`` by one backward through the logits at ``v`` (kept from one forward with
    gradients). ``per`` points at a time (default: the engine's ``max_rows``)."""
    n = len(points)
    per = per or engine.cfg.max_rows
    lam = np.full(n, np.nan)
    lam_before = np.full(n, np.nan)
    u_out = torch.empty_like(points, dtype=torch.float32)
    for i in range(0, n, per):
        tok, v = tokens[i : i + per], points[i : i + per].float()
        u = start[i : i + per].float()
        u = u / u.norm(dim=-1, keepdim=True)
        with torch.enable_grad():
            x = v.detach().clone().requires_grad_(True)
            logits = engine.forward(tok, x[:, None, :])["logits"][:, 0].float()
        p = logits.detach().softmax(-1)
        lams = []
        for it in range(iters):
            with torch.no_grad():
                pair = torch.stack([v + step * u, v - step * u], dim=1)
                lg = engine.forward(tok, pair)["logits"].float()
                ju = (lg[:, 0] - lg[:, 1]) / (2 * step)
                w = p * (ju - (p * ju).sum(-1, keepdim=True))
            with torch.enable_grad():
                (fu,) = torch.autograd.grad(logits, x, grad_outputs=w, retain_graph=it < iters - 1)
            fu = fu.detach().float()
            lams.append((fu * u).sum(-1).double())
            if it < iters - 1:
                u = fu / fu.norm(dim=-1, keepdim=True).clamp_min(1e-30)
        del logits, x
        lam[i : i + per] = lams[-1].numpy()
        lam_before[i : i + per] = (lams[-2] if len(lams) > 1 else lams[-1]).numpy()
        u_out[i : i + per] = u
    return FisherTop(lam=lam, u=u_out, lam_before=lam_before)


def run_joint_probes(
    engine: PerturbationEngine,
    points: Float[Tensor, "n d"],
    slots: Slots,
    near: Float[Tensor, "n d"],
    units: dict[str, float],
    cfg: ProbeConfig,
    joint: JointProbes,
    search: RadiusSearch | None = None,
    sae=None,
    only: tuple[str, ...] | None = None,
) -> dict[str, np.ndarray]:
    """The features of the joint probes ``joint.probes`` (or ``only`` of them) for ``points`` in
    their slots (``near``: each point's nearest public row), without the derived ``joint.*``
    features. Engine calls chunk the points as the isotropic radius does (its memoised prefixes
    are shared)."""
    n = len(points)
    tok = slots.tokens[:n]
    norm = units["write_norm_median"]
    per = max(1, engine.cfg.max_rows // (cfg.n_directions + 1))  # the isotropic radius' chunk
    out: dict[str, np.ndarray] = {}
    todo = joint.probes if only is None else tuple(p for p in joint.probes if p in only)
    fallback = slots.dirs[:n, 0]
    if "p2dir" in todo:
        r, dist = p2dir_radii(engine, tok, points, near, fallback, cfg, norm, search)
        with np.errstate(divide="ignore"):
            frac = np.where(dist > 0, np.log(r[:, 0] / np.where(dist > 0, dist, 1.0)), np.nan)
        lr = np.log(r / norm)
        out |= {"p2dir.toward_log": lr[:, 0], "p2dir.away_log": lr[:, 1], "p2dir.frac_log": frac}
    if "sae" in todo:
        if sae is None:
            raise ValueError("the sae joint probe needs the track's SAE (sae=...)")
        m = joint.sae_latents
        d, size = sae_directions(sae, points, m)
        dirs = torch.cat([d, -d], dim=1)  # [n, 2m, d]: + then -
        r = search_radii(engine, tok, points, dirs, cfg, norm, search, per * (2 * m + 1))
        lr = np.log(r / norm)
        with np.errstate(divide="ignore", invalid="ignore"):
            off = np.log(r[:, m:]) - _safe_log(size)
        out |= {
            "sae.plus_log": lr[:, :m].mean(1),
            "sae.minus_log": lr[:, m:].mean(1),
            "sae.off_log": np.where(np.isfinite(off), off, np.nan).mean(1),
        }
    if "fisher" in todo:
        top = fisher_top(
            engine, tok, points, fallback, joint.fisher_iters, joint.fisher_step * norm, per
        )
        lam = np.maximum(top.lam, 1e-30)
        rq = torch.from_numpy(np.sqrt(2 * cfg.radius_kl / lam)).float()[:, None]
        paths = torch.stack([points, points + rq * top.u, points - rq * top.u], dim=1)
        kl = engine.curves(tok, paths, max_rows=per * 3, desc="fisher", js=False).kl[:, 1:]
        lk = _safe_log(kl / cfg.radius_kl)
        u2, _ = p2_directions(points, near, fallback)
        out |= {
            "fisher.eig_log": np.log(lam * norm**2),
            "fisher.kl_log": lk.mean(1),
            "fisher.kl_asym": np.abs(lk[:, 0] - lk[:, 1]),
            "fisher.p2_cos": (top.u.double() * u2.double()).sum(-1).abs().numpy(),
        }
    return out
