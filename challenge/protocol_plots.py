"""The figure of a protocol run: response curves per group, median and inter-quartile band."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from challenge.errors import ConfigError
from challenge.plots import plot_curve_groups


def protocol_panels(result) -> tuple[dict[str, dict[str, np.ndarray]], dict]:
    """The panels (title -> group -> curves ``[n, steps]``) and axis options of a
    :class:`~challenge.protocols.P1Result`, ``P2Result`` or ``P3Result``."""
    a = result.arrays
    if result.kind == "p1":
        panels = {
            "L2 at read-out (normalised)": {"real": a["real_l2"], "random": a["random_l2"]},
            "KL (normalised)": {"real": a["real_kl"], "random": a["random_kl"]},
        }
        return panels, {"normalise": True}
    if result.kind == "p2":
        groups = {"real": a["real_l2"]} | ({"random": a["random_l2"]} if "random_l2" in a else {})
        x = np.linspace(0, 1, result.config.n_steps)
        return {"d(alpha)/d(1)": groups}, {"normalise": True, "x": x, "xlabel": "alpha"}
    if result.kind == "p3":
        kinds = list(result.detail["directions"])
        panels = {
            "KL(original || perturbed)": {k: a[f"{k}_kl"] for k in kinds},
            "L2 at read-out": {k: a[f"{k}_l2"] for k in kinds},
        }
        return panels, {"x": a["lengths"], "xlabel": "perturbation length"}
    raise ConfigError(f"not a protocol result: {result.kind!r}", field="kind")


def plot_protocol(result, path: str | Path) -> Path:
    """Write the run's figure to ``path`` (PNG)."""
    panels, kw = protocol_panels(result)
    track = result.track.id if result.track else "?"
    return plot_curve_groups(
        {}, path, panels=panels, title=f"{result.kind.upper()} on {track}", **kw
    )
