"""The one clean-activation capture: unperturbed activations at named hooks.

Every module that needs activations of the model on real prompts (track building, the engine's
clean runs and prefix caches, SAE training data, the layer study, the sparse-interaction
dictionaries) calls :func:`capture`; nothing else calls ``run_with_cache``. The forward stops
after the last block a requested hook lives in.
"""

from __future__ import annotations

import re
from typing import Literal

import torch
from jaxtyping import Int
from torch import Tensor

from challenge.errors import ConfigError

Positions = Literal["last", "after_first", "all"]
_BLOCK = re.compile(r"^blocks\.(\d+)\.")


def stop_layer(hooks: list[str] | tuple[str, ...] | set[str]) -> int | None:
    """The number of blocks to run so that every hook in ``hooks`` is reached (``None``: all)."""
    layers = []
    for h in hooks:
        m = _BLOCK.match(h)
        if m is None:
            return None  # a hook outside the blocks (embedding, final norm): run everything
        layers.append(int(m.group(1)))
    return max(layers) + 1 if layers else None


@torch.no_grad()
def capture(
    model,
    tokens: Int[Tensor, "n pos"],
    hooks: list[str] | tuple[str, ...],
    *,
    positions: Positions = "last",
    batch_size: int = 256,
    float32: bool = True,
    device: torch.device | str | None = None,
) -> dict[str, Tensor]:
    """Activations of ``model`` (a TransformerLens model) at ``hooks`` on ``tokens``.

    ``positions``: ``"last"`` gives ``[n, d]`` (the last token), ``"after_first"`` gives
    ``[n * (pos - 1), d]`` (every position but the first, flattened in row order: SAE and
    dictionary training data), ``"all"`` gives ``[n, pos, d]``. Results stay on the model's
    device unless ``device`` is given; ``float32`` casts them (the model may run in another
    dtype).
    """
    if positions not in ("last", "after_first", "all"):
        raise ConfigError(f"positions must be last, after_first or all, not {positions!r}")
    hooks = list(dict.fromkeys(hooks))
    if not hooks:
        raise ConfigError("no hook to capture", field="hooks")
    names = set(hooks)
    stop = stop_layer(hooks)
    model_device = next(model.parameters()).device
    tokens = torch.as_tensor(tokens)
    acc: dict[str, list[Tensor]] = {h: [] for h in hooks}
    for i in range(0, len(tokens), batch_size):
        _, cache = model.run_with_cache(
            tokens[i : i + batch_size].to(model_device),
            names_filter=lambda n: n in names,
            stop_at_layer=stop,
        )
        for h in hooks:
            a = cache[h]
            if positions == "last":
                a = a[:, -1]
            elif positions == "after_first":
                a = a[:, 1:].reshape(-1, a.shape[-1])
            if float32:
                a = a.float()
            acc[h].append(a if device is None else a.to(device))
        del cache
    return {h: torch.cat(v) for h, v in acc.items()}
