"""The two models trained by the training study, as TransformerLens ``HookedTransformer``s (so
the suite's one perturbation engine runs on every checkpoint), and their data.

- ``modadd``: Nanda et al. 2023's modular-addition transformer (``a + b mod p`` from the tokens
  ``[a, b, =]``; one attention layer, 4 heads, d_model 128, ReLU MLP 512, no LayerNorm, untied
  embeddings). The engine writes at ``blocks.L.hook_resid_pre/post`` of a block that is followed
  by an MLP, and a 1-layer model has no residual hook between its attention and its MLP; so the
  layer is held as **two blocks**: block 0 keeps the attention (its MLP is zero and frozen),
  block 1 keeps the MLP (its attention output ``W_O``, ``b_O`` is zero and frozen). The function
  is Nanda's 1-layer model exactly, and ``blocks.1.hook_resid_pre`` is Nanda's
  ``blocks.0.hook_resid_mid``: the MLP's input at the ``=`` position.
- ``lm``: a 2-layer byte-level language model (vocab 256, d_model 128, 4 heads, ReLU MLP 512,
  LayerNorm) on the English prose of ``pydoc_data.topics`` (``challenge.prompts``' offline text).
"""

from __future__ import annotations

import numpy as np
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

MODELS = ("modadd", "lm")


def modadd_config(p: int, d_model: int = 128, d_mlp: int = 512, n_heads: int = 4, seed: int = 0):
    return HookedTransformerConfig(
        n_layers=2,  # attention-only block 0 + MLP-only block 1 = Nanda's one layer
        d_model=d_model,
        d_head=d_model // n_heads,
        n_heads=n_heads,
        d_mlp=d_mlp,
        d_vocab=p + 1,
        d_vocab_out=p,
        n_ctx=3,
        act_fn="relu",
        normalization_type=None,
        seed=seed,
        device="cpu",
    )


def lm_config(
    d_model: int = 128, d_mlp: int = 512, n_layers: int = 2, n_ctx: int = 32, seed: int = 0
):
    return HookedTransformerConfig(
        n_layers=n_layers,
        d_model=d_model,
        d_head=d_model // 4,
        n_heads=4,
        d_mlp=d_mlp,
        d_vocab=256,
        n_ctx=n_ctx,
        act_fn="relu",
        normalization_type="LN",
        seed=seed,
        device="cpu",
    )


def frozen_names(model: HookedTransformer) -> list[str]:
    """Parameters held at zero and never trained (the split of the modadd layer)."""
    if model.cfg.normalization_type is not None:
        return []
    return [
        "blocks.0.mlp.W_in", "blocks.0.mlp.b_in", "blocks.0.mlp.W_out", "blocks.0.mlp.b_out",
        "blocks.1.attn.W_O", "blocks.1.attn.b_O",
    ]  # fmt: skip


def build(kind: str, seed: int, p: int = 113, **kw) -> HookedTransformer:
    """A freshly initialised model (TransformerLens's init under ``seed``)."""
    torch.manual_seed(seed)
    cfg = modadd_config(p, seed=seed, **kw) if kind == "modadd" else lm_config(seed=seed, **kw)
    model = HookedTransformer(cfg)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n in frozen_names(model):
            params[n].zero_()
            params[n].requires_grad_(False)
    return model


def trainable(model: HookedTransformer) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def modadd_data(p: int, frac: float, seed: int):
    """All ``p^2`` pairs as ``[a, b, =]`` tokens with labels, split ``frac`` / rest (seeded)."""
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    a, b = a.ravel(), b.ravel()
    toks = torch.from_numpy(np.stack([a, b, np.full_like(a, p)], 1)).long()
    y = torch.from_numpy((a + b) % p).long()
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n = int(round(frac * len(y)))
    tr, te = perm[:n], perm[n:]
    return (toks[tr], y[tr]), (toks[te], y[te])


def lm_text(max_chars: int | None = None) -> np.ndarray:
    """The bytes of ``pydoc_data.topics``' English prose (``challenge.prompts``' ``pydoc``
    source), joined by newlines, as uint8."""
    from challenge.prompts import PromptSpec, iter_texts

    texts = iter_texts(PromptSpec(source="pydoc", max_chars=max_chars))
    data = "\n".join(texts).encode("utf-8")
    return np.frombuffer(data, dtype=np.uint8).copy()


def lm_split(data: np.ndarray, test_frac: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """The text's first ``1 - test_frac`` for training, the rest for the test loss."""
    cut = int(len(data) * (1 - test_frac))
    return data[:cut], data[cut:]


def windows(data: np.ndarray, starts: np.ndarray, n: int) -> torch.Tensor:
    """``[len(starts), n]`` byte windows starting at ``starts``."""
    idx = starts[:, None] + np.arange(n)[None, :]
    return torch.from_numpy(data[idx].astype(np.int64))
