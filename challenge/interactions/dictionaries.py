"""TopK sparse dictionaries (SAEs) for the sparse-interactions study, with safetensors I/O.

A dictionary maps an activation ``x`` (d) to ``n_latents`` codes, keeping the ``k`` largest
pre-activations (then ReLU), and reconstructs ``x_hat = z @ W_dec + b_dec``. Decoder rows are
kept at unit norm, so the size of a latent's code is the size of its contribution.

Codes are carried *sparse* inside the library: ``(vals, idx)`` of shape ``(B, k)``; the dense
``(B, n_latents)`` tensor is only built where needed (``to_dense``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from challenge.errors import ConfigError


@dataclass
class DictConfig:
    """Shape of one TopK dictionary."""

    d_in: int
    n_latents: int = 2048
    k: int = 16


class TopKSAE(nn.Module):
    """TopK-ReLU sparse autoencoder with unit-norm decoder rows."""

    def __init__(self, cfg: DictConfig, *, seed: int = 0):
        super().__init__()
        if cfg.k < 1 or cfg.k > cfg.n_latents:
            raise ConfigError(f"k={cfg.k} must be in [1, n_latents={cfg.n_latents}]", field="k")
        self.cfg = cfg
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(cfg.n_latents, cfg.d_in, generator=g)
        w = w / w.norm(dim=-1, keepdim=True)
        self.W_dec = nn.Parameter(w.clone())  # (n, d)
        self.W_enc = nn.Parameter(w.clone())  # (n, d): pre = (x - b_dec) @ W_enc.T + b_enc
        self.b_enc = nn.Parameter(torch.zeros(cfg.n_latents))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in))

    @property
    def k(self) -> int:
        return self.cfg.k

    def pre(self, x: Float[Tensor, "B d"]) -> Float[Tensor, "B n"]:
        return (x - self.b_dec) @ self.W_enc.T + self.b_enc

    def encode(self, x: Float[Tensor, "B d"]) -> tuple[Float[Tensor, "B k"], Int[Tensor, "B k"]]:
        """Sparse codes: the k largest pre-activations after ReLU, and their latent indices."""
        vals, idx = self.pre(x).topk(self.cfg.k, dim=-1)
        return torch.relu(vals), idx

    def decode(self, vals: Float[Tensor, "B k"], idx: Int[Tensor, "B k"]) -> Float[Tensor, "B d"]:
        # gather-and-sum: (B, k, d) rows of the decoder weighted by the codes
        return torch.einsum("bk,bkd->bd", vals, self.W_dec[idx]) + self.b_dec

    def decode_dense(self, z: Float[Tensor, "B n"]) -> Float[Tensor, "B d"]:
        return z @ self.W_dec + self.b_dec

    def forward(self, x: Float[Tensor, "B d"]) -> Float[Tensor, "B d"]:
        return self.decode(*self.encode(x))

    def to_dense(self, vals: Tensor, idx: Tensor) -> Float[Tensor, "B n"]:
        z = vals.new_zeros(vals.shape[0], self.cfg.n_latents)
        return z.scatter(-1, idx, vals)

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec.data /= self.W_dec.data.norm(dim=-1, keepdim=True).clamp_min(1e-8)

    @torch.no_grad()
    def init_from_data(self, x: Float[Tensor, "N d"]) -> None:
        """b_dec at the (geometric) mean of the data, as usual for SAEs."""
        self.b_dec.data.copy_(x.mean(0))

    # ---- I/O -------------------------------------------------------------------------
    def save(self, path: str | Path, extra: dict | None = None) -> None:
        """``path`` is a directory: ``sae.safetensors`` + ``cfg.json``."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()},
            str(path / "sae.safetensors"),
        )
        (path / "cfg.json").write_text(json.dumps({**asdict(self.cfg), **(extra or {})}, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> TopKSAE:
        from safetensors.torch import load_file

        path = Path(path)
        cfg_path = path / "cfg.json"
        if not cfg_path.exists():
            raise ConfigError("dictionary config missing", file=str(cfg_path))
        raw = json.loads(cfg_path.read_text())
        cfg = DictConfig(**{k: raw[k] for k in ("d_in", "n_latents", "k")})
        sae = cls(cfg)
        sae.load_state_dict(load_file(str(path / "sae.safetensors")))
        return sae


__all__ = ["DictConfig", "TopKSAE"]
