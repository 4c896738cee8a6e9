"""Jacobian between the input and output dictionaries of one MLP, restricted to active latents.

For layer ``L`` let ``x`` be the MLP input after RMS normalisation
(``blocks.L.ln2.hook_normalized``, before the norm gain ``w``) and ``y`` the MLP output
(``blocks.L.hook_mlp_out``), both divided by
a per-layer scalar (``s_x``, ``s_y``) so their mean squared norm is ``d_model``. With an input
dictionary ``(enc_in, dec_in)`` and an output dictionary ``(enc_out, dec_out)`` the MLP seen through
the dictionaries is the function of input codes

    f(z_in) = TopK(enc_out( MLP(s_x * w * dec_in(z_in)) / s_y ))

(Jacobian SAEs, Farnik et al. 2025, arXiv 2502.18147). Its Jacobian is zero on inactive output
latents, and we only need the columns of the ``k`` active input latents, so per token it is a
``k x k`` matrix. For the gated SiLU MLP ``a = silu(g) * u + b_in``, ``g = h W_gate``,
``u = h W_in``, ``h = s_x w * x``, ``y = a W_out + b_out``:

    da/dh = diag(silu'(g) * u) W_gate^T + diag(silu(g)) W_in^T
    J[o, i] = (W_enc_out[o] W_out^T / s_y) . (silu'(g) u * (D_i W_gate) + silu(g) * (D_i W_in))

with ``D_i = s_x w * W_dec_in[i]``. The three ``(rows, d_mlp)`` products are computed only for the
latents active somewhere in the batch (``torch.unique``), then gathered per token, and one batched
``(k, d_mlp) @ (d_mlp, k)`` product per token gives ``J``. Cost per token: ``O(k^2 d_mlp)`` plus a
per-batch ``O(n_active_union d_model d_mlp)``, against ``O(n_latents^2 d_mlp)`` per token for the
dense Jacobian (``dense_jacobian``, autograd, kept as the reference and for the benchmark).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from challenge.errors import ConfigError
from challenge.sae import SAE


@dataclass
class MLPWeights:
    """One gated-SiLU MLP (frozen) plus the norm gain and the normalisation scalars."""

    W_gate: Tensor  # (d, m)
    W_in: Tensor  # (d, m)
    b_in: Tensor  # (m,)
    W_out: Tensor  # (m, d)
    b_out: Tensor  # (d,)
    ln_w: Tensor  # (d,)
    s_x: float = 1.0
    s_y: float = 1.0

    @staticmethod
    def check(model) -> None:
        """``ConfigError`` unless ``model`` has Llama-style gated SiLU MLPs with RMSNorm."""
        cfg = model.cfg
        if not cfg.gated_mlp or cfg.act_fn != "silu" or cfg.normalization_type != "RMS":
            raise ConfigError(
                f"sparse interactions need a gated SiLU MLP with RMSNorm (Llama); got "
                f"gated_mlp={cfg.gated_mlp}, act_fn={cfg.act_fn}, norm={cfg.normalization_type}",
                field="model",
            )

    @classmethod
    def from_model(cls, model, layer: int, s_x: float = 1.0, s_y: float = 1.0) -> MLPWeights:
        cls.check(model)
        mlp, blk = model.blocks[layer].mlp, model.blocks[layer]
        return cls(
            W_gate=mlp.W_gate.detach(),
            W_in=mlp.W_in.detach(),
            b_in=mlp.b_in.detach(),
            W_out=mlp.W_out.detach(),
            b_out=mlp.b_out.detach(),
            ln_w=blk.ln2.w.detach(),
            s_x=float(s_x),
            s_y=float(s_y),
        )

    def to(self, dtype: torch.dtype) -> MLPWeights:
        t = {
            k: getattr(self, k).to(dtype)
            for k in ("W_gate", "W_in", "b_in", "W_out", "b_out", "ln_w")
        }
        return MLPWeights(**t, s_x=self.s_x, s_y=self.s_y)

    def parts(self, x: Float[Tensor, "B d"]) -> tuple[Tensor, Tensor, Tensor]:
        """Normalised input -> (gate pre-act g, linear pre-act u, normalised output y)."""
        h = x * (self.s_x * self.ln_w)
        g, u = h @ self.W_gate, h @ self.W_in
        y = (torch.nn.functional.silu(g) * u + self.b_in) @ self.W_out + self.b_out
        return g, u, y / self.s_y

    def __call__(self, x: Float[Tensor, "B d"]) -> Float[Tensor, "B d"]:
        return self.parts(x)[2]


def _rows_times(W: Tensor, idx: Tensor, M: Tensor) -> Tensor:
    """``(W[idx] @ M)`` computed once per distinct row: (n, d), (B, k), (d, m) -> (B, k, m)."""
    uniq, inv = torch.unique(idx, return_inverse=True)
    return (W[uniq] @ M)[inv]


@dataclass
class JacobianOut:
    J: Float[Tensor, "B k_out k_in"]  # d z_out[o] / d z_in[i] on active latents
    vals_out: Float[Tensor, "B k_out"]  # output codes of f (output dictionary at MLP(x_hat))
    idx_out: Int[Tensor, "B k_out"]
    y_hat: Float[Tensor, "B d"]  # MLP(x_hat), normalised


def active_jacobian(
    sae_in: SAE,
    sae_out: SAE,
    mlp: MLPWeights,
    vals_in: Float[Tensor, "B k"],
    idx_in: Int[Tensor, "B k"],
    idx_out: Int[Tensor, "B k_out"] | None = None,
) -> JacobianOut:
    """Closed-form Jacobian of ``f`` on the active input/output latents (differentiable).

    With ``idx_out`` given, rows are those output latents' pre-activation Jacobians instead
    (no TopK masking on the output side), e.g. for the latents active on the real MLP output.
    """
    x_hat = sae_in.decode_topk(vals_in, idx_in)
    g, u, y = mlp.parts(x_hat)
    if idx_out is None:
        vals_out, idx_out = sae_out.encode_topk(y)
        out_mask = vals_out > 0
    else:
        vals_out = torch.relu(sae_out.pre_acts(y).gather(1, idx_out))
        out_mask = torch.ones_like(vals_out, dtype=torch.bool)
    sg = torch.sigmoid(g)
    c_gate = sg * (1 + g * (1 - sg)) * u  # silu'(g) * u
    c_lin = g * sg  # silu(g)
    e = _rows_times(sae_out.W_enc.T, idx_out, mlp.W_out.T) / mlp.s_y  # (B, k_out, m)
    dec = sae_in.W_dec * (mlp.s_x * mlp.ln_w)
    d_gate = _rows_times(dec, idx_in, mlp.W_gate)  # (B, k_in, m)
    d_lin = _rows_times(dec, idx_in, mlp.W_in)
    d = c_gate[:, None, :] * d_gate + c_lin[:, None, :] * d_lin
    J = torch.bmm(e, d.transpose(1, 2))
    mask = out_mask.to(J.dtype)[:, :, None] * (vals_in > 0).to(J.dtype)[:, None, :]
    return JacobianOut(J=J * mask, vals_out=vals_out, idx_out=idx_out, y_hat=y)


def f_dense(sae_in: SAE, sae_out: SAE, mlp: MLPWeights, z_in: Tensor) -> Tensor:
    """``f`` on dense codes: (n_in,) or (B, n_in) -> dense output codes."""
    y = mlp(sae_in.decode(z_in))
    vals, idx = sae_out.pre_acts(y).topk(sae_out.k, dim=-1)
    return torch.zeros_like(sae_out.pre_acts(y)).scatter(-1, idx, torch.relu(vals))


def dense_jacobian(
    sae_in: SAE, sae_out: SAE, mlp: MLPWeights, z_in: Float[Tensor, "B n_in"]
) -> Float[Tensor, "B n_out n_in"]:
    """Naive reference: the full ``n_out x n_in`` Jacobian per token by autograd."""
    from torch.func import jacrev, vmap

    return vmap(jacrev(lambda z: f_dense(sae_in, sae_out, mlp, z)))(z_in)


def restrict(J_dense: Tensor, idx_out: Tensor, idx_in: Tensor) -> Tensor:
    """Dense (B, n_out, n_in) -> (B, k_out, k_in) at the given active indices."""
    rows = J_dense.gather(1, idx_out[:, :, None].expand(-1, -1, J_dense.shape[2]))
    return rows.gather(2, idx_in[:, None, :].expand(-1, idx_out.shape[1], -1))


def jacobian_penalty(J: Tensor) -> Tensor:
    """L1 of the active Jacobian per active output feature, averaged over tokens."""
    return J.abs().sum((1, 2)).mean() / J.shape[1]


@torch.no_grad()
def interaction_stats(
    J: Tensor, vals_out: Tensor, thresholds=(0.01, 0.05), mass: float = 0.9
) -> dict:
    """Nonzero interactions per active output feature.

    ``nnz@t``: mean over active output features of #{active inputs with |J| > t}.
    ``mass90``: mean number of input edges needed to hold 90% of that feature's L1 Jacobian
    mass (scale free). Features with an all-zero row count as 0 for ``nnz`` and are skipped
    for ``mass90``.
    """
    act = vals_out > 0  # (B, k_out)
    A = J.abs()
    out = {}
    for t in thresholds:
        out[f"nnz@{t:g}"] = float((A > t).sum(-1)[act].float().mean())
    s = A.sort(-1, descending=True).values
    tot = s.sum(-1, keepdim=True)
    ok = act & (tot[..., 0] > 0)
    cnt = ((s.cumsum(-1) / tot.clamp_min(1e-12)) < mass).sum(-1) + 1
    out[f"mass{int(mass * 100)}"] = float(cnt[ok].float().mean()) if ok.any() else 0.0
    out["abs_mean"] = float(A.sum(-1)[act].mean() / J.shape[2])
    return out


__all__ = [
    "MLPWeights",
    "JacobianOut",
    "active_jacobian",
    "dense_jacobian",
    "f_dense",
    "restrict",
    "jacobian_penalty",
    "interaction_stats",
]
