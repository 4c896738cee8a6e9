"""The data of an interactions run: shuffled text windows of a track's prompt source, and the
MLP inputs they produce at every trained layer."""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from challenge import hooks
from challenge.errors import ConfigError
from challenge.prompts import PromptSpec
from challenge.rng import generator


def text_windows(
    prompts: PromptSpec, tokenizer, n_windows: int, ctx: int, seed: int
) -> Int[Tensor, "n_windows ctx"]:
    """``n_windows`` disjoint ``ctx``-token windows of the texts of ``prompts`` (its source, in
    order, joined by blank lines and tokenised as one text), shuffled (stream
    ``interactions.windows``)."""
    from challenge.prompts import iter_texts

    if prompts.source.startswith("hf:") and prompts.max_chars is None:
        raise ConfigError(
            "a streamed hub source needs max_chars to bound the text read", field="max_chars"
        )
    text = "\n\n".join(iter_texts(prompts))
    ids = tokenizer(text, return_tensors="pt").input_ids[0]
    n_avail = ids.numel() // ctx
    if n_windows > n_avail:
        raise ConfigError(
            f"asked {n_windows} windows of {ctx} tokens, {prompts.source} has {n_avail}",
            field="n_train_tokens",
        )
    wins = ids[: n_avail * ctx].view(n_avail, ctx)
    perm = torch.randperm(n_avail, generator=generator(seed, "interactions.windows"))
    return wins[perm[:n_windows]]


def cache_inputs(
    model, windows: Int[Tensor, "n ctx"], layers: list[int], batch: int = 8
) -> dict[int, Float[Tensor, "n_tokens d"]]:
    """MLP inputs (normalised, before the norm gain) at every layer; position 0 is dropped.

    The MLP output is recomputed from the input exactly (``MLPWeights``), so only ``x`` is kept.
    """
    from challenge.activations import capture

    names = [hooks.ln2_normalized(L) for L in layers]
    acts = capture(model, windows, names, positions="after_first", batch_size=batch)
    return {L: acts[hooks.ln2_normalized(L)] for L in layers}
