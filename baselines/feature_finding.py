"""Feature finding by sensitivity: the directions at a track's write point to which the output
is most sensitive, compared with SAE decoder directions, PCA and random baselines (P3).

Methods (all through the engine's differentiable ``forward``):

- **Jacobian, global**: the top eigenvectors of ``M = mean_p J_p^T J_p`` over public prompts,
  ``J_p = d read / d x`` at the prompt's real activation ``x_p`` (``metric="l2"``), or of the
  Fisher pull-back ``mean_p J_p^T F_p J_p`` with ``J_p`` the Jacobian of the next-token logits
  (``metric="fisher"``: the second-order term of the KL). Randomised subspace iteration with
  ``torch.func.jvp`` for ``J V`` and ``torch.func.vjp`` for ``J^T (.)``; no ``J`` is ever
  formed. ``full_jacobian`` (one forward of ``d`` rows + one backward) is the reference.
- **Jacobian, local**: per base activation, the top eigenvector of its own ``J^T J`` (or
  ``J^T F J``) by block power iteration.
- **Optimised**: projected gradient ascent over unit ``u`` of ``||read(x + r u) - read(x)||``
  (``objective="l2"``) or ``KL(p(x) || p(x + r u))`` (``"kl"``) at a fixed small ``r``, with
  restarts; per base, or one ``u`` shared by all public prompts (``shared=True``).

``run_feature_finding`` probes every direction set with ``challenge.protocols.p3_probe`` from the
same context bases that ``run_p3`` uses, and measures how well each sensitive direction aligns
with the SAE's decoder rows (max |cosine| over all rows, against random directions).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from challenge.directions import ActivationStats
from challenge.engine import PerturbationEngine
from challenge.errors import ConfigError

Metric = Literal["l2", "fisher"]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _unit(v: Tensor) -> Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _random_signs(n: int, seed: int) -> Tensor:
    return torch.randint(0, 2, (n, 1), generator=_gen(seed)).float() * 2 - 1


# ---------------------------------------------------------------------------------- Jacobians
def full_jacobian(
    engine: PerturbationEngine, tokens: Int[Tensor, " pos"], x: Float[Tensor, " d_model"]
) -> Float[Tensor, "d_read d_model"]:
    """``d read / d x`` at one point: ``d`` copies of ``x`` in one forward, row ``i``'s gradient
    picking output coordinate ``i`` (the reference for the matrix-free products)."""
    d = x.shape[-1]
    with torch.enable_grad():
        pts = x.detach().float().reshape(1, 1, d).expand(1, d, d).clone().requires_grad_(True)
        read = engine.forward(tokens.reshape(1, -1), pts)["read"][0]  # [d rows, d_read]
        if read.shape[0] != read.shape[1]:
            raise ConfigError("full_jacobian needs d_read == d_model", field="read_hook")
        (g,) = torch.autograd.grad(read.diagonal().sum(), pts)
    return g[0]


def jtj_matvec(
    engine: PerturbationEngine,
    tokens: Int[Tensor, "batch pos"],
    x: Float[Tensor, "batch d_model"],
    V: Float[Tensor, "batch cols d_model"],
    metric: Metric = "l2",
) -> tuple[Tensor, Tensor]:
    """Products with the sensitivity matrix at each prompt's point, for ``cols`` vectors each.

    ``metric="l2"``: ``(J V, J^T J V)`` with ``J = d read / d x``, since
    ``||read(x + e v) - read(x)||^2 = e^2 v^T J^T J v + O(e^3)``. ``metric="fisher"``:
    ``(J_z V, J_z^T F J_z V)`` with ``J_z`` the Jacobian of the next-token logits and
    ``F = diag(p) - p p^T`` the softmax's Fisher information at x, since
    ``KL(p(x) || p(x + e v)) = e^2 / 2 v^T J_z^T F J_z v + O(e^3)``.
    One JVP and one VJP on ``cols`` rows per prompt; returns ``[B, cols, out]``, ``[B, cols, d]``."""
    from torch.func import jvp, vjp

    if metric not in ("l2", "fisher"):
        raise ConfigError(f"metric must be l2 or fisher, not {metric!r}", field="metric")
    pts = x.detach().float()[:, None, :].expand(-1, V.shape[1], -1).contiguous()
    key = "read" if metric == "l2" else "logits"

    def out(p):
        return engine.forward(tokens, p)[key].float()

    with torch.enable_grad():
        z0, jv = jvp(out, (pts,), (V.float(),))
        jv = jv.detach()
        cot = jv
        if metric == "fisher":
            p = torch.softmax(z0.detach(), dim=-1)
            cot = p * jv - p * (p * jv).sum(-1, keepdim=True)
        _, pull = vjp(out, pts)
        (jtjv,) = pull(cot)
    return jv, jtjv.detach()


def global_jacobian_directions(
    engine: PerturbationEngine,
    tokens: Int[Tensor, "n pos"],
    acts: Float[Tensor, "n d_model"],
    k: int = 4,
    oversample: int = 4,
    iters: int = 2,
    seed: int = 0,
    batch: int = 16,
    metric: Metric = "l2",
    progress: bool = True,
) -> tuple[Float[Tensor, "k d_model"], Float[Tensor, " k"]]:
    """Top-``k`` eigenvectors (rows) and eigenvalues of ``M = mean_p J_p^T J_p`` (or of the
    Fisher pull-back, see ``jtj_matvec``) by randomised subspace iteration with
    ``k + oversample`` columns and a final Rayleigh-Ritz step."""
    n, d = acts.shape
    b = k + oversample
    Q = torch.linalg.qr(torch.randn(d, b, generator=_gen(seed), dtype=torch.float64))[0]

    def apply_m(Q):
        out = torch.zeros(d, Q.shape[1], dtype=torch.float64)
        for i in range(0, n, batch):
            sl = slice(i, i + batch)
            V = Q.T.float()[None].expand(len(acts[sl]), -1, -1).contiguous()
            _, y = jtj_matvec(engine, tokens[sl], acts[sl], V, metric)
            out += y.double().sum(0).T
        return out / n

    for _ in tqdm(range(iters), desc=f"global Jacobian ({metric})", disable=not progress):
        Q = torch.linalg.qr(apply_m(Q))[0]
    T = Q.T @ apply_m(Q)
    evals, evecs = torch.linalg.eigh((T + T.T) / 2)
    order = torch.argsort(evals, descending=True)[:k]
    return _unit((Q @ evecs[:, order]).T.float()), evals[order].float()


def local_jacobian_directions(
    engine: PerturbationEngine,
    tokens: Int[Tensor, "n pos"],
    acts: Float[Tensor, "n d_model"],
    iters: int = 3,
    block: int = 3,
    seed: int = 0,
    batch: int = 16,
    metric: Metric = "l2",
    progress: bool = True,
) -> tuple[Float[Tensor, "n d_model"], Float[Tensor, " n"]]:
    """Per base, the top eigenvector of its own ``J^T J`` (or ``J_z^T F J_z``) and the square
    root of its eigenvalue (block power iteration with ``block`` columns, then Rayleigh-Ritz)."""
    n, d = acts.shape
    g = _gen(seed)
    U, S = torch.empty(n, d), torch.empty(n)
    for i in tqdm(range(0, n, batch), desc=f"local Jacobian ({metric})", disable=not progress):
        sl = slice(i, i + batch)
        m = len(acts[sl])
        V = torch.linalg.qr(torch.randn(m, d, block, generator=g, dtype=torch.float64))[0]
        for _ in range(iters):
            _, y = jtj_matvec(engine, tokens[sl], acts[sl], V.transpose(1, 2).float(), metric)
            V = torch.linalg.qr(y.double().transpose(1, 2))[0]
        _, y = jtj_matvec(engine, tokens[sl], acts[sl], V.transpose(1, 2).float(), metric)
        T = V.transpose(1, 2) @ y.double().transpose(1, 2)  # [m, block, block]
        evals, evecs = torch.linalg.eigh((T + T.transpose(1, 2)) / 2)
        top = (V @ evecs[:, :, -1:]).squeeze(-1)
        U[sl], S[sl] = _unit(top.float()), evals[:, -1].clamp_min(0).sqrt().float()
    return U, S


# ---------------------------------------------------------------------------------- optimised
def _objective(engine, tokens, x, u, r, base_read, base_logp, objective):
    """Read-out change at ``x + r u`` for ``u [B, R, d]``: L2 at the read hook or KL(p0 || p)."""
    out = engine.forward(tokens, x[:, None, :] + r * u)
    if objective == "l2":
        return (out["read"] - base_read[:, None, :]).norm(dim=-1)  # [B, R]
    logp = torch.log_softmax(out["logits"].float(), dim=-1)
    return (base_logp.exp()[:, None, :] * (base_logp[:, None, :] - logp)).sum(-1)


def _step(u: Tensor, grad: Tensor, lr: float, step: int, steps: int) -> Tensor:
    """Riemannian step on the sphere: the tangent part of the gradient, normalised, decaying."""
    tang = grad - (grad * u).sum(-1, keepdim=True) * u
    eta = lr * (1.0 - step / max(steps, 1)) + 0.02
    return _unit(u + eta * _unit(tang))


def optimised_directions(
    engine: PerturbationEngine,
    tokens: Int[Tensor, "n pos"],
    acts: Float[Tensor, "n d_model"],
    radius: float,
    objective: Literal["l2", "kl"] = "l2",
    steps: int = 12,
    restarts: int = 2,
    lr: float = 0.3,
    shared: bool = False,
    seed: int = 0,
    batch: int = 16,
    progress: bool = True,
) -> tuple[Float[Tensor, "n d_model"], Float[Tensor, " n"]]:
    """Unit ``u`` maximising the output change at ``x + radius u`` by projected (normalised)
    gradient ascent on the sphere from ``restarts`` random starts; the best start is kept.
    ``shared``: one ``u`` for all prompts maximising the mean change, returned per prompt.
    Returns the directions and the objective value they reach."""
    if objective not in ("l2", "kl"):
        raise ConfigError(f"objective must be l2 or kl, not {objective!r}", field="objective")
    n, d = acts.shape
    g = _gen(seed)
    chunks = [slice(i, i + batch) for i in range(0, n, batch)]
    with torch.no_grad():
        base = [engine.forward(tokens[sl], acts[sl, None, :]) for sl in chunks]
        base_read = torch.cat([b["read"][:, 0] for b in base]).float()
        base_logp = torch.cat([torch.log_softmax(b["logits"][:, 0].float(), -1) for b in base])
    if shared:
        u = _unit(torch.randn(restarts, d, generator=g))
        val = torch.zeros(restarts)
        for step in tqdm(
            range(steps + 1), desc=f"optimise shared ({objective})", disable=not progress
        ):
            grad, val = torch.zeros(restarts, d), torch.zeros(restarts)
            for sl in chunks:
                m = len(acts[sl])
                with torch.enable_grad():
                    uu = u.clone().requires_grad_(True)
                    obj = _objective(
                        engine,
                        tokens[sl],
                        acts[sl],
                        uu[None].expand(m, -1, -1),
                        radius,
                        base_read[sl],
                        base_logp[sl],
                        objective,
                    )
                    if step < steps:
                        (gr,) = torch.autograd.grad(obj.sum(), uu)
                        grad += gr
                val += obj.detach().sum(0)
            if step < steps:
                u = _step(u, grad, lr, step, steps)
        best = int(val.argmax())
        return u[best][None].expand(n, -1).clone(), (val[best] / n).expand(n).clone()
    U, V = torch.empty(n, d), torch.empty(n)
    for sl in tqdm(chunks, desc=f"optimise ({objective})", disable=not progress):
        m = len(acts[sl])
        u = _unit(torch.randn(m, restarts, d, generator=g))
        for step in range(steps + 1):
            with torch.enable_grad():
                uu = u.clone().requires_grad_(True)
                obj = _objective(
                    engine,
                    tokens[sl],
                    acts[sl],
                    uu,
                    radius,
                    base_read[sl],
                    base_logp[sl],
                    objective,
                )
                if step == steps:
                    break
                (gr,) = torch.autograd.grad(obj.sum(), uu)
            u = _step(u, gr, lr, step, steps)
        obj = obj.detach()
        best = obj.argmax(1)
        U[sl] = u[torch.arange(m), best]
        V[sl] = obj[torch.arange(m), best]
    return U, V


# ---------------------------------------------------------------------------------- baselines
def pca_directions(acts: Float[Tensor, "n d_model"], k: int) -> tuple[Tensor, Tensor]:
    """Top-``k`` principal components (rows) and their variances."""
    x = acts.double() - acts.double().mean(0)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    return vh[:k].float(), (s[:k] ** 2 / (len(x) - 1)).float()


def cycle(dirs: Float[Tensor, "k d_model"], n: int, seed: int) -> Float[Tensor, "n d_model"]:
    """Base ``i`` gets direction ``i mod k`` with a random sign (the sign matters off-linearity)."""
    return dirs[torch.arange(n) % len(dirs)] * _random_signs(n, seed)


def max_abs_cosine(dirs: Float[Tensor, "n d"], W_dec: Float[Tensor, "m d"]) -> Tensor:
    """Per direction: ``[max over decoder rows of |cosine|, the row reaching it]``."""
    c = _unit(dirs.float()) @ _unit(W_dec.detach().float()).T
    v, i = c.abs().max(1)
    return torch.stack([v, i.float()], 1)


# ---------------------------------------------------------------------------------- the study
@dataclass
class FeatureFindingConfig:
    """What ``plateau find-features`` runs (see docs/feature-finding.md)."""

    n_base: int = 64  # context bases for the P3 curves (the same rows as run_p3 with this seed)
    units: Literal["gpt2", "scale_free"] = "scale_free"
    seed: int = 0
    n_jac: int = 16  # public prompts for the global Jacobian / shared optimisation
    k: int = 4  # global directions kept (base i gets direction i mod k)
    oversample: int = 4
    iters: int = 2  # subspace iterations (global)
    local_iters: int = 3  # block power iterations (local)
    opt_radius: float = 0.1  # x the track's median write-point norm
    opt_steps: int = 12
    opt_restarts: int = 2
    metrics: tuple[str, ...] = ("l2", "fisher")  # Jacobian sensitivity: read-out L2, KL (Fisher)
    objectives: tuple[str, ...] = ("l2", "kl")  # optimised directions
    kl_threshold: float = 0.1
    n_random: int = 1000  # random directions for the max-cosine baseline


def sensitivity_summary(curves, lengths: Tensor, kl_threshold: float) -> dict:
    """Length at which the median KL first reaches the threshold; median KL / L2 at fractions of
    the longest length; fraction of bases whose top-1 token changed at the longest length."""
    med_kl = np.median(curves.kl, 0)
    hit = np.nonzero(med_kl >= kl_threshold)[0]
    L = lengths.numpy()
    at = {f"{q:g}": int(np.argmin(np.abs(L - q * L[-1]))) for q in (0.1, 0.25, 0.5)}
    return {
        "length_to_kl_threshold": float(L[hit[0]]) if len(hit) else None,
        "length_to_kl_threshold_rel": float(L[hit[0]] / L[-1]) if len(hit) else None,
        "median_kl_at": {q: float(med_kl[i]) for q, i in at.items()},
        "median_l2_at": {q: float(np.median(curves.l2[:, i])) for q, i in at.items()},
        "top1_changed_at_max": float(curves.top1_changed[:, -1].mean()),
        "median_kl": med_kl.tolist(),
        "median_l2": np.median(curves.l2, 0).tolist(),
    }


def run_feature_finding(
    track, lm, sae, cfg: FeatureFindingConfig, progress: bool = True
) -> tuple[dict, dict[str, np.ndarray]]:
    """Find sensitive directions, probe them and the baselines with P3, and measure alignment."""
    from challenge.protocols import P3Config, _sample, p3_directions, p3_lengths, p3_probe
    from challenge.sae import describe, sae_direction_sets

    t0 = time.perf_counter()
    eng = track.engine(lm, progress=False)
    ctx_t, ctx_a = track.tokens("context"), track.acts("context")
    idx = _sample(len(ctx_a), cfg.n_base, cfg.seed)
    bt, ba = ctx_t[idx], ctx_a[idx]
    n = len(idx)
    pub_t, pub_a = track.tokens("public"), track.acts("public")
    jidx = _sample(len(pub_a), cfg.n_jac, cfg.seed + 1)
    jt, ja = pub_t[jidx], pub_a[jidx]
    radius = cfg.opt_radius * track.units["write_norm_median"]
    timings, found, extra, dirs = {}, {}, {}, {}
    s = cfg.seed + 77  # signs of shared directions, per base

    def timed(name, fn):
        t = time.perf_counter()
        r = fn()
        timings[name] = round(time.perf_counter() - t, 1)
        return r

    for m in cfg.metrics:
        U, evals = timed(
            f"jacobian_{m}_global",
            lambda m=m: global_jacobian_directions(
                eng, jt, ja, cfg.k, cfg.oversample, cfg.iters, cfg.seed, metric=m, progress=progress
            ),
        )
        Ul, Sl = timed(
            f"jacobian_{m}_local",
            lambda m=m: local_jacobian_directions(
                eng, bt, ba, cfg.local_iters, seed=cfg.seed, metric=m, progress=progress
            ),
        )
        found[f"jacobian_{m}_global"], found[f"jacobian_{m}_local"] = U, Ul
        extra[f"jacobian_{m}_global_eigenvalues"] = evals.tolist()
        extra[f"jacobian_{m}_local_sqrt_eigenvalue"] = {
            "median": float(Sl.median()),
            "min": float(Sl.min()),
            "max": float(Sl.max()),
        }
        dirs[f"jacobian_{m}_global_top1"] = cycle(U[:1], n, s)
        dirs[f"jacobian_{m}_global_top{cfg.k}"] = cycle(U, n, s + 1)
        dirs[f"jacobian_{m}_local"] = Ul * _random_signs(n, s + 2)
    for obj in cfg.objectives:
        Uo, vo = timed(
            f"optimised_{obj}",
            lambda obj=obj: optimised_directions(
                eng,
                bt,
                ba,
                radius,
                obj,
                cfg.opt_steps,
                cfg.opt_restarts,
                seed=cfg.seed,
                progress=progress,
            ),
        )
        Ug, vg = timed(
            f"optimised_{obj}_global",
            lambda obj=obj: optimised_directions(
                eng,
                jt,
                ja,
                radius,
                obj,
                cfg.opt_steps,
                cfg.opt_restarts,
                shared=True,
                seed=cfg.seed,
                progress=progress,
            ),
        )
        found[f"optimised_{obj}"], found[f"optimised_{obj}_global"] = Uo, Ug[:1]
        extra[f"optimised_{obj}_objective_median"] = float(vo.median())
        extra[f"optimised_{obj}_global_objective_mean"] = float(vg[0])
        dirs[f"optimised_{obj}"] = Uo
        dirs[f"optimised_{obj}_global"] = cycle(Ug[:1], n, s + 3)
    pca, pvar = pca_directions(pub_a, cfg.k)
    dirs[f"pca_top{cfg.k}"] = cycle(pca, n, s + 4)
    if sae is not None:
        dirs |= sae_direction_sets(sae, track, n_base=cfg.n_base, seed=cfg.seed)
    stats = ActivationStats.fit(pub_a)
    dirs |= p3_directions(("isotropic", "cov_mixture", "real_mixture"), pub_a, stats, n, cfg.seed)
    lengths = p3_lengths(P3Config(units=cfg.units), track.units)
    curves, _ = timed("p3", lambda: p3_probe(eng, bt, ba, dirs, lengths, cfg.kl_threshold))
    summary = {k: sensitivity_summary(c, lengths, cfg.kl_threshold) for k, c in curves.items()}

    # ---- alignment with the SAE's decoder rows
    align = {}
    if sae is not None:
        W = sae.W_dec.detach()
        dead = sae.dead_mask()
        rnd = _unit(torch.randn(cfg.n_random, W.shape[1], generator=_gen(cfg.seed + 5)))
        cov_rnd = _unit(
            p3_directions(("cov_mixture",), pub_a, stats, cfg.n_random, cfg.seed + 6)["cov_mixture"]
        )
        sets = {**found, "pca": pca, "random_isotropic": rnd, "random_cov_mixture": cov_rnd}
        for name, D in sets.items():
            mc = max_abs_cosine(D, W)
            best = mc[:, 1].long()
            align[name] = {
                "n": len(D),
                "max_cos_median": float(mc[:, 0].median()),
                "max_cos_mean": float(mc[:, 0].mean()),
                "max_cos_max": float(mc[:, 0].max()),
                "best_latent_dead_fraction": float(dead[best].float().mean()),
            }
        # how much of each global top-k sensitive subspace the decoder rows see (random: k / d)
        for m in cfg.metrics:
            proj = (_unit(W.float()) @ found[f"jacobian_{m}_global"].T).pow(2).sum(1)
            align[f"decoder_energy_in_jacobian_{m}_top{cfg.k}"] = {
                "median": float(proj.median()),
                "max": float(proj.max()),
                "random_expectation": cfg.k / W.shape[1],
                "top_latents": torch.topk(proj, 5).indices.tolist(),
            }
    agree = {}
    for m in cfg.metrics:
        U, Ul = found[f"jacobian_{m}_global"], found[f"jacobian_{m}_local"]
        agree[f"{m}: local vs global top-1, |cos| median"] = float((Ul @ U[0]).abs().median())
        agree[f"{m}: local in global top-{cfg.k}, energy median"] = float(
            (Ul @ U.T).pow(2).sum(1).median()
        )
    if set(cfg.metrics) >= {"l2", "fisher"}:
        agree["global top-1 l2 vs fisher, |cos|"] = float(
            (found["jacobian_l2_global"][0] @ found["jacobian_fisher_global"][0]).abs()
        )
        agree["local l2 vs fisher, |cos| median"] = float(
            (found["jacobian_l2_local"] * found["jacobian_fisher_local"]).sum(1).abs().median()
        )
    for obj, m in (("l2", "l2"), ("kl", "fisher")):
        if obj in cfg.objectives and m in cfg.metrics:
            agree[f"optimised {obj} vs local Jacobian {m}, |cos| median"] = float(
                (found[f"optimised_{obj}"] * found[f"jacobian_{m}_local"]).sum(1).abs().median()
            )
    agree["random pair, |cos| expected"] = float(np.sqrt(2 / (np.pi * pub_a.shape[1])))
    doc = {
        "study": "feature_finding",
        "config": asdict(cfg),
        "track": {"id": track.spec.track_id, "version": track.spec.version, "units": track.units},
        "sae": describe(sae) if sae is not None else None,
        "lengths": lengths.tolist(),
        "opt_radius_abs": radius,
        "sensitivity": summary,
        "alignment": align,
        "agreement": agree,
        "pca_variance": pvar.tolist(),
        "found": extra,
        "timings_s": timings | {"total": round(time.perf_counter() - t0, 1)},
        "n_base": n,
    }
    arrays = {"lengths": lengths.numpy(), "pca": pca.numpy()}
    for name, c in curves.items():
        arrays[f"{name}_kl"], arrays[f"{name}_l2"] = c.kl, c.l2
    for name, D in found.items():
        arrays[f"dir_{name}"] = D.numpy()
    return doc, arrays


# ---------------------------------------------------------------------------------- reporting
GROUPS = {
    "sensitive (found)": ("jacobian", "optimised"),
    "SAE": ("sae_",),
    "baselines": ("pca", "isotropic", "cov_mixture", "real_mixture"),
}


def table_markdown(doc: dict) -> str:
    """The sensitivity table (one row per direction kind) and the alignment table."""
    sens, align = doc["sensitivity"], doc["alignment"]
    L = doc["lengths"][-1]
    rows = sorted(
        sens.items(),
        key=lambda kv: (
            kv[1]["length_to_kl_threshold"] or np.inf,
            -kv[1]["median_kl_at"]["0.25"],
        ),
    )
    out = [
        f"| direction | length to median KL >= {doc['config']['kl_threshold']:g} (/ max length {L:.1f}) "
        "| median KL at 0.1 / 0.25 / 0.5 x max | median L2 at 0.25 x max | top-1 changed at max |",
        "|---|---|---|---|---|",
    ]
    for name, s in rows:
        lt = s["length_to_kl_threshold_rel"]
        kl = s["median_kl_at"]
        out.append(
            f"| {name} | {'never' if lt is None else f'{lt:.3f}'} | "
            f"{kl['0.1']:.3g} / {kl['0.25']:.3g} / {kl['0.5']:.3g} | {s['median_l2_at']['0.25']:.1f} | "
            f"{s['top1_changed_at_max']:.2f} |"
        )
    if align:
        out += [
            "",
            "| direction set | n | max abs cos with a decoder row: median | mean | max | best row dead |",
            "|---|---|---|---|---|---|",
        ]
        for name, a in align.items():
            if "max_cos_median" not in a:
                continue
            out.append(
                f"| {name} | {a['n']} | {a['max_cos_median']:.3f} | {a['max_cos_mean']:.3f} | "
                f"{a['max_cos_max']:.3f} | {a['best_latent_dead_fraction']:.2f} |"
            )
    return "\n".join(out) + "\n"


def plot_feature_finding(doc: dict, arrays: dict, path) -> Path:
    """Median KL (log) and L2 along each direction kind, one colour family per group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from challenge.plots import save_figure

    L = arrays["lengths"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    cmaps = {"sensitive (found)": plt.cm.Reds, "SAE": plt.cm.Greens, "baselines": plt.cm.Blues}
    names = list(doc["sensitivity"])
    for group, prefixes in GROUPS.items():
        members = [m for m in names if m.startswith(prefixes)]
        for j, m in enumerate(members):
            col = cmaps[group](0.4 + 0.55 * j / max(1, len(members) - 1))
            for ax, key in zip(axes, ("kl", "l2"), strict=True):
                ax.plot(L, np.median(arrays[f"{m}_{key}"], 0), color=col, label=m, lw=1.5)
    axes[0].set_yscale("log")
    axes[0].axhline(doc["config"]["kl_threshold"], color="k", ls=":", lw=0.8)
    axes[0].set_ylabel("median KL(original || perturbed)")
    axes[1].set_ylabel("median L2 at read-out")
    for ax in axes:
        ax.set_xlabel("perturbation length")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, ncol=2)
    fig.suptitle(
        f"Sensitive vs SAE vs random directions on {doc['track']['id']} "
        f"(P3, {doc['config']['units']} units, {doc['n_base']} bases)",
        fontsize=10,
    )
    return save_figure(fig, path, dpi=110)
