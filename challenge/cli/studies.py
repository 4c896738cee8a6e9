"""Study commands: ``plateau study-<name>``; the flags are each study's config.

Each writes ``<out>/<study>.json`` (+ ``.npz`` arrays, + ``.png`` plot) and prints its headline.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from challenge.atlas import AtlasConfig
from challenge.cli._common import library_config, report
from challenge.distributed import DistributedConfig
from challenge.studies.boundaries import BoundariesConfig
from challenge.studies.layers import LayersConfig
from challenge.studies.output_states import OutputStatesConfig
from challenge.studies.sae_collapse import SAECollapseConfig
from challenge.studies.sae_plateaus import SAEPlateausConfig
from challenge.studies.steering import SteeringConfig


def study_output_states(cfg: OutputStatesConfig) -> None:
    """Study 1: k-means output states of templated prompts; do they predict plateaus (flat
    within a cluster, a jump between clusters)?"""
    from challenge.studies import output_states

    report(output_states.run(cfg))


def study_layers(cfg: LayersConfig) -> None:
    """Study 2: the stable-regions protocol (P2) at every layer along the same prompt pairs:
    do later layers split regions or sharpen them?"""
    from challenge.studies import layers

    report(layers.run(cfg))


def study_steering(cfg: SteeringConfig) -> None:
    """Study 3: difference-of-means steering with increasing coefficient vs plateau (real) and
    random perturbations of the same norm: which response is smoother?"""
    from challenge.studies import steering

    report(steering.run(cfg))


def study_boundaries(cfg: BoundariesConfig) -> None:
    """Study 4: MLP gate units crossing their boundary per step along paths vs the output's
    jumps; do the crossings bunch up at the max-slope step?"""
    from challenge.studies import boundaries

    report(boundaries.run(cfg))


def study_sae_plateaus(cfg: SAEPlateausConfig) -> None:
    """Study 5: do SAE reconstructions stay in their activation's plateau; where in a plateau do
    real activations sit (centre vs edge)?"""
    from challenge.studies import sae_plateaus

    report(sae_plateaus.run(cfg))


def study_sae_collapse(cfg: SAECollapseConfig) -> None:
    """Study 6: does an end-to-end SAE map the activations of one plateau to nearly one point?
    Collapse ratios |SAE(a) - SAE(b)| / |a - b| of e2e vs local SAEs, within and across plateaus."""
    from challenge.studies import sae_collapse

    report(sae_collapse.run(cfg))


@dataclass
class AtlasCommand(AtlasConfig):
    """The atlas's config, and where its engine calls run."""

    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    """run the probes on Ray workers (`--workers N`, `--address` for a cluster; same numbers)"""


def atlas(cfg: AtlasCommand) -> None:
    """The plateau atlas of a track's model: P1 (published definitions), AP (the papers'
    protocol), P2 sharpness and the plateau radius, real vs N(mu, Sigma), at a grid of write
    layers, with intervals; resumes from its per-layer cells (docs/atlas.md)."""
    from challenge import atlas as A

    res = A.run(library_config(cfg), distributed=cfg.distributed)
    print(A.table(res))
    report(res)
