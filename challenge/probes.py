"""Probes of the plateau *at a point*: per-point features the scorer compares between
submitted and held-out real activations.

Each probe writes the point ``v_i`` at the track's write position in context prompt ``c_i``
and runs the perturbation engine around it:

- ``radius``: the distance from ``v`` along ``k`` random isotropic unit directions at which
  KL(p(v) || p(v + r u)) first reaches ``radius_kl``, found by bisection in ``log r`` on
  ``[r_min, r_max]`` (``bisect_steps`` rounds, each one engine call with the ``k`` trial points
  of every point as one path; the board's method) or, with ``RadiusSearch(method="illinois")``, by
  Illinois regula falsi on ``log KL - log radius_kl`` in ``log r`` (:func:`radius_illinois`);
  features: mean, min and max of ``log r`` over the directions. Both report the geometric
  midpoint of a final bracket ``[lo, hi]`` with KL(lo) < ``radius_kl`` <= KL(hi) (``r_min``
  and ``r_max`` taken as below and above without being evaluated).
- ``ap``: the published plateau length (AP, ``experiment_plateaus.ipynb``): from ``v`` toward a
  fresh N(mu, Sigma) sample in fixed steps, the first step whose read-out distance reaches the
  plateau distance (``metrics.plateau_length_published``, cut at the target step). The path is
  evaluated in chunks of steps and stops for the curves that have crossed, which gives the
  published value exactly at a fraction of the cost.
- ``p1``: P1 from ``v`` to the context's own real activation (relative scheme): max-slope step
  on KL and L2 (``metrics.max_slope_step``, suite definition on normalised curves).
- ``p2``: P2 sharpness (``metrics.sharpness``) of the path from ``v`` to its nearest public real
  activation, on KL and L2.
- ``p2dir``: the radius probe along the P2 path's own direction ``u`` (the unit vector toward
  the nearest public real activation) and along ``-u`` (:func:`p2dir_radii`); features
  ``p2dir.toward_log`` and ``p2dir.away_log`` (``log r`` over the write norm, as the radius
  probe's) and, where the ``radius`` probe runs too, ``joint.toward_vs_iso`` /
  ``joint.away_vs_iso`` (each minus ``radius.mean_log``: the plateau along the one direction P2
  looks at against its mean extent). It ties the radius and P2 blocks of one point together
  (docs/joint-probes.md): real radius and sharpness blocks glued across points no longer look
  real. The distance to the nearest public row is not a feature (it is not a plateau property).

Which probes the scorer uses is chosen by their measured real-vs-N(mu, Sigma) separation
(``benchmarks/probe_separation.py``, ``docs/scoring.md``).

Joint probes (``challenge.joint_probes.JointProbes``, docs/joint-probes.md; candidates measured
there, ``p2dir`` is also a probe here) tie one point's plateau together: the radius along the P2
path's own direction (``p2dir``), along the point's
top SAE latents' decoder directions (``sae``), the curvature and quadratic fit along the most
sensitive direction (``fisher``), and derived ``joint.*`` features relating probes
(:func:`joint_features`). They reuse :func:`radius` (or the run's :class:`RadiusSearch`) and the
one engine; a run without them is the board's, bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

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

if TYPE_CHECKING:
    from challenge.joint_probes import JointProbes

PROBES = ("radius", "ap", "p1", "p2", "p2dir")
RADIUS_METHODS = ("bisect", "illinois")


@dataclass
class ProbeConfig:
    """Which probes run around each point, and their constants (scale-free: relative to the
    track's measured units)."""

    __pydantic_config__ = JSON_CONFIG

    probes: tuple[str, ...] = ("radius", "ap")
    """Probes run (of ``radius``, ``ap``, ``p1``, ``p2``, ``p2dir``)."""
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


@dataclass
class RadiusSearch:
    """How the radius probe finds its root. Kept apart from :class:`ProbeConfig`, whose fields
    are part of every record and of the board's identity: the board is probed by bisection, and
    its records keep their layout until a board is re-made with another search (challenge v3
    then moves this into the scorer's config with a version bump)."""

    __pydantic_config__ = JSON_CONFIG

    method: Literal["bisect", "illinois"] = "bisect"
    """``bisect``: ``ProbeConfig.bisect_steps`` rounds (the board's); ``illinois``: regula falsi
    in log-log with the Illinois modification, each direction stopping once its bracket is at
    most ``tol`` wide (:func:`radius_illinois`)."""
    tol: float | None = None
    """(``illinois``) bracket width in log r that stops a direction. ``None``: the final width of
    ``bisect_steps``-round bisection, ``log(r_max / r_min) / 2^bisect_steps`` (the same
    precision; 0.0391 on the board's config)."""
    max_iter: int = 30
    """(``illinois``) engine calls at most (a direction still wider than the tolerance then
    reports its bracket's midpoint). Every bracket at least halves within four calls
    (``HALVING_CALLS + 1``), so ``4 log2(log(r_max / r_min) / tol)`` calls always suffice (28 on
    the board's config; 5-6 calls finish most directions)."""

    def __post_init__(self) -> None:
        checks.choice(self.method, RADIUS_METHODS, "method")
        checks.number(self.tol, "tol", positive=True, optional=True)
        checks.integer(self.max_iter, "max_iter", minimum=1)

    def log_tol(self, probes: ProbeConfig) -> float:
        """The ``illinois`` stopping width in log r (``tol`` or its default for ``probes``)."""
        if self.tol is not None:
            return self.tol
        return math.log(probes.r_max / probes.r_min) / 2**probes.bisect_steps


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
    max_rows: int | None = None,
) -> Float[np.ndarray, "n k"]:
    """Bisection radius along each direction (see the module docstring). Each round is one
    engine call whose paths are ``[v, v + r_1 u_1, ..., v + r_k u_k]``; the result is the
    bracket's geometric midpoint after ``steps`` rounds. ``max_rows``: the engine's rows per
    forward chunk (``None``: its own; the joint probes chunk their points as the isotropic radius
    does, so the engine's memoised prefixes are shared)."""
    n, k, _ = dirs.shape
    lo = torch.full((n, k), math.log(r_min), dtype=torch.float64)
    hi = torch.full((n, k), math.log(r_max), dtype=torch.float64)
    for s in range(steps):
        mid = (lo + hi) / 2
        trial = points[:, None, :] + mid.exp().float()[..., None] * dirs
        paths = torch.cat([points[:, None, :], trial], dim=1)
        kw = {} if max_rows is None else {"max_rows": max_rows}
        c = engine.curves(tokens, paths, desc=f"radius {s + 1}/{steps}", js=False, **kw)
        above = torch.from_numpy(c.kl[:, 1:] >= kl)
        hi = torch.where(above, mid, hi)
        lo = torch.where(above, lo, mid)
    return ((lo + hi) / 2).exp().numpy()


SLOPE_PRIOR = 2.0
"""``d log KL / d log r`` of a smooth KL near ``r = 0`` (KL ~ r^2): the slope of a step from a
bracket with one evaluated end and no earlier point on that side."""
SLOPE_RANGE = (0.5, 10.0)
"""Bounds of a one-sided secant slope (a flat or steep stretch would send the step far off)."""
SPREAD = 0.45
"""Extra trial points of a direction (the slots a path has beyond its point's active directions)
sit at ``+-SPREAD``, ``+-3 SPREAD``, ``+-9 SPREAD``, ... tolerances around its estimate: a pair that
straddles the root closes the bracket to ``2 SPREAD = 0.9`` tolerances in one call."""

HALVING_CALLS = 3
"""A bracket that the last ``HALVING_CALLS`` calls did not halve together is bisected (every
bracket halves at least once in ``HALVING_CALLS + 1`` calls)."""

REFORM = 0.5
"""The call is re-formed on the points that still have an active direction once they are at
most this share of it (the engine then recomputes their prompts' prefix caches: ``T - 1``
positions through the tail's blocks each, about as much as ``T - 1`` rows)."""


@dataclass
class RadiusBracket:
    """What :func:`radius_illinois` ends with: per direction the bracket ``[lo, hi]`` in log r
    (KL(e^lo) < ``kl`` <= KL(e^hi), the search interval's ends taken as below / above without
    being evaluated) and the engine calls made."""

    lo: Float[np.ndarray, "n k"]
    hi: Float[np.ndarray, "n k"]
    calls: int

    @property
    def radius(self) -> Float[np.ndarray, "n k"]:
        """The brackets' geometric midpoints: the quantity :func:`radius` reports."""
        return np.exp((self.lo + self.hi) / 2)


def radius_illinois(
    engine: PerturbationEngine,
    tokens: Int[Tensor, "n pos"],
    points: Float[Tensor, "n d"],
    dirs: Float[Tensor, "n k d"],
    r_min: float,
    r_max: float,
    kl: float,
    tol: float,
    max_iter: int = 30,
) -> RadiusBracket:
    """The radius of :func:`radius` by a bracketing root-finder on
    ``f(x) = log KL(p(v) || p(v + e^x u)) - log kl`` in ``x = log r`` (KL ~ r^2 near 0, so ``f``
    is close to linear in ``x`` and a secant step is nearly exact where it is quadratic).

    Every direction starts from ``[log r_min, log r_max]`` with both ends unevaluated (taken as
    below / above, as bisection takes them) and each engine call evaluates, per direction still
    wider than ``tol``, a proposal inside its bracket:

    - both ends evaluated: regula falsi, with the Illinois modification (an end kept twice in a
      row has its ``f`` halved for the next interpolation);
    - one end evaluated: a secant step from it with the slope of its side's last two points
      (``SLOPE_PRIOR`` = 2 before there are two, clipped to ``SLOPE_RANGE``);
    - neither: the bracket's midpoint;
    - a bracket that the last ``HALVING_CALLS`` (3) calls did not halve together is bisected, so
      every bracket halves within four calls (``max_iter`` bounds the calls).

    Proposals stay at least ``tol / 2`` inside the bracket (half the width when narrower): once
    the estimate is within ``tol / 2`` of the root the next point lands on its other side and
    closes the bracket. The new bracket is the smallest evaluated point at or above ``kl`` and
    the largest point below it (a NaN KL counts as below, as in bisection); a direction stops
    once its bracket is at most ``tol`` wide; the reported radius is the bracket's geometric
    midpoint (``RadiusBracket.radius``), as bisection reports, and ``r_max e^(-w/2)`` for a
    direction below ``kl`` at every evaluated radius.

    Engine calls: one per iteration, each path ``[v, trial points]`` of one point, ``S`` trial
    slots = the most directions any point of the call still has active; a point with fewer
    active directions gives its spare slots to them (``SPREAD`` offsets around the estimate, or
    an equal split of the bracket when bisecting), finished points' slots hold ``v`` itself.
    Calls run on all points, chunked as bisection chunks them (the engine's memoised prefix
    caches are reused) until at most half of them still have an active direction; the call is
    then re-formed on those points (their prompts' prefixes are recomputed once per
    re-forming)."""
    n, k, _ = dirs.shape
    shape = (n, k)
    a = np.full(shape, math.log(r_min))
    b = np.full(shape, math.log(r_max))
    fa, fb = np.full(shape, np.nan), np.full(shape, np.nan)  # f at the ends, Illinois-scaled
    ta, tb = np.full(shape, np.nan), np.full(shape, np.nan)  # f at the ends as evaluated
    pa, pfa = np.full(shape, np.nan), np.full(shape, np.nan)  # the lower end before, and its f
    pb, pfb = np.full(shape, np.nan), np.full(shape, np.nan)
    side = np.zeros(shape, dtype=np.int8)  # the end that moved alone last call: -1 lo, +1 hi
    widths: list[np.ndarray] = []
    batch = np.arange(n)
    per = max(1, engine.cfg.max_rows // (k + 1))  # paths per forward chunk, as bisection's
    spread = SPREAD * tol * np.array([sg * 3.0**e for e in range(k) for sg in (-1, 1)])
    calls = 0
    for it in range(max_iter):
        w = b - a
        act = w > tol * (1 + 1e-9)
        if not act.any():
            break
        live = act.any(axis=1)
        if live[batch].sum() <= REFORM * len(batch):
            batch = np.flatnonzero(live)
        # proposals
        with np.errstate(divide="ignore", invalid="ignore"):
            rf = b - fb * (b - a) / (fb - fa)
            sa = np.clip(
                np.where(np.isfinite(pfa), (ta - pfa) / (a - pa), SLOPE_PRIOR), *SLOPE_RANGE
            )
            sb = np.clip(
                np.where(np.isfinite(pfb), (tb - pfb) / (b - pb), SLOPE_PRIOR), *SLOPE_RANGE
            )
            x = np.where(
                np.isfinite(fa) & np.isfinite(fb),
                rf,
                np.where(np.isfinite(ta), a - ta / sa, b - tb / sb),
            )
        x = np.where(np.isfinite(x), x, (a + b) / 2)
        h = HALVING_CALLS
        bisect = w > widths[it - h] / 2 if it >= h else np.zeros(shape, dtype=bool)
        widths.append(w)
        # slots: slot t of point p goes to its (t mod m_p)-th active direction, offset t // m_p
        actb = act[batch]
        m = actb.sum(axis=1)
        S = int(m.max())
        t = np.arange(S)[None, :]
        mm = np.maximum(m, 1)[:, None]
        j = np.take_along_axis(np.argsort(~actb, axis=1, kind="stable"), t % mm, axis=1)
        o = t // mm
        s = S // mm + (t % mm < S % mm)  # slots of the slot's direction
        valid = np.broadcast_to(m[:, None] > 0, j.shape)
        rows = batch[:, None]
        lo, hi, wd = a[rows, j], b[rows, j], w[rows, j]
        d = np.minimum(tol / 2, wd / 2)
        near = np.clip(x[rows, j] + np.where(s > 1, spread[o], 0.0), lo + d, hi - d)
        X = np.where(bisect[rows, j], lo + wd * (o + 1) / (s + 1), near)
        R = np.where(valid, np.exp(X), 0.0)
        # one engine call
        pts = points[torch.from_numpy(batch)]
        u = dirs[torch.from_numpy(rows), torch.from_numpy(j)]
        trial = pts[:, None, :] + torch.from_numpy(R).float()[..., None] * u
        c = engine.curves(
            tokens[torch.from_numpy(batch)],
            torch.cat([pts[:, None, :], trial], dim=1),
            max_rows=per * (S + 1),
            desc=f"radius {it + 1}",
            js=False,
        )
        calls += 1
        # per direction: the evaluated points, [len(batch), k, S]
        Xd = np.full((len(batch), k, S), np.nan)
        Kd = np.full((len(batch), k, S), np.nan)
        bi = np.broadcast_to(np.arange(len(batch))[:, None], j.shape)
        Xd[bi[valid], j[valid], o[valid]] = X[valid]
        Kd[bi[valid], j[valid], o[valid]] = c.kl[:, 1:][valid]
        with np.errstate(divide="ignore", invalid="ignore"):
            F = np.log(Kd / kl)
        F = np.where(np.isfinite(F), F, np.nan)
        above = Kd >= kl  # NaN: not above, as bisection counts it
        below = np.isfinite(Xd) & ~above
        xh = np.where(above, Xd, np.inf)
        ih = xh.argmin(axis=-1)[..., None]
        new_hi = np.take_along_axis(xh, ih, axis=-1)[..., 0]
        got_hi = np.isfinite(new_hi)
        top = np.where(got_hi, new_hi, b[batch])
        xl = np.where(below & (Xd < top[..., None]), Xd, -np.inf)
        il = xl.argmax(axis=-1)[..., None]
        new_lo = np.take_along_axis(xl, il, axis=-1)[..., 0]
        got_lo = np.isfinite(new_lo)
        f_hi = np.take_along_axis(F, ih, axis=-1)[..., 0]
        f_lo = np.take_along_axis(F, il, axis=-1)[..., 0]
        # Illinois: the end kept for the second call in a row has its f halved
        only_hi, only_lo = got_hi & ~got_lo, got_lo & ~got_hi
        sd = side[batch]
        fa_b = np.where(only_hi & (sd == 1), fa[batch] / 2, fa[batch])
        fb_b = np.where(only_lo & (sd == -1), fb[batch] / 2, fb[batch])
        pa[batch] = np.where(got_lo, a[batch], pa[batch])
        pfa[batch] = np.where(got_lo, ta[batch], pfa[batch])
        pb[batch] = np.where(got_hi, b[batch], pb[batch])
        pfb[batch] = np.where(got_hi, tb[batch], pfb[batch])
        a[batch] = np.where(got_lo, new_lo, a[batch])
        fa[batch] = np.where(got_lo, f_lo, fa_b)
        ta[batch] = np.where(got_lo, f_lo, ta[batch])
        b[batch] = np.where(got_hi, new_hi, b[batch])
        fb[batch] = np.where(got_hi, f_hi, fb_b)
        tb[batch] = np.where(got_hi, f_hi, tb[batch])
        side[batch] = np.where(only_hi, 1, np.where(only_lo, -1, np.where(got_hi & got_lo, 0, sd)))
    return RadiusBracket(lo=a, hi=b, calls=calls)


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


def search_radii(
    engine: PerturbationEngine,
    tokens: Int[Tensor, "n pos"],
    points: Float[Tensor, "n d"],
    dirs: Float[Tensor, "n k d"],
    cfg: ProbeConfig,
    norm: float,
    search: RadiusSearch | None,
    max_rows: int | None = None,
) -> Float[np.ndarray, "n k"]:
    """The radius probe's radii along ``dirs`` (bisection, or ``search``'s root-finder)."""
    args = (engine, tokens, points, dirs, cfg.r_min * norm, cfg.r_max * norm, cfg.radius_kl)
    if search is not None and search.method == "illinois":
        return radius_illinois(*args, search.log_tol(cfg), search.max_iter).radius
    return radius(*args, cfg.bisect_steps, max_rows=max_rows)


def p2_directions(
    points: Float[Tensor, "n d"], near: Float[Tensor, "n d"], fallback: Float[Tensor, "n d"]
) -> tuple[Float[Tensor, "n d"], Float[np.ndarray, " n"]]:
    """The P2 path's unit direction ``(near - v) / |near - v|`` and the distance ``|near - v|``
    (float64); ``fallback`` (a unit vector) where the point is its nearest row (distance 0)."""
    delta = near.double() - points.double()
    dist = delta.norm(dim=-1)
    ok = dist > 0
    u = torch.where(ok[:, None], delta / dist.clamp_min(1e-300)[:, None], fallback.double())
    return u.float(), dist.numpy()


def p2dir_radii(
    engine: PerturbationEngine,
    tokens: Int[Tensor, "n pos"],
    points: Float[Tensor, "n d"],
    near: Float[Tensor, "n d"],
    fallback: Float[Tensor, "n d"],
    cfg: ProbeConfig,
    norm: float,
    search: RadiusSearch | None = None,
) -> tuple[Float[np.ndarray, "n 2"], Float[np.ndarray, " n"]]:
    """The radius probe's radii along ``+u`` and ``-u``, ``u`` the P2 path's direction toward
    ``near`` (``fallback`` where the point is ``near``), and the distance to ``near``. Engine
    calls chunk the points as the isotropic radius does (its memoised prefixes are shared)."""
    u, dist = p2_directions(points, near, fallback)
    per = max(1, engine.cfg.max_rows // (cfg.n_directions + 1))  # the isotropic radius' chunk
    r = search_radii(engine, tokens, points, torch.stack([u, -u], 1), cfg, norm, search, per * 3)
    return r, dist


def p2dir_features(radii: Float[np.ndarray, "n 2"], norm: float) -> dict[str, np.ndarray]:
    """The ``p2dir`` probe's own features from :func:`p2dir_radii`'s radii."""
    lr = np.log(radii / norm)
    return {"p2dir.toward_log": lr[:, 0], "p2dir.away_log": lr[:, 1]}


def derived_features(feats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Features of one point that relate two probes' features, where both ran:
    ``joint.toward_vs_iso`` / ``joint.away_vs_iso`` = ``p2dir.toward_log`` /
    ``p2dir.away_log`` minus ``radius.mean_log`` (also the first of
    :func:`challenge.joint_probes.joint_features`, which adds the other joint probes')."""
    if "p2dir.toward_log" not in feats or "radius.mean_log" not in feats:
        return {}
    iso = feats["radius.mean_log"]
    return {
        "joint.toward_vs_iso": feats["p2dir.toward_log"] - iso,
        "joint.away_vs_iso": feats["p2dir.away_log"] - iso,
    }


def run_probes(
    engine: PerturbationEngine,
    points: Float[Tensor, "n d"],
    slots: Slots,
    public: Float[Tensor, "m d"],
    units: dict[str, float],
    cfg: ProbeConfig,
    search: RadiusSearch | None = None,
    joint: JointProbes | None = None,
    sae=None,
) -> dict[str, np.ndarray]:
    """Every configured probe's features for ``points`` in their slots: ``{probe.feature: [n]}``
    (``search``: the radius probe's root-finder; default bisection, the board's). ``joint``: the
    joint probes run after the configured ones (``sae``: the track's SAE, for ``sae``), and the
    derived ``joint.*`` features of everything run (:func:`joint_features`); without it (or with
    no joint probe) the features are the board's, bit for bit."""
    n = len(points)
    if len(slots.tokens) < n:
        raise ValueError(f"{len(slots.tokens)} slots for {n} points")
    tok = slots.tokens[:n]
    norm = units["write_norm_median"]
    out: dict[str, np.ndarray] = {}
    if "radius" in cfg.probes:
        r = search_radii(engine, tok, points, slots.dirs[:n, : cfg.n_directions], cfg, norm, search)
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
    near = None
    if "p2" in cfg.probes:
        near = public[nearest(points, public)[1]]
        f = path_features(engine, tok, points, near, cfg.p2_steps, "p2")
        out |= {f"p2.{k}": v for k, v in f.items()}
    if "p2dir" in cfg.probes:
        if near is None:
            near = public[nearest(points, public)[1]]
        r, _ = p2dir_radii(engine, tok, points, near, slots.dirs[:n, 0], cfg, norm, search)
        out |= p2dir_features(r, norm)
    out |= derived_features(out)
    if joint is not None and joint.probes:
        from challenge.joint_probes import joint_features, run_joint_probes

        if "p2dir" in cfg.probes and "p2dir" in joint.probes:
            raise ValueError(
                "p2dir runs as a probe of this config; leave it out of the joint probes"
            )
        if near is None:
            near = public[nearest(points, public)[1]]
        out |= run_joint_probes(engine, points, slots, near, units, cfg, joint, search, sae)
        out |= joint_features(out, cfg.radius_kl)
    return out
