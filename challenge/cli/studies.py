"""Study commands: ``plateau study-<name>``; the flags are each study's config, plus the track,
the output folder and whether to plot.

Each writes ``<out>/<study>.json`` (+ ``.npz`` arrays, + ``.png`` plot) and prints its headline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from challenge.atlas import AtlasConfig
from challenge.cli._common import library_config, report
from challenge.distributed import DistributedConfig
from challenge.studies.boundaries import BoundariesConfig
from challenge.studies.error_correction import ErrorCorrectionConfig
from challenge.studies.layers import LayersConfig
from challenge.studies.output_states import OutputStatesConfig
from challenge.studies.sae_collapse import SAECollapseConfig
from challenge.studies.sae_plateaus import SAEPlateausConfig
from challenge.studies.steering import SteeringConfig
from challenge.studies.training.config import TrainingConfig
from challenge.track import DEFAULT_TRACK


@dataclass
class _On:
    track: str = DEFAULT_TRACK
    """registered track id or a track directory (its model, prompts, write and read hooks)"""
    out: Path = Path("runs/studies")
    """folder of <study>.{json,npz,png}"""
    plot: bool = True
    """also draw <study>.png"""


@dataclass
class OutputStatesCommand(OutputStatesConfig, _On):
    """Study 1: k-means output states of templated prompts vs plateaus of interpolations."""


@dataclass
class LayersCommand(LayersConfig, _On):
    """Study 2: the stable-regions protocol (P2) at every layer, along the same prompt pairs."""


@dataclass
class SteeringCommand(SteeringConfig, _On):
    """Study 3: difference-of-means steering vs plateau perturbations of the same norm."""


@dataclass
class BoundariesCommand(BoundariesConfig, _On):
    """Study 4: MLP gate sign changes per step along paths vs the output's jumps."""


@dataclass
class SAEPlateausCommand(SAEPlateausConfig, _On):
    """Study 5: SAE reconstructions vs plateaus; where real activations sit in their plateau."""


@dataclass
class SAECollapseCommand(SAECollapseConfig, _On):
    """Study 6: collapse ratio of e2e vs local SAE reconstructions within and across plateaus."""


def study_output_states(cfg: OutputStatesCommand) -> None:
    """Study 1: k-means output states of templated prompts; do they predict plateaus (flat
    within a cluster, a jump between clusters)?"""
    from challenge.studies import output_states

    report(output_states.run(library_config(cfg), cfg.track, out=cfg.out, draw=cfg.plot))


def study_layers(cfg: LayersCommand) -> None:
    """Study 2: the stable-regions protocol (P2) at every layer along the same prompt pairs:
    do later layers split regions or sharpen them?"""
    from challenge.studies import layers

    report(layers.run(library_config(cfg), cfg.track, out=cfg.out, draw=cfg.plot))


def study_steering(cfg: SteeringCommand) -> None:
    """Study 3: difference-of-means steering with increasing coefficient vs plateau (real) and
    random perturbations of the same norm: which response is smoother?"""
    from challenge.studies import steering

    report(steering.run(library_config(cfg), cfg.track, out=cfg.out, draw=cfg.plot))


def study_boundaries(cfg: BoundariesCommand) -> None:
    """Study 4: MLP gate units crossing their boundary per step along paths vs the output's
    jumps; do the crossings bunch up at the max-slope step?"""
    from challenge.studies import boundaries

    report(boundaries.run(library_config(cfg), cfg.track, out=cfg.out, draw=cfg.plot))


def study_sae_plateaus(cfg: SAEPlateausCommand) -> None:
    """Study 5: do SAE reconstructions stay in their activation's plateau; where in a plateau do
    real activations sit (centre vs edge)?"""
    from challenge.studies import sae_plateaus

    report(sae_plateaus.run(library_config(cfg), cfg.track, out=cfg.out, draw=cfg.plot))


def study_sae_collapse(cfg: SAECollapseCommand) -> None:
    """Study 6: does an end-to-end SAE map the activations of one plateau to nearly one point?
    Collapse ratios |SAE(a) - SAE(b)| / |a - b| of e2e vs local SAEs, within and across plateaus."""
    from challenge.studies import sae_collapse

    report(sae_collapse.run(library_config(cfg), cfg.track, out=cfg.out, draw=cfg.plot))


@dataclass
class ErrorCorrectionCommand(ErrorCorrectionConfig, _On):
    """Error correction (issue 33): the L^p exponent of pure vs mixed direction pairs, and the
    growth exponent of KL ~ eps^p per direction family."""


def study_error_correction(cfg: ErrorCorrectionCommand) -> None:
    """Error correction (issue 33): are mixtures unit(a + b) of two feature directions (SAE,
    contrastive) more robust than pure ones (L^p exponent > 2) while random / PCA pairs give
    p ~ 2; and does KL(p(x) || p(x + eps |x| u)) grow faster than eps^2 along any family?"""
    from challenge.studies import error_correction

    report(error_correction.run(library_config(cfg), cfg.track, out=cfg.out, draw=cfg.plot))


@dataclass
class TrainingCommand(TrainingConfig):
    """Issue 33 part 1: train a model with log-spaced checkpoints; plateaus, MLP boundaries and
    local complexity at each."""

    out: Path = Path("runs/studies/training")
    """writes <out>/training_<model>.{json,npz,png}; checkpoints and caches under <out>/<model>/"""
    plot: bool = True
    """also draw training_<model>.png"""


def study_training(cfg: TrainingCommand) -> None:
    """Plateaus over training (the grokking link): train modadd (Nanda et al.'s modular addition)
    or a 2-layer byte LM on CPU with log-spaced checkpoints (step 0 included), then at each the
    plateau radius and P2 sharpness at real vs N(mu, Sigma) points, MLP flips along paths vs
    output jumps, and local complexity; resumes from the checkpoints and caches."""
    from challenge.studies.training import study

    report(study.run(library_config(cfg), out=cfg.out, draw=cfg.plot))


@dataclass
class AtlasCommand(AtlasConfig):
    """The atlas's config, the track, where it writes and where its engine calls run."""

    track: str = DEFAULT_TRACK
    """registered track id or a track directory: its model, prompt windows and read-out"""
    out: Path = Path("runs/atlas")
    """writes <out>/<track>/atlas.{json,npz,png} and the per-layer cells"""
    plot: bool = True
    """also draw atlas.png"""
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    """run the probes on Ray workers (`--workers N`, `--address` for a cluster; same numbers)"""


def atlas(cfg: AtlasCommand) -> None:
    """The plateau atlas of a track's model: P1 (published definitions), AP (the papers'
    protocol), P2 sharpness and the plateau radius, real vs N(mu, Sigma), at a grid of write
    layers, with intervals; resumes from its per-layer cells (docs/atlas.md)."""
    from challenge import atlas as A

    res = A.run(
        library_config(cfg),
        cfg.track,
        out=cfg.out,
        draw=cfg.plot,
        distributed=cfg.distributed,
    )
    print(A.table(res))
    report(res)
