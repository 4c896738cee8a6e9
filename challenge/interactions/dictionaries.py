"""The sparse-interaction dictionaries: the suite's TopK SAE (``challenge.sae.SAE``), tied
unit-norm initialisation, and SAELens-layout I/O with the layer's normalisation scalars.

A dictionary maps a *normalised* activation ``x`` (d; the MLP input divided by ``s_x`` or the
MLP output divided by ``s_y``, see ``challenge.interactions.jacobian``) to ``n_latents`` codes,
keeping the ``k`` largest pre-activations (then ReLU), and reconstructs
``x_hat = z @ W_dec + b_dec``. Decoder rows are kept at unit norm, so the size of a latent's code
is the size of its contribution. Codes are carried *sparse* inside this package: ``(vals, idx)``
of shape ``(B, k)`` (``SAE.encode_topk`` / ``SAE.decode_topk``); the dense ``(B, n_latents)``
tensor is only built where needed (``SAE.dense_codes``).

On disk a dictionary is a SAELens directory (``challenge.sae.save_sae``) whose ``cfg.json``
carries ``"interactions"``: the layer, ``s_x``, ``s_y`` and how it was trained. Its weights act on
normalised activations: divide the hook's activation by the scalar first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from challenge.errors import ConfigError
from challenge.sae import SAE, firing_log10, init_tied, load_sae, save_sae

META_KEY = "interactions"


def new_dictionary(d_in: int, n_latents: int, k: int, g: torch.Generator) -> SAE:
    """A latent-major TopK SAE with unit-norm decoder rows ~ N(0, I) drawn from ``g``,
    ``W_enc = W_dec^T`` and zero biases (``challenge.sae.init_tied``)."""
    if not 1 <= k <= n_latents:
        raise ConfigError(f"k={k} must be in [1, n_latents={n_latents}]", field="k")
    sae = SAE(d_in, n_latents, "topk", k, latent_major=True)
    init_tied(sae, g)
    return sae


@torch.no_grad()
def measure_firing(sae: SAE, x: Float[Tensor, "n d"]) -> None:
    """Store the firing frequencies of ``sae`` on ``x`` (SAELens' ``sparsity``)."""
    sae.log_sparsity.copy_(firing_log10(sae, x))


def save_dictionary(sae: SAE, path: str | Path, hook: str, meta: dict[str, Any]) -> Path:
    """Write ``sae`` as a SAELens directory with ``meta`` under ``cfg.json["interactions"]``."""
    return save_sae(sae, path, {"hook_name": hook, META_KEY: meta})


def load_dictionary(path: str | Path) -> tuple[SAE, dict[str, Any]]:
    """(SAE, the ``"interactions"`` metadata) of a directory written by ``save_dictionary``."""
    sae = load_sae(path, latent_major=True)
    meta = sae.meta["cfg"].get(META_KEY)
    if meta is None or sae.kind != "topk":
        raise ConfigError(
            "not a sparse-interaction dictionary (no 'interactions' entry or not topk)",
            file=str(Path(path) / "cfg.json"),
        )
    return sae, meta


__all__ = ["load_dictionary", "measure_firing", "new_dictionary", "save_dictionary"]
