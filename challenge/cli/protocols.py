"""The protocol command: ``plateau protocol {p1,p2,p3}``, flags from each protocol's config."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import tyro

from challenge.cli._common import library_config, report
from challenge.distributed import DistributedConfig
from challenge.protocols import P1Config, P2Config, P3Config
from challenge.track import DEFAULT_TRACK, resolve_track


@dataclass
class _On:
    track: str = DEFAULT_TRACK
    """registered track id or a track directory"""
    out: Path = Path("runs/protocols")
    """writes <out>/<track>_<protocol>[_<scheme>][_<units>].json (+ .npz arrays, + .png plot)"""
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    """run the engine's chunks on Ray workers (`--workers N`, `--address` for a cluster; same
    result)"""


@dataclass
class P1Command(P1Config, _On):
    """P1 teren: curves from real activations toward real vs random targets."""


@dataclass
class P2Command(P2Config, _On):
    """P2 stable regions: interpolation between adjacent prompts' activations."""

    n_pairs: int = 200
    """adjacent context-prompt pairs (i, i+1) (the command's default: 200)"""


@dataclass
class P3Command(P3Config, _On):
    """P3 sensitive directions: x + L d/||d|| over a length grid, per direction kind."""

    n_base: int = 200
    """context activations the rays start from (the command's default: 200)"""
    sae: Path | None = None
    """an SAE directory (from `plateau train-sae`) whose decoder directions are added"""


def protocol(
    cfg: Annotated[P1Command, tyro.conf.subcommand("p1")]
    | Annotated[P2Command, tyro.conf.subcommand("p2")]
    | Annotated[P3Command, tyro.conf.subcommand("p3")] = P1Command(),
) -> Path:
    """Run a published protocol (p1 teren, p2 stable regions, p3 sensitive directions) on a
    track; write its JSON (+ .npz arrays, + .png plot) to --out."""
    from challenge import models
    from challenge.protocols import run_protocol

    tr = resolve_track(cfg.track)
    lm = models.load_model(tr.spec.model)
    sae = cfg.sae if isinstance(cfg, P3Command) else None
    result = run_protocol(
        tr, lm, library_config(cfg), sae=sae, out=cfg.out, distributed=cfg.distributed
    )
    report(result)
    return result.path
