"""Baseline commands: train-sae, find-features, diagnose-submissions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import tyro

from challenge.cli._common import library_config, report
from challenge.pipeline import TrackSAEConfig
from challenge.studies.feature_finding import FeatureFindingConfig
from challenge.track import DEFAULT_TRACK, resolve_track

Track = Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="TRACK")]


def train_sae(track: Track = DEFAULT_TRACK, /, cfg: TrackSAEConfig = TrackSAEConfig()) -> Path:
    """Train (or fetch) a track's SAE and report variance explained, L0 and dead fraction.

    GPT-2 tracks use the published SAELens SAE at the write hook (`gpt2-small-res-jb`, from the
    hub) unless --no-pretrained; other tracks train a TopK/ReLU SAE on the public prompts (cached
    in $PLATEAU_CACHE/saes/<track>/v<version>/<cfg>/, SAELens' on-disk format). Writes a summary
    JSON to <results>/<track>_<cfg>.json.

    Args:
        track: registered track id or a track directory.
    """
    from challenge.pipeline import track_sae_report

    result = track_sae_report(resolve_track(track), cfg)
    report(result)
    return result.path


@dataclass
class FindFeaturesCommand(FeatureFindingConfig):
    """Find the directions the output is most sensitive to at the write point (Jacobian,
    optimisation) and compare their P3 curves with SAE, PCA and random directions."""

    track: Track = DEFAULT_TRACK
    """registered track id or a track directory"""
    plot_to: Path | None = None
    """also draw the plot here (e.g. docs/img/feature_finding.png)"""


def find_features(cfg: FindFeaturesCommand) -> Path:
    """Find the directions the output is most sensitive to at the write point (Jacobian,
    optimisation) and compare their P3 curves with SAE, PCA and random directions.

    Writes <out>/<track>_feature_finding.json (+ .npz, .png, .md table).
    """
    from challenge.studies import feature_finding

    result = feature_finding.run(library_config(cfg))
    if cfg.plot_to is not None:
        feature_finding.plot(result, cfg.plot_to)
    report(result)
    return result.path


def diagnose_submissions(
    track: Track = DEFAULT_TRACK,
    /,
    submissions: Path | None = None,
    out: Path = Path("runs/baselines"),
) -> Path:
    """Where each submission's rows sit: norm, distance to the nearest public real activation and
    to the nearest last-token mean, fraction inside a real last-token cluster.

    Args:
        track: registered track id or a track directory.
        submissions: folder of submission folders (default: submissions/<track id>).
        out: writes <out>/<track id>_placement.json.
    """
    from baselines.diagnostics import run

    result = run(resolve_track(track), submissions, out)
    report(result)
    return result.path
