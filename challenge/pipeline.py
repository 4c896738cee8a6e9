"""The suite's jobs, each composed of library steps and writing its outputs: the main job (every
generator -> submission -> record (``challenge.scoring``) -> leaderboard, on one track) and a
track's SAE with its evaluation.

``run_main`` takes the generator registry as an argument (the CLI passes
``baselines.generators.GENERATORS``), so the library never imports the baselines.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from challenge.access import generator_access
from challenge.distributed import DistributedConfig, resumable
from challenge.errors import ChallengeError, ConfigError
from challenge.progress import duration, entry_line
from challenge.results import Result, TrackRef, provenance
from challenge.sae import SAEConfig
from challenge.scoring import BOARD_ROOT, ScoreConfig, record
from challenge.scoring.board import render
from challenge.submission import Generator, generate
from challenge.track import TrackLike

log = logging.getLogger("main")


@dataclass
class MainConfig:
    """The main job: generate and submit every baseline generator, render the leaderboard."""

    only: tuple[str, ...] = ()
    """a subset of generator names (default: all, in registry order)"""
    score: ScoreConfig = field(default_factory=ScoreConfig)
    """how every submission is scored"""
    generate_seed: int = 0
    """seed of every generator's sample"""
    submissions: Path = Path("submissions")
    """root of submission folders; writes <submissions>/<track id>/<generator>/"""
    board: Path = BOARD_ROOT
    """leaderboard root; reports go to <board>/<track id>/"""

    def __post_init__(self) -> None:
        if len(set(self.only)) != len(self.only):
            raise ConfigError(f"repeated generator names {list(self.only)}", field="only")


@dataclass
class MainEntry:
    """One generator's outcome: its headline numbers, or why it was refused."""

    score: float | None = None
    ci: tuple[float, float] | None = None
    mean_ks: float | None = None
    refused: str | None = None
    seconds: float = 0.0


@dataclass
class MainResult(Result):
    """What the main job did; ``path`` is the rendered ``index.html``, ``detail['rows']`` the
    leaderboard rows."""

    config: MainConfig = field(default_factory=MainConfig)
    headline: dict[str, MainEntry] = field(default_factory=dict)


def run_main(
    track: TrackLike,
    generators: dict[str, Callable[[], Generator]],
    cfg: MainConfig | None = None,
    *,
    lm: Any = None,
    distributed: DistributedConfig | None = None,
) -> MainResult:
    """Generate and submit every generator of ``generators`` (or ``cfg.only``) on ``track``, in
    that order, then render ``<board>/<track id>/``. A refused submission is logged and skipped.

    Each generator runs with only the access it declares (``challenge.access.guarded``; the
    track's SAE is prepared first when one declares ``sae``), and its record's board section
    follows from that declaration; the job replaces its own earlier records.

    ``distributed``: every entry's probes run on those workers
    (``challenge.distributed_engine``; the same records); an interrupted job rerun with the same
    config reads back the engine chunks it had finished, for every entry, until the whole job
    completes.

    Logs (``main``) a line as each entry starts and finishes: entry i of n, the time elapsed and
    the time left estimated from the entries done so far (``challenge.progress``)."""
    from challenge.models import load_model

    cfg = cfg or MainConfig()
    names = list(cfg.only) or list(generators)
    unknown = [n for n in names if n not in generators]
    if unknown:
        raise ConfigError(
            f"unknown generators {unknown}; known: {sorted(generators)}", field="only"
        )
    lm = lm if lm is not None else load_model(track.spec.model)
    t0 = time.perf_counter()
    made = {name: generators[name]() for name in names}
    if any({"sae", "statistics"} & set(getattr(g, "access", ())) for g in made.values()):
        from challenge.sae import track_sae

        track_sae(track, lm=lm)  # the organiser's SAE (and the artifact's), ready-made
    entries: dict[str, MainEntry] = {}
    done: list[float] = []  # seconds of each finished entry: the progress line's time left
    with resumable(distributed, "main", track.manifest_sha256 or "unknown", cfg, names):
        for i, name in enumerate(names, 1):
            t1 = time.perf_counter()
            log.info(entry_line(i, len(names), name, "starting", t1 - t0, done))
            try:  # the board is rendered once, after every entry is scored: until then it may
                # mix records of this run with older ones, which it refuses to rank together
                gen = made[name]
                path = generate(gen, track, lm, seed=cfg.generate_seed, out_root=cfg.submissions)
                head = record(
                    path,
                    track,
                    lm,
                    cfg.score,
                    cfg.board,
                    access=generator_access(gen),
                    replace=True,
                    distributed=distributed,
                ).headline
                entry = MainEntry(score=head.score, ci=head.ci, mean_ks=head.mean_ks)
                log.info(
                    f"{name}: score {head.score:.3f} [{head.ci[0]:.3f}, {head.ci[1]:.3f}], "
                    f"mean KS {head.mean_ks:.3f}"
                )
            except ChallengeError as e:
                entry = MainEntry(refused=str(e))
                log.warning(f"{name} refused: {e}")
            t2 = time.perf_counter()
            entry.seconds = round(t2 - t1, 1)
            done.append(t2 - t1)
            event = f"{'refused after' if entry.refused else 'scored in'} {duration(t2 - t1)}"
            log.info(entry_line(i, len(names), name, event, t2 - t0, done))
            entries[name] = entry
    rows = render(track.spec.track_id, cfg.board)
    index = Path(cfg.board) / track.spec.track_id / "index.html"
    log.info(f"done in {time.perf_counter() - t0:.0f} s; open {index}")
    return MainResult(
        kind="main",
        config=cfg,
        headline=entries,
        detail={"rows": rows, "seconds": round(time.perf_counter() - t0, 1)},
        track=TrackRef.of(track),
        path=index,
    )


# ---------------------------------------------------------------------------- the track's SAE
@dataclass
class TrackSAEConfig:
    """A track's SAE (trained and cached with ``sae``, or the published one) and its evaluation
    on every split."""

    sae: SAEConfig = field(default_factory=SAEConfig)
    """how the SAE is trained (unused for a published SAE)"""
    retrain: bool = False
    """train even when a cached SAE with this config exists"""
    pretrained: bool = True
    """for GPT-2 tracks, use the published SAE (SAELens ``gpt2-small-res-jb``) instead of
    training one"""
    results: Path = Path("runs/saes")
    """the summary goes to <results>/<track id>_<config name, or "pretrained">.json"""
    out: Path | None = None
    """also save the SAE (SAELens' format) to this directory"""


@dataclass
class SplitEval:
    """An SAE on one split of the track (``challenge.sae.evaluate_sae``)."""

    variance_explained: float
    l0: float
    """mean active latents per row"""
    dead_fraction: float
    """latents that never fire on the split"""
    dead_fraction_train: float
    """latents dead by the SAE's stored training-set sparsity"""


@dataclass
class TrackSAEResult(Result):
    """A track's SAE evaluated on every split; ``detail``: the full ``eval`` per split, the SAE's
    description (``sae``) and the wall time (``seconds``)."""

    config: TrackSAEConfig = field(default_factory=TrackSAEConfig)
    headline: dict[str, SplitEval] = field(default_factory=dict)


def track_sae_report(
    track: TrackLike, cfg: TrackSAEConfig | None = None, *, lm: Any = None
) -> TrackSAEResult:
    """Train (or fetch) the track's SAE (``challenge.sae.track_sae``), evaluate it on the public,
    held-out and context splits and write the summary to ``<results>/``."""
    from challenge.sae import (
        TRACK_RELEASES,
        describe,
        evaluate_sae,
        save_sae,
        track_sae,
        track_sae_dir,
    )
    from challenge.track import SPLITS

    cfg = cfg or TrackSAEConfig()
    t0 = time.perf_counter()
    published = cfg.pretrained and track.spec.model.name in TRACK_RELEASES
    if cfg.retrain and not published:
        shutil.rmtree(track_sae_dir(track, cfg.sae), ignore_errors=True)
    sae = track_sae(track, None if published else cfg.sae, lm=lm)
    evals = {s: evaluate_sae(sae, track.acts(s)) for s in SPLITS}
    res = TrackSAEResult(
        kind="track_sae",
        config=cfg,
        headline={
            s: SplitEval(**{k: e[k] for k in SplitEval.__dataclass_fields__})
            for s, e in evals.items()
        },
        detail={
            "eval": evals,
            "sae": describe(sae),
            "seconds": round(time.perf_counter() - t0, 1),
        },
        track=TrackRef.of(track),
        provenance=provenance(),
    )
    res.save(cfg.results, f"{track.spec.track_id}_{'pretrained' if published else cfg.sae.name()}")
    if cfg.out is not None:
        save_sae(sae, cfg.out)
    return res
