"""Splicing dictionary pairs into the model with hooks: each MLP's output replaced by its
output dictionary's reconstruction, optionally its input by the input dictionary's, and input
latents zeroed (ablation)."""

from __future__ import annotations

import torch

from challenge import hooks
from challenge.errors import ConfigError
from challenge.interactions.pairs import LayerPair


class Splice:
    """Context manager that splices dictionary pairs into the model via hooks.

    ``mode="out"``: the MLP output is replaced by the output dictionary's reconstruction.
    ``mode="chain"``: additionally the MLP input is replaced by the input dictionary's
    reconstruction, so every MLP runs as input codes -> MLP -> output codes.
    Position 0 is left untouched (it is excluded from training, see ``cache_inputs``).
    ``ablate`` maps a layer to ``(positions, latent ids)`` whose *input* codes are zeroed
    (applied as an edit of the real input, keeping the reconstruction error, when ``mode`` is
    ``"none"``).
    """

    def __init__(
        self, model, pairs: dict[int, LayerPair], mode: str = "chain", ablate: dict | None = None
    ):
        if mode not in ("out", "chain", "none"):
            raise ConfigError(f"mode {mode!r} not in out|chain|none", field="mode")
        self.model, self.pairs, self.mode, self.ablate = model, pairs, mode, ablate or {}

    def _hooks(self):
        fwd = []
        for L, p in self.pairs.items():
            if self.mode == "chain" or L in self.ablate:
                fwd.append((hooks.ln2_normalized(L), self._in_hook(p)))
            if self.mode in ("out", "chain"):
                fwd.append((hooks.mlp_out(L), self._out_hook(p)))
        return fwd

    def _in_hook(self, p: LayerPair):
        def fn(act, hook):
            B, T, d = act.shape
            x = act[:, 1:].reshape(-1, d) / p.mlp.s_x
            vals, idx = p.sae_in.encode_topk(x)
            if p.layer in self.ablate:
                pos, lat = self.ablate[p.layer]
                mask = torch.zeros(B, T - 1, p.sae_in.n_latents, dtype=torch.bool)
                pos_sel = torch.zeros(T - 1, dtype=torch.bool)
                pos_sel[[q - 1 for q in pos if q >= 1]] = True
                mask[:, pos_sel, :] = False
                lat_t = torch.as_tensor(list(lat), dtype=torch.long)
                mask[:, pos_sel.nonzero()[:, 0][:, None], lat_t[None, :]] = True
                kill = mask.reshape(-1, p.sae_in.n_latents).gather(1, idx)
                new_vals = torch.where(kill, torch.zeros_like(vals), vals)
            else:
                new_vals = vals
            if self.mode == "chain":
                x_new = p.sae_in.decode_topk(new_vals, idx)
            else:  # keep the error term: subtract only the ablated latents' contributions
                x_new = x - (p.sae_in.decode_topk(vals, idx) - p.sae_in.decode_topk(new_vals, idx))
            out = act.clone()
            out[:, 1:] = (x_new * p.mlp.s_x).reshape(B, T - 1, d)
            return out

        return fn

    def _out_hook(self, p: LayerPair):
        def fn(act, hook):
            B, T, d = act.shape
            y = act[:, 1:].reshape(-1, d) / p.mlp.s_y
            out = act.clone()
            out[:, 1:] = (p.sae_out.forward_topk(y) * p.mlp.s_y).reshape(B, T - 1, d)
            return out

        return fn

    def run(self, tokens: torch.Tensor, **kw) -> torch.Tensor:
        return self.model.run_with_hooks(tokens, fwd_hooks=self._hooks(), **kw)
