"""Training an SAE on activations, its evaluation, and firing frequencies.

TopK: MSE + AuxK (dead latents reconstruct the residual, Gao et al. 2024); ReLU:
MSE + l1 * sum f ||W_dec||. ``evaluate_sae`` reports variance explained, L0, MSE, the fraction
never firing on the evaluation set and the fraction dead by the stored training-set sparsity.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from challenge.errors import ConfigError
from challenge.rng import generator
from challenge.sae.model import SAE, SAEConfig


def geometric_median(x: Float[Tensor, "n d"], iters: int = 50) -> Float[Tensor, " d"]:
    """Weiszfeld iterations from the mean (``iters`` steps, distances clamped at 1e-6)."""
    m = x.mean(0)
    for _ in range(iters):
        w = 1.0 / (x - m).norm(dim=1).clamp_min(1e-6)
        m = (w[:, None] * x).sum(0) / w.sum()
    return m


@torch.no_grad()
def init_tied(sae: SAE, g: torch.Generator, enc_scale: float = 1.0) -> None:
    """Decoder rows ~ N(0, I) normalised to unit norm (drawn from ``g``), ``W_enc = enc_scale
    * W_dec^T``; biases untouched."""
    w = torch.randn(sae.n_latents, sae.d_in, generator=g)
    sae.W_dec.copy_(w / w.norm(dim=1, keepdim=True))
    sae.W_enc.copy_(sae.W_dec.T * enc_scale)


@torch.no_grad()
def firing_log10(sae: SAE, acts: Float[Tensor, "n d_in"], batch: int = 1024) -> Tensor:
    """SAELens' stored sparsity of ``acts``: log10(fraction of rows where a latent fires + 1e-10)."""
    count = torch.zeros(sae.n_latents, dtype=torch.float64)
    for i in range(0, len(acts), batch):
        count += (sae.encode(acts[i : i + batch]) > 0).sum(0).double()
    return torch.log10(count / max(len(acts), 1) + 1e-10).float()


@torch.enable_grad()  # callers (e.g. a generator's fit under no_grad) may have grad disabled
def train_sae(
    acts: Float[Tensor, "n d_in"], cfg: SAEConfig, progress: bool = True
) -> tuple[SAE, dict[str, Any]]:
    """Train an SAE on ``acts`` (float32, CPU is fine: minutes for 4096 latents).

    Trains on activations scaled by one scalar s (RMS distance to the mean / sqrt(d)) and folds
    s back so that the SAE maps raw activations, with unit-norm decoder rows and latent values in
    raw units. Decoder rows are renormalised after every step.
    Returns the SAE (its ``log_sparsity`` measured on ``acts``) and training stats."""
    if acts.ndim != 2 or len(acts) < 2:
        raise ConfigError(f"need activations [n >= 2, d], got {tuple(acts.shape)}", field="acts")
    t0 = time.perf_counter()
    g = generator(cfg.seed, "sae.train")
    x_all = acts.detach().float().cpu()
    n, d = x_all.shape
    mu = x_all.mean(0)
    s = float(((x_all - mu).pow(2).sum(1).mean() / d).sqrt())
    xs = x_all / s
    var_total = float((xs - xs.mean(0)).pow(2).sum(1).mean())
    sae = SAE(d, cfg.n_latents, cfg.kind, cfg.k)
    init_tied(sae, g, 1.0 if cfg.kind == "topk" else 0.1)
    with torch.no_grad():
        sae.b_dec.copy_(geometric_median(xs))
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
    warm = max(1, cfg.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda i: (
            min(1.0, (i + 1) / warm)
            * (1.0 if i < 0.8 * cfg.steps else max(0.0, (cfg.steps - i) / (0.2 * cfg.steps)))
        ),
    )
    since_fired = torch.zeros(cfg.n_latents)
    history = []
    bar = tqdm(range(cfg.steps), desc=f"train SAE {cfg.name()}", disable=not progress)
    for step in bar:
        xb = xs[torch.randint(n, (cfg.batch,), generator=g)]
        pre = sae.pre_acts(xb)
        f = sae.activate(pre)
        rec = sae.decode(f)
        err = rec - xb
        mse = err.pow(2).sum(1).mean() / var_total
        loss = mse
        fired = (f > 0).any(0)
        since_fired = torch.where(fired, torch.zeros_like(since_fired), since_fired + cfg.batch)
        aux = torch.zeros(())
        if cfg.kind == "relu":
            loss = loss + cfg.l1 * (f * sae.W_dec.norm(dim=1)).sum(1).mean()
        elif cfg.aux_k > 0:
            dead = since_fired >= cfg.dead_after
            n_dead = int(dead.sum())
            if n_dead > 0:
                kk = min(cfg.aux_k, n_dead)
                masked = torch.where(dead, pre, torch.full_like(pre, -torch.inf))
                top = masked.topk(kk, dim=-1)
                fa = torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))
                aux_rec = fa @ sae.W_dec
                target = (xb - rec).detach()
                aux = (aux_rec - target).pow(2).sum(1).mean() / target.pow(2).sum(
                    1
                ).mean().clamp_min(1e-8)
                loss = loss + cfg.aux_coef * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        sae.normalise_decoder()
        if step % 50 == 0 or step == cfg.steps - 1:
            l0 = float((f > 0).float().sum(1).mean())
            history.append(
                {"step": step, "nmse": float(mse.detach()), "l0": l0, "aux": float(aux.detach())}
            )
            bar.set_postfix(nmse=f"{history[-1]['nmse']:.4f}", l0=f"{l0:.1f}")
    # fold the input scale back: f_raw = s f, so b_enc, b_dec scale by s; W_enc, W_dec stay
    with torch.no_grad():
        sae.b_enc.mul_(s)
        sae.b_dec.mul_(s)
        sae.log_sparsity.copy_(firing_log10(sae, x_all))
    stats = {
        "train_seconds": round(time.perf_counter() - t0, 1),
        "input_scale": s,
        "n_train": n,
        "history": history,
        "train_eval": evaluate_sae(sae, x_all),
    }
    sae.meta = {"plateau": {"config": asdict(cfg), "stats": stats}}
    return sae.eval(), stats


@torch.no_grad()
def evaluate_sae(sae: SAE, acts: Float[Tensor, "n d_in"], batch: int = 1024) -> dict[str, float]:
    """Variance explained (1 - SSE / total sum of squares about the mean of ``acts``), L0 (mean
    active latents per row), MSE per row (summed over dims), the fraction of latents that never
    fire on ``acts`` (``dead_fraction``) and the fraction dead by the SAE's stored training-set
    sparsity (``dead_fraction_train``: log10 frequency at the -10 floor)."""
    x = acts.float()
    sse, l0, fired = 0.0, 0.0, torch.zeros(sae.n_latents, dtype=torch.bool)
    for i in range(0, len(x), batch):
        xb = x[i : i + batch]
        f = sae.encode(xb)
        sse += float((sae.decode(f) - xb).pow(2).sum())
        l0 += float((f > 0).sum())
        fired |= (f > 0).any(0)
    sst = float((x - x.mean(0)).pow(2).sum())
    return {
        "variance_explained": 1.0 - sse / sst,
        "l0": l0 / len(x),
        "mse": sse / len(x),
        "dead_fraction": float((~fired).float().mean()),
        "dead_fraction_train": float(sae.dead_mask().float().mean()),
        "n": len(x),
    }
