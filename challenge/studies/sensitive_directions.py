"""Directions at a track's write point to which the output is most sensitive (see
docs/feature-finding.md), all through the engine's differentiable ``forward``:

- **Jacobian, global**: the top eigenvectors of ``M = mean_p J_p^T J_p`` over prompts,
  ``J_p = d read / d x`` at the prompt's real activation ``x_p`` (``metric="l2"``), or of the
  Fisher pull-back ``mean_p J_p^T F_p J_p`` with ``J_p`` the Jacobian of the next-token logits
  (``metric="fisher"``: the second-order term of the KL). Randomised subspace iteration with
  ``torch.func.jvp`` for ``J V`` and ``torch.func.vjp`` for ``J^T (.)``; no ``J`` is ever
  formed. :func:`full_jacobian` (one forward of ``d`` rows + one backward) is the reference.
- **Jacobian, local**: per base activation, the top eigenvector of its own ``J^T J`` (or
  ``J^T F J``) by block power iteration.
- **Optimised**: projected gradient ascent over unit ``u`` of ``||read(x + r u) - read(x)||``
  (``objective="l2"``) or ``KL(p(x) || p(x + r u))`` (``"kl"``) at a fixed small ``r``, with
  restarts; per base, or one ``u`` shared by all prompts (``shared=True``).

Random starts come from the run seed's ``feature_finding.start`` stream (``challenge.rng``).
"""

from __future__ import annotations

from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from challenge.engine import PerturbationEngine
from challenge.errors import ConfigError
from challenge.rng import generator

Metric = Literal["l2", "fisher"]
START = "feature_finding.start"


def unit(v: Float[Tensor, "... d"]) -> Float[Tensor, "... d"]:
    """Rows scaled to norm 1 (zero rows stay zero)."""
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


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
    Q = torch.linalg.qr(torch.randn(d, b, generator=generator(seed, START), dtype=torch.float64))[0]

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
    return unit((Q @ evecs[:, order]).T.float()), evals[order].float()


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
    g = generator(seed, START)
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
        U[sl], S[sl] = unit(top.float()), evals[:, -1].clamp_min(0).sqrt().float()
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
    return unit(u + eta * unit(tang))


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
    g = generator(seed, START)
    chunks = [slice(i, i + batch) for i in range(0, n, batch)]
    with torch.no_grad():
        base = [engine.forward(tokens[sl], acts[sl, None, :]) for sl in chunks]
        base_read = torch.cat([b["read"][:, 0] for b in base]).float()
        base_logp = torch.cat([torch.log_softmax(b["logits"][:, 0].float(), -1) for b in base])
    if shared:
        u = unit(torch.randn(restarts, d, generator=g))
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
        u = unit(torch.randn(m, restarts, d, generator=g))
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
