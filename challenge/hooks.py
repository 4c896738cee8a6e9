"""TransformerLens hook names: the one place the suite spells them.

``blocks.{L}.hook_resid_pre`` is the residual stream entering block ``L`` (``L = n_layers`` is
not a hook: read ``blocks.{n_layers - 1}.hook_resid_post``).
"""

from __future__ import annotations

import re

from challenge.errors import ConfigError

RESID_PATTERN = re.compile(r"^blocks\.(\d+)\.hook_resid_(pre|post)$")
"""A residual-stream hook name: ``blocks.L.hook_resid_pre`` or ``blocks.L.hook_resid_post``."""


def resid_pre(layer: int) -> str:
    """``blocks.{layer}.hook_resid_pre``: the residual stream entering block ``layer``."""
    return f"blocks.{int(layer)}.hook_resid_pre"


def resid_post(layer: int) -> str:
    """``blocks.{layer}.hook_resid_post``: the residual stream leaving block ``layer``."""
    return f"blocks.{int(layer)}.hook_resid_post"


def mlp_pre(layer: int) -> str:
    """``blocks.{layer}.mlp.hook_pre``: block ``layer``'s MLP pre-activations."""
    return f"blocks.{int(layer)}.mlp.hook_pre"


def mlp_out(layer: int) -> str:
    """``blocks.{layer}.hook_mlp_out``: block ``layer``'s MLP output."""
    return f"blocks.{int(layer)}.hook_mlp_out"


def ln2_normalized(layer: int) -> str:
    """``blocks.{layer}.ln2.hook_normalized``: the MLP's normalised input in block ``layer``."""
    return f"blocks.{int(layer)}.ln2.hook_normalized"


def parse_resid(name: str, n_layers: int, field_name: str = "hook") -> int:
    """Residual-stream hook -> index of the first block that reads it (``resid_pre`` index)."""
    m = RESID_PATTERN.match(name)
    if not m:
        raise ConfigError(f"{name!r} is not blocks.L.hook_resid_pre/post", field=field_name)
    layer = int(m.group(1)) + (m.group(2) == "post")
    if not 0 <= layer <= n_layers:
        raise ConfigError(f"{name!r} is outside the model's {n_layers} layers", field=field_name)
    return layer
