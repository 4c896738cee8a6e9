"""Baseline commands: train-sae, find-features, diagnose-submissions."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Annotated, Literal

import tyro

from challenge.cli._common import library_config, report
from challenge.pipeline import TrackSAEConfig
from challenge.sae import SAEConfig
from challenge.sae.e2e import E2EConfig
from challenge.studies.feature_finding import FeatureFindingConfig
from challenge.track import DEFAULT_TRACK, resolve_track

Track = Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="TRACK")]


@dataclass
class SAEFlags(SAEConfig):
    """How the SAE is trained: a local TopK / ReLU SAE (``SAEConfig``) or an end-to-end TopK SAE
    (``challenge.sae.e2e.E2EConfig``); flags left unset take the chosen kind's defaults."""

    kind: Literal["topk", "relu", "e2e", "e2e+ds"] = "topk"
    """topk / relu: local SAE (reconstruction MSE); e2e: TopK SAE trained on KL(p(x) || p(SAE(x)))
    through the layers after the write point; e2e+ds: plus downstream residual terms"""
    n_latents: int | None = None  # type: ignore[assignment]
    """dictionary size (default: 4096 local, E2EConfig's for e2e)"""
    k: int | None = None  # type: ignore[assignment]
    """topk: active latents per input (default: 32 local, E2EConfig's for e2e)"""
    lr: float | None = None  # type: ignore[assignment]
    """Adam learning rate (default: 1e-3)"""
    steps: int | None = None  # type: ignore[assignment]
    """optimiser steps (default: 1000 local, E2EConfig's for e2e)"""
    batch: int | None = None  # type: ignore[assignment]
    """rows per step (default: 256 local, E2EConfig's for e2e)"""
    ds_every: int | None = None
    """e2e+ds: a downstream term after every ds_every-th block after the write point, and the last"""
    ds_coef: float | None = None
    """e2e+ds: weight of the mean normalised downstream MSE"""
    checkpoint_every: int | None = None
    """e2e: steps between checkpoints of a resumable run"""
    n_train: int | None = None
    """e2e: train on the first n_train public prompts (default: E2EConfig's)"""
    eval_rows: int | None = None
    """e2e: evaluate on the first eval_rows of the held-out and context splits (default: 500)"""
    compare_local: bool = True
    """e2e: also train and evaluate the local TopK SAE with the same n_latents and k (matched L0)"""
    local_ks: tuple[int, ...] = (8, 32)
    """e2e: also evaluate the local TopK SAEs with these k (same n_latents)"""
    init: Literal["local", "random"] | None = None
    """e2e: start from the local SAE (e2e fine-tuning) or at random (Braun et al.)"""
    local_steps: int | None = None
    """e2e: optimiser steps of the local SAE it starts from / is compared with"""

    def __post_init__(self) -> None:  # each library config validates when built
        pass

    def given(self, cls: type) -> dict:
        """The fields of ``cls`` that were set (not None), as its constructor's arguments."""
        names = {f.name for f in fields(cls)}
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name in names and getattr(self, f.name) is not None
        }

    def local(self) -> SAEConfig:
        for name in ("ds_every", "ds_coef", "checkpoint_every", "n_train", "eval_rows", "init",
                     "local_steps"):  # fmt: skip
            if getattr(self, name) is not None:
                from challenge.errors import ConfigError

                raise ConfigError("applies to --kind e2e / e2e+ds only", field=name)
        return SAEConfig(**self.given(SAEConfig))

    def e2e(self) -> E2EConfig:
        for name in ("l1", "aux_k", "aux_coef", "dead_after", "positions"):
            if getattr(self, name) != getattr(SAEConfig, name):
                from challenge.errors import ConfigError

                raise ConfigError(f"does not apply to --kind {self.kind}", field=name)
        return E2EConfig(**self.given(E2EConfig))


@dataclass
class TrainSAECommand(TrackSAEConfig):
    """A track's SAE: which, how it is trained and where its summary goes."""

    sae: SAEFlags = field(default_factory=SAEFlags)  # type: ignore[assignment]
    """how the SAE is trained (unused for a published SAE)"""


def train_sae(track: Track = DEFAULT_TRACK, /, cfg: TrainSAECommand = TrainSAECommand()) -> Path:
    """Train (or fetch) a track's SAE and report variance explained, L0 and dead fraction.

    GPT-2 tracks use the published SAELens SAE at the write hook (`gpt2-small-res-jb`, from the
    hub) unless --no-pretrained; other tracks train a TopK/ReLU SAE on the public prompts (cached
    in $PLATEAU_CACHE/saes/<track>/v<version>/<cfg>/, SAELens' on-disk format). Writes a summary
    JSON to <results>/<track>_<cfg>.json.

    --kind e2e / e2e+ds trains an end-to-end TopK SAE (Braun et al. 2024) on the public prompts
    through the layers after the write point (same cache and format; resumable checkpoints) and
    reports it spliced in (CE increase, L0, dead fraction, variance explained) on the held-out
    and context splits beside the local TopK SAE with the same n_latents and k.

    Args:
        track: registered track id or a track directory.
    """
    from challenge.pipeline import track_sae_report

    tr = resolve_track(track)
    flags = cfg.sae
    if flags.kind in ("e2e", "e2e+ds"):
        from challenge.sae.e2e_track import TrackE2EConfig, track_e2e_report

        e2e_cfg = TrackE2EConfig(
            e2e=flags.e2e(),
            retrain=cfg.retrain,
            compare_local=flags.compare_local,
            local_ks=flags.local_ks,
            **({"eval_rows": flags.eval_rows} if flags.eval_rows is not None else {}),
            results=cfg.results,
            out=cfg.out,
        )
        result = track_e2e_report(tr, e2e_cfg)
    else:
        lib = TrackSAEConfig(**{f.name: getattr(cfg, f.name) for f in fields(TrackSAEConfig)})
        lib.sae = flags.local()
        result = track_sae_report(tr, lib)
    report(result)
    return result.path


@dataclass
class FindFeaturesCommand(FeatureFindingConfig):
    """Find the directions the output is most sensitive to at the write point (Jacobian,
    optimisation) and compare their P3 curves with SAE, PCA and random directions."""

    track: Track = DEFAULT_TRACK
    """registered track id or a track directory"""
    out: Path = Path("runs/feature_finding")
    """folder of <track id>_feature_finding.{json,npz,png,md}"""
    plot: bool = True
    """also draw the PNG"""
    plot_to: Path | None = None
    """also draw the plot here (e.g. docs/img/feature_finding.png)"""


def find_features(cfg: FindFeaturesCommand) -> Path:
    """Find the directions the output is most sensitive to at the write point (Jacobian,
    optimisation) and compare their P3 curves with SAE, PCA and random directions.

    Writes <out>/<track>_feature_finding.json (+ .npz, .png, .md table).
    """
    from challenge.studies import feature_finding

    result = feature_finding.run(library_config(cfg), cfg.track, out=cfg.out, draw=cfg.plot)
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
