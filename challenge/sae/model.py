"""The SAE: its training config and the TopK / ReLU / JumpReLU module with SAELens' parameters.

Encoding (SAELens' ``standard`` / ``topk`` / ``jumprelu``)::

    pre = (x - b_dec) @ W_enc + b_enc         (x @ W_enc + b_enc when apply_b_dec_to_input is false)
    f   = relu(pre) | relu(topk_k(pre)) | pre * (pre > threshold)
    x_hat = f @ W_dec + b_dec

TopK SAEs also carry their codes *sparse*, ``(vals, idx)`` of shape ``(B, k)``
(``encode_topk`` / ``decode_topk``), as the sparse-interaction dictionaries do. Those store
``W_enc`` latent-major (``latent_major=True``: the transpose of an ``(n_latents, d_in)`` tensor,
same shape and values): BLAS sums in another order on the two memory orders (e.g. one-row
products), so the layout the dictionaries were made with is kept to keep their numbers.

Dead latents: SAELens stores ``log10(freq + 1e-10)``, so a latent that never fired on the
measurement set sits at the floor -10. ``dead_mask`` counts a latent dead when its stored value
is at that floor (never fired on the training set), which is P1's "log10 frequency below -10"
read on the stored scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from challenge.errors import ConfigError

LOG_FLOOR = -10.0  # SAELens: log10(freq + 1e-10); never fired -> -10
KINDS = ("topk", "relu", "jumprelu")


@dataclass
class SAEConfig:
    """How an SAE is trained (and, for loaded SAEs, what it is)."""

    kind: Literal["topk", "relu"] = "topk"
    """activation: TopK-ReLU or ReLU with an L1 penalty"""
    n_latents: int = 4096
    """dictionary size"""
    k: int = 32
    """topk: active latents per input"""
    l1: float = 3e-3
    """relu: L1 coefficient on f * ||W_dec row||, in normalised units"""
    lr: float = 1e-3
    """Adam learning rate (linear warm-up over 5% of the steps, decay over the last 20%)"""
    steps: int = 1000
    """optimiser steps"""
    batch: int = 256
    """rows per step, drawn with replacement"""
    seed: int = 0
    """run seed (stream ``sae.train``: initialisation, then the batches)"""
    aux_k: int = 256
    """topk: AuxK latents (dead ones) that reconstruct the residual; 0 = off"""
    aux_coef: float = 1 / 32
    """topk: weight of the AuxK loss"""
    dead_after: int = 50_000
    """topk: a latent unfired for this many samples counts as dead for AuxK"""
    positions: Literal["last", "all"] = "all"
    """training data on a track: "last" = the public split (last position only); "all" = every
    position but the first of the public prompts at the write hook (needs the model; what
    SAELens-style SAEs are trained on, and 9x the data: less overfitting)"""

    def __post_init__(self) -> None:
        if self.kind not in ("topk", "relu"):
            raise ConfigError(f"can train topk or relu, not {self.kind!r}", field="kind")
        if self.positions not in ("last", "all"):
            raise ConfigError(
                f"positions must be 'last' or 'all', not {self.positions!r}", field="positions"
            )
        for name in ("n_latents", "k", "steps", "batch", "dead_after"):
            if getattr(self, name) < 1:
                raise ConfigError(f"must be >= 1, got {getattr(self, name)}", field=name)
        for name in ("l1", "aux_k", "aux_coef"):
            if getattr(self, name) < 0:
                raise ConfigError(f"must be >= 0, got {getattr(self, name)}", field=name)
        if not self.lr > 0:
            raise ConfigError(f"must be > 0, got {self.lr}", field="lr")

    def name(self) -> str:
        tag = f"k{self.k}" if self.kind == "topk" else f"l1{self.l1:g}"
        return f"{self.kind}-{self.n_latents}-{tag}-{self.positions}-{self.steps}-s{self.seed}"


class SAE(nn.Module):
    """A (TopK / ReLU / JumpReLU) sparse autoencoder with SAELens' parameter names and shapes."""

    def __init__(
        self,
        d_in: int,
        n_latents: int,
        kind: str = "topk",
        k: int = 32,
        apply_b_dec_to_input: bool = True,
        meta: dict[str, Any] | None = None,
        latent_major: bool = False,
    ):
        super().__init__()
        if kind not in KINDS:
            raise ConfigError(f"unknown SAE kind {kind!r} (topk, relu, jumprelu)", field="kind")
        if kind == "topk" and k < 1:
            raise ConfigError(f"topk SAE needs k >= 1, got {k}", field="k")
        self.d_in, self.n_latents, self.kind, self.k = d_in, n_latents, kind, k
        self.apply_b_dec_to_input, self.latent_major = apply_b_dec_to_input, latent_major
        w_enc = torch.zeros(n_latents, d_in).T if latent_major else torch.zeros(d_in, n_latents)
        self.W_enc = nn.Parameter(w_enc)  # [d_in, n_latents] either way
        self.b_enc = nn.Parameter(torch.zeros(n_latents))
        self.W_dec = nn.Parameter(torch.zeros(n_latents, d_in))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        if kind == "jumprelu":
            self.threshold = nn.Parameter(torch.zeros(n_latents))
        # log10(firing frequency + 1e-10) on the training set (SAELens' "sparsity")
        self.register_buffer("log_sparsity", torch.full((n_latents,), LOG_FLOOR))
        self.meta: dict[str, Any] = meta or {}

    # ------------------------------------------------------------------ forward
    def pre_acts(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... n_latents"]:
        x = x.to(self.W_enc.dtype)
        if self.apply_b_dec_to_input:
            x = x - self.b_dec
        return x @ self.W_enc + self.b_enc

    def activate(self, pre: Float[Tensor, "... n_latents"]) -> Float[Tensor, "... n_latents"]:
        if self.kind == "relu":
            return torch.relu(pre)
        if self.kind == "jumprelu":
            return pre * (pre > self.threshold)
        top = pre.topk(min(self.k, pre.shape[-1]), dim=-1)
        return torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))

    def encode(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... n_latents"]:
        return self.activate(self.pre_acts(x))

    def decode(self, f: Float[Tensor, "... n_latents"]) -> Float[Tensor, "... d_in"]:
        return f.to(self.W_dec.dtype) @ self.W_dec + self.b_dec

    def forward(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_in"]:
        return self.decode(self.encode(x))

    # ------------------------------------------------------------------ sparse TopK codes
    def _need_topk(self) -> None:
        if self.kind != "topk":
            raise ConfigError(f"sparse (vals, idx) codes need a topk SAE, not {self.kind!r}")

    def encode_topk(
        self, x: Float[Tensor, "B d_in"]
    ) -> tuple[Float[Tensor, "B k"], Int[Tensor, "B k"]]:
        """Sparse codes: the k largest pre-activations after ReLU, and their latent ids."""
        self._need_topk()
        vals, idx = self.pre_acts(x).topk(min(self.k, self.n_latents), dim=-1)
        return torch.relu(vals), idx

    def decode_topk(
        self, vals: Float[Tensor, "B k"], idx: Int[Tensor, "B k"]
    ) -> Float[Tensor, "B d_in"]:
        """Reconstruction from sparse codes: the gathered decoder rows weighted by the codes."""
        return torch.einsum("bk,bkd->bd", vals, self.W_dec[idx]) + self.b_dec

    def forward_topk(self, x: Float[Tensor, "B d_in"]) -> Float[Tensor, "B d_in"]:
        """``decode_topk(encode_topk(x))``: ``forward`` through the sparse codes."""
        return self.decode_topk(*self.encode_topk(x))

    def dense_codes(
        self, vals: Float[Tensor, "B k"], idx: Int[Tensor, "B k"]
    ) -> Float[Tensor, "B n_latents"]:
        """Sparse ``(vals, idx)`` codes scattered into ``(B, n_latents)``."""
        return vals.new_zeros(vals.shape[0], self.n_latents).scatter(-1, idx, vals)

    # ------------------------------------------------------------------ latent classes
    @property
    def firing_freq(self) -> Float[Tensor, " n_latents"]:
        """Firing frequency on the training set (0 for latents at the SAELens floor)."""
        ls = self.log_sparsity.double()
        return torch.where(ls <= LOG_FLOOR + 1e-3, torch.zeros_like(ls), 10.0**ls).float()

    def dead_mask(self) -> torch.Tensor:
        """Latents that never fired on the training set (stored log10 frequency at the -10 floor)."""
        return self.log_sparsity <= LOG_FLOOR + 1e-3

    @torch.no_grad()
    def normalise_decoder(self) -> None:
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8))
