"""Held-out measurements of trained dictionary pairs: reconstruction, the interaction
statistics of the active-only Jacobian, dead latents, and next-token CE with pairs spliced in."""

from __future__ import annotations

import torch

from challenge.interactions.config import InteractionsConfig
from challenge.interactions.jacobian import active_jacobian, interaction_stats, jacobian_penalty
from challenge.interactions.pairs import LayerPair
from challenge.interactions.splice import Splice
from challenge.interactions.trainer import fvu


@torch.no_grad()
def eval_layer(pair: LayerPair, x_eval: torch.Tensor, cfg: InteractionsConfig) -> dict:
    """Held-out reconstruction and interaction statistics of one dictionary pair."""
    mlp, si, so = pair.mlp, pair.sae_in, pair.sae_out
    x = x_eval / mlp.s_x
    y = mlp(x)
    var_x = float((x - x.mean(0)).pow(2).sum(-1).mean())
    var_y = float((y - y.mean(0)).pow(2).sum(-1).mean())
    vi, ii = si.encode_topk(x)
    x_hat = si.decode_topk(vi, ii)
    vo, io = so.encode_topk(y)
    y_hat = so.decode_topk(vo, io)
    # the sparsified MLP: input codes -> MLP -> output codes -> output reconstruction
    n_j = min(cfg.jac_eval_tokens, x.shape[0])
    jo = active_jacobian(si, so, mlp, vi[:n_j], ii[:n_j])
    chain = so.forward_topk(mlp(x_hat))
    alive_in = torch.zeros(si.n_latents, dtype=torch.bool)
    alive_in[ii[vi > 0]] = True
    alive_out = torch.zeros(so.n_latents, dtype=torch.bool)
    alive_out[io[vo > 0]] = True
    return {
        "fvu_in": float(fvu(x_hat, x, var_x)),
        "fvu_out": float(fvu(y_hat, y, var_y)),
        "fvu_chain": float(fvu(chain, y, var_y)),
        "dead_in": float(1 - alive_in.float().mean()),
        "dead_out": float(1 - alive_out.float().mean()),
        "penalty": float(jacobian_penalty(jo.J)),
        **interaction_stats(jo.J, jo.vals_out, thresholds=cfg.thresholds),
    }


@torch.no_grad()
def next_token_ce(
    model, windows: torch.Tensor, splice: Splice | None = None, batch: int = 8
) -> float:
    """Mean next-token CE over positions 1..T-2 predicting 2..T-1 (position 0 never spliced)."""
    tot, cnt = 0.0, 0
    for s in range(0, len(windows), batch):
        w = windows[s : s + batch]
        logits = splice.run(w) if splice is not None else model(w)
        lp = torch.log_softmax(logits[:, 1:-1].float(), -1)
        nll = -lp.gather(-1, w[:, 2:, None])[..., 0]
        tot += float(nll.sum())
        cnt += nll.numel()
    return tot / cnt
