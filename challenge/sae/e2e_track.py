"""The end-to-end SAE of a track: trained on the public prompts at the write point and cached
beside the local SAEs (``<cache>/saes/<track_id>/v<version>/<E2EConfig.name()>/``, SAELens'
layout, with the training checkpoint in ``<that dir>.ckpt/`` while it runs), and its report
(``plateau train-sae --kind e2e``): the SAE spliced in on the held-out and context splits beside
the local TopK SAE with the same dictionary size and k (matched L0)."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from challenge import bootstrap
from challenge.errors import ConfigError
from challenge.results import Result, TrackRef, provenance
from challenge.sae.e2e import E2EConfig, ds_layers, evaluate_e2e, tail_data, train_e2e
from challenge.sae.io import WEIGHTS_FILE, load_sae, save_sae
from challenge.sae.model import SAE
from challenge.schemas import JSON_CONFIG

EVAL_SPLITS = ("heldout", "context")


def track_e2e_dir(track, cfg: E2EConfig) -> Path:
    """The track's e2e SAE with ``cfg``: published with the track, else the local cache."""
    from challenge.sae.track import published_sae_dir, sae_cache_dir

    return published_sae_dir(track, cfg.name()) or sae_cache_dir(track, cfg.name())


def track_e2e_sae(
    track,
    cfg: E2EConfig | None = None,
    *,
    lm=None,
    engine=None,
    train: bool = True,
    progress: bool = True,
) -> SAE:
    """The track's e2e SAE with ``cfg``: loaded from the cache, else trained on the public
    prompts (the first ``cfg.n_train``), saved there and loaded back. An interrupted training
    resumes from its checkpoint."""
    cfg = cfg or E2EConfig()
    d = track_e2e_dir(track, cfg)
    if (d / WEIGHTS_FILE).exists():
        return load_sae(d)
    if not train:
        raise ConfigError(
            f"no e2e SAE at {d}; run `plateau train-sae {track.spec.track_id} --kind {cfg.kind}`",
            field="sae",
        )
    if engine is None:
        from challenge.models import load_model

        engine = track.engine(lm or load_model(track.spec.model), progress=False)
    tokens = track.tokens("public")
    if cfg.n_train is not None:
        if cfg.n_train > len(tokens):
            raise ConfigError(f"the public split has only {len(tokens)} prompts", field="n_train")
        tokens = tokens[: cfg.n_train]
    start = None
    if cfg.init == "local":
        from challenge.sae.track import track_sae

        start = track_sae(track, cfg.local_config(), lm=lm, progress=progress)
    layers = ds_layers(engine.start, engine.model.cfg.n_layers, cfg.ds_every)
    data = tail_data(engine, tokens, layers if cfg.kind == "e2e+ds" else (), progress=progress)
    ckpt = d.with_name(d.name + ".ckpt")
    sae, stats = train_e2e(engine, data, cfg, start=start, checkpoint_dir=ckpt, progress=progress)
    sae.meta["plateau"]["track"] = {"id": track.spec.track_id, "version": track.spec.version}
    sae.meta["plateau"]["stats"]["n_train"] = len(tokens)
    save_sae(sae, d, {"hook_name": track.spec.write_hook, "model_name": track.spec.model.name})
    shutil.rmtree(ckpt, ignore_errors=True)
    return load_sae(d)


@dataclass
class TrackE2EConfig:
    """A track's end-to-end SAE (trained and cached with ``e2e``) and its evaluation beside the
    local TopK SAE at matched L0."""

    __pydantic_config__ = JSON_CONFIG

    e2e: E2EConfig = field(default_factory=E2EConfig)
    """how the e2e SAE is trained"""
    retrain: bool = False
    """train even when a cached e2e SAE with this config exists"""
    compare_local: bool = True
    """also train (cached) and evaluate the local TopK SAE with the same n_latents and k
    (``E2EConfig.local_config``: the public split's last position; the SAE an init-local e2e
    SAE starts from)"""
    local_ks: tuple[int, ...] = (8, 32)
    """with compare_local: also the local TopK SAEs with these k (same n_latents), so that the
    e2e SAE's CE increase can be read against the local SAE's at other L0"""
    eval_rows: int | None = 500
    """evaluate on the first eval_rows of each split (None: all)"""
    results: Path = Path("runs/saes")
    """the summary goes to <results>/<track id>_<e2e config name>.json"""
    out: Path | None = None
    """also save the e2e SAE (SAELens' format) to this directory"""

    def __post_init__(self) -> None:
        self.local_ks = tuple(self.local_ks)
        bad = [k for k in self.local_ks if not 1 <= k <= self.e2e.n_latents]
        if bad:
            raise ConfigError(f"k must be in [1, n_latents], got {bad}", field="local_ks")
        if self.eval_rows is not None and self.eval_rows < 2:
            raise ConfigError(f"must be >= 2 (or None), got {self.eval_rows}", field="eval_rows")


@dataclass
class SpliceEval:
    """An SAE on one split, spliced in at the write point (``challenge.sae.e2e.evaluate_e2e``)."""

    __pydantic_config__ = JSON_CONFIG

    l0: float
    """mean active latents per row"""
    dead_fraction: float
    """latents that never fire on the split"""
    dead_fraction_train: float
    """latents that never fired on the training rows"""
    variance_explained: float
    """1 - SSE / total sum of squares about the split's mean"""
    mse: float
    """squared reconstruction error per row (summed over dimensions)"""
    ce_increase: float
    """mean KL(p(x) || p(SAE(x))) = increase of the cross-entropy against the clean next-token
    distribution when SAE(x) replaces x (nats)"""
    ce_increase_lo: float
    """95% bootstrap interval of ce_increase, lower end"""
    ce_increase_hi: float
    """upper end"""
    ce_clean: float
    """mean entropy H(p(x)) of the clean next-token distribution (nats)"""
    kl_recovered: float
    """1 - ce_increase / (the same with the public mean written instead): the CE-loss score"""
    top1_agree: float
    """fraction of rows whose top-1 token is unchanged"""


@dataclass
class TrackE2EResult(Result):
    """A track's e2e SAE (and the local SAE at matched L0) spliced in on the held-out and
    context splits; ``detail``: training stats (``train``), descriptions (``saes``) and the
    wall time (``seconds``)."""

    __pydantic_config__ = JSON_CONFIG

    config: TrackE2EConfig = field(default_factory=TrackE2EConfig)
    headline: dict[str, dict[str, SpliceEval]] = field(default_factory=dict)
    """SAE (``e2e``, ``local`` at the same k, ``local_k<k>`` at other k) -> split -> evaluation"""


def splice_eval(sae: SAE, engine, track, split: str, rows: int | None) -> tuple[SpliceEval, Any]:
    """:class:`SpliceEval` of ``sae`` on ``split`` (first ``rows``), and the per-row KL."""
    tok, acts = track.tokens(split), track.acts(split)
    if rows is not None:
        tok, acts = tok[:rows], acts[:rows]
    e = evaluate_e2e(sae, engine, tok, acts, mean=track.acts("public").mean(0))
    b = bootstrap.bootstrap(np.mean, np.asarray(e["kl_rows"], np.float64).ravel())
    keys = ("l0", "dead_fraction", "dead_fraction_train", "variance_explained", "mse",
            "ce_clean", "kl_recovered", "top1_agree")  # fmt: skip
    ev = SpliceEval(ce_increase=e["kl"], ce_increase_lo=b.lo, ce_increase_hi=b.hi,
                    **{k: float(e[k]) for k in keys})  # fmt: skip
    return ev, e["kl_rows"]


def track_e2e_report(track, cfg: TrackE2EConfig | None = None, *, lm=None) -> TrackE2EResult:
    """Train (or fetch) the track's e2e SAE and, with ``compare_local``, the local SAE at
    matched L0; evaluate both spliced in; write the summary to ``<results>/``."""
    from challenge.models import load_model
    from challenge.sae.track import describe, track_sae

    cfg = cfg or TrackE2EConfig()
    t0 = time.perf_counter()
    lm = lm or load_model(track.spec.model)
    eng = track.engine(lm, progress=False)
    if cfg.retrain:
        d = track_e2e_dir(track, cfg.e2e)
        shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(d.with_name(d.name + ".ckpt"), ignore_errors=True)
    saes = {"e2e": track_e2e_sae(track, cfg.e2e, lm=lm, engine=eng)}
    if cfg.compare_local:
        saes["local"] = track_sae(track, cfg.e2e.local_config(), lm=lm, progress=False)
        for k in cfg.local_ks:
            if k != cfg.e2e.k:
                lc = replace(cfg.e2e.local_config(), k=k)
                saes[f"local_k{k}"] = track_sae(track, lc, lm=lm, progress=False)
    head: dict[str, dict[str, SpliceEval]] = {}
    arrays = {}
    for name, sae in saes.items():
        head[name] = {}
        for split in EVAL_SPLITS:
            head[name][split], kl = splice_eval(sae, eng, track, split, cfg.eval_rows)
            arrays[f"{name}_{split}_kl"] = np.asarray(kl)
    train = saes["e2e"].meta.get("plateau", {}).get("stats", {})
    res = TrackE2EResult(
        kind="track_e2e_sae",
        config=cfg,
        headline=head,
        detail={
            "saes": {k: describe(s) for k, s in saes.items()},
            "train": {k: v for k, v in train.items() if k != "history"},
            "history": train.get("history", []),
            "seconds": round(time.perf_counter() - t0, 1),
        },
        track=TrackRef.of(track),
        provenance=provenance(lm.provenance | {"engine": eng.describe(),
                                               "torch_threads": torch.get_num_threads()}),
        arrays=arrays,
    )  # fmt: skip
    res.save(cfg.results, f"{track.spec.track_id}_{cfg.e2e.name()}")
    if cfg.out is not None:
        save_sae(saes["e2e"], cfg.out)
    return res
