"""Training one MLP's dictionary pair:

    loss = FVU(x_hat, x) + FVU(y_hat, y) + lambda * mean_tokens( sum |J_active| / k )

where ``J_active`` is the ``k x k`` Jacobian of output codes w.r.t. input codes through the MLP
(:func:`challenge.interactions.jacobian.active_jacobian`). ``lambda = 0`` gives plain TopK SAE
pairs.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from challenge.interactions.config import InteractionsConfig
from challenge.interactions.dictionaries import measure_firing, new_dictionary
from challenge.interactions.jacobian import MLPWeights, active_jacobian, jacobian_penalty
from challenge.interactions.pairs import LayerPair
from challenge.rng import generator


def layer_scales(model, L: int, x: torch.Tensor) -> tuple[float, float]:
    """Scalars making E||x/s_x||^2 = E||y/s_y||^2 = d_model."""
    d = x.shape[1]
    s_x = math.sqrt(float(x.pow(2).sum(-1).mean()) / d)
    y = MLPWeights.from_model(model, L, s_x=1.0, s_y=1.0)(x[:4096])
    s_y = math.sqrt(float(y.pow(2).sum(-1).mean()) / d)
    return s_x, s_y


def fvu(x_hat: torch.Tensor, x: torch.Tensor, var: float) -> torch.Tensor:
    """Fraction of variance unexplained, ``var`` the total variance of ``x``."""
    return (x_hat - x).pow(2).sum(-1).mean() / var


def train_layer(
    model, L: int, x_train: torch.Tensor, cfg: InteractionsConfig, lam: float, *, seed: int
) -> tuple[LayerPair, dict]:
    """Train the dictionary pair of MLP ``L`` on its inputs ``x_train`` with penalty weight
    ``lam``; ``seed`` is the layer's (streams ``interactions.sae_in`` / ``sae_out`` /
    ``batches``)."""
    s_x, s_y = layer_scales(model, L, x_train)
    mlp = MLPWeights.from_model(model, L, s_x, s_y)
    x_all = x_train / s_x
    with torch.no_grad():
        y_all = torch.cat([mlp(c * 1.0) for c in x_all.split(4096)])
    var_x = float((x_all - x_all.mean(0)).pow(2).sum(-1).mean())
    var_y = float((y_all - y_all.mean(0)).pow(2).sum(-1).mean())
    d = x_all.shape[1]
    sae_in = new_dictionary(d, cfg.n_latents, cfg.k, generator(seed, "interactions.sae_in"))
    sae_out = new_dictionary(d, cfg.n_latents, cfg.k, generator(seed, "interactions.sae_out"))
    with torch.no_grad():  # b_dec at the mean of the data
        sae_in.b_dec.copy_(x_all.mean(0))
        sae_out.b_dec.copy_(y_all.mean(0))
    params = list(sae_in.parameters()) + list(sae_out.parameters())
    opt = torch.optim.Adam(params, lr=cfg.lr, betas=(0.9, 0.999))
    n = x_all.shape[0]
    steps = max(1, int(cfg.epochs * n / cfg.batch_size))
    g = generator(seed, "interactions.batches")
    order = torch.cat([torch.randperm(n, generator=g) for _ in range(math.ceil(cfg.epochs) + 1)])
    hist: list[tuple[float, float, float]] = []
    t0 = time.perf_counter()
    for step in range(steps):
        # linear decay over the last 20% of steps
        frac = step / steps
        for pg in opt.param_groups:
            pg["lr"] = cfg.lr * min(1.0, (1 - frac) / 0.2)
        b = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
        x, y = x_all[b], y_all[b]
        vals_in, idx_in = sae_in.encode_topk(x)
        l_in = fvu(sae_in.decode_topk(vals_in, idx_in), x, var_x)
        l_out = fvu(sae_out.forward_topk(y), y, var_y)
        loss = l_in + l_out
        pen = torch.zeros(())
        if lam > 0:
            nj = cfg.jac_tokens or len(b)
            pen = jacobian_penalty(
                active_jacobian(sae_in, sae_out, mlp, vals_in[:nj], idx_in[:nj]).J
            )
            loss = loss + lam * pen
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sae_in.normalise_decoder()
        sae_out.normalise_decoder()
        hist.append((l_in.item(), l_out.item(), pen.item()))
    train_s = time.perf_counter() - t0
    measure_firing(sae_in, x_all)
    measure_firing(sae_out, y_all)
    last = np.array(hist[-max(1, steps // 10) :]).mean(0)
    info = {
        "steps": steps,
        "train_seconds": round(train_s, 2),
        "seconds_per_step": round(train_s / steps, 4),
        "final_train_fvu_in": float(last[0]),
        "final_train_fvu_out": float(last[1]),
        "final_train_penalty": float(last[2]),
        "s_x": s_x,
        "s_y": s_y,
    }
    return LayerPair(L, sae_in, sae_out, mlp), info
