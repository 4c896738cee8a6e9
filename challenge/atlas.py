"""The plateau atlas: where do plateaus live, across models and write layers?

For one model (a track gives the model, its prompts and its read-out) and a grid of write
layers ``blocks.L.hook_resid_pre`` (last position), two groups of points are probed in the same
slots (context prompt, radius directions, AP end): held-out **real** activations at layer ``L``
and **N(mu, Sigma)** samples of the public split's activations at ``L``. Probes (the scorer's,
``challenge.probes``, and P1 with the papers' definitions, ``protocols.p1_published_probe``),
all in the layer's scale-free units (``track.measure_units`` at that layer):

- ``p1.ms_l2``, ``p1.ms_kl``: P1 relative scheme, published definitions (their paths, MS on the
  raw curve; the L2 slope threshold rescaled by ``plateau_distance / 20``, the KL one 0.02 nats):
  from the context's own activation toward the tested point (the curves are kept in the cell);
- ``ap.plateau_length``: the papers' AP experiment (the tested point moved toward a fresh
  N(mu, Sigma) sample in steps of ``write_distance_median / 100``; first step with read-out L2
  >= 0.2 x ``read_distance_median``, cut at the target step);
- ``p2.sharpness_l2``, ``p2.sharpness_kl``: P2 sharpness of the path to the nearest public row;
- ``radius.mean_log`` / ``min_log`` / ``max_log``: log plateau radius (KL 0.1) along random
  directions, in units of the median write norm.

Per layer and feature: both groups' mean, sd and median, the mean difference real - random and
the AUC P(real > random), each with a 95 % bootstrap interval over points; the **separation**
``|2 AUC - 1|`` averaged over the primary features (one per probe). Every layer's features are
cached as a cell (``<out>/<track>/cells/``), so an interrupted atlas resumes where it stopped.

    plateau atlas --track smollm2-135m-l1 --layers 1 5 9 13 17 21 25 29
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from jaxtyping import Float
from torch import Tensor

from challenge import bootstrap, checks, hooks, rng
from challenge import metrics as M
from challenge.directions import ActivationStats, gaussian_like
from challenge.engine import EngineConfig, PerturbationEngine
from challenge.errors import ConfigError
from challenge.metrics import auc
from challenge.probes import ProbeConfig, Slots, run_probes, unit_directions
from challenge.protocols import P1Config, p1_published_probe, resolve_p1
from challenge.results import Result, TrackRef, _atomic_write, provenance
from challenge.schemas import JSON_CONFIG
from challenge.studies._common import StudyEnv, as_env, corr, resid_pre_all
from challenge.track import measure_units

NAME = "atlas"
GROUPS = ("real", "random")
PRIMARY = ("p1.ms_kl", "ap.plateau_length", "p2.sharpness_kl", "radius.mean_log")
"""One feature per probe: the atlas's separation is the mean of their ``|2 AUC - 1|``."""
CELL_VERSION = 2
"""2: the KL slope threshold of ``p1.ms_kl`` is 0.02 nats (version 1 rescaled it like the L2 one)
and the cell keeps the P1 curves."""
P1_ONLY_CHANGED = (1,)
"""Cell versions whose features other than ``p1.*`` are still valid: :func:`run` upgrades such a
cell by re-running P1 alone."""


@dataclass
class AtlasConfig:
    """The plateau atlas of one model: real vs N(mu, Sigma) probes at a grid of write layers."""

    __pydantic_config__ = JSON_CONFIG

    layers: tuple[int, ...] = ()
    """write layers (``blocks.L.hook_resid_pre``); empty = ``range(1, n_layers, layer_stride)``
    plus the last layer"""
    layer_stride: int = 4
    """with no layers given: every ``layer_stride``-th layer from 1"""
    n_points: int = 64
    """points per group and layer (real held-out rows; as many N(mu, Sigma) samples)"""
    n_stats: int = 2000
    """public rows for mu, Sigma and the nearest-neighbour set of P2, at each layer"""
    n_directions: int = 6
    """radius: random directions per point (the scorer's default)"""
    bisect_steps: int = 7
    """radius: bisection rounds (the scorer's default)"""
    p1_steps: int = 100
    """P1 (published): points on ``linspace(0, 1)`` from the context's activation to the point"""
    n_boot: int = 1000
    """bootstrap resamples of the points (intervals)"""
    seed: int = 0
    """run seed: the ``atlas.*`` streams of ``challenge.rng`` (the same draws at every layer)"""

    def __post_init__(self) -> None:
        checks.sequence(self.layers, "layers")
        self.layers = tuple(int(x) for x in self.layers)
        for x in self.layers:
            checks.integer(x, "layers", minimum=0)
        checks.integer(self.layer_stride, "layer_stride", minimum=1)
        checks.integer(self.n_points, "n_points", minimum=4)
        checks.integer(self.n_stats, "n_stats", minimum=2)
        checks.integer(self.n_directions, "n_directions", minimum=1)
        checks.integer(self.bisect_steps, "bisect_steps", minimum=1)
        checks.integer(self.p1_steps, "p1_steps", minimum=11)
        checks.integer(self.n_boot, "n_boot", minimum=10)
        checks.integer(self.seed, "seed", minimum=0)

    def probes(self) -> ProbeConfig:
        return ProbeConfig(
            probes=("radius", "ap", "p2"),
            n_directions=self.n_directions,
            bisect_steps=self.bisect_steps,
        )

    def p1(self) -> P1Config:
        return P1Config(
            scheme="relative", units="scale_free", definitions="published", n_steps=self.p1_steps
        )

    def cell_key(self, version: int = CELL_VERSION) -> str:
        """What a cached cell depends on (not the layer grid, the bootstrap or the output)."""
        keys = ("n_points", "n_stats", "n_directions", "bisect_steps", "p1_steps", "seed")
        doc = {k: getattr(self, k) for k in keys} | {"v": version}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:12]


def layer_grid(cfg: AtlasConfig, n_layers: int) -> list[int]:
    """The configured layers, or every ``layer_stride``-th from 1 plus the last."""
    if cfg.layers:
        bad = [x for x in cfg.layers if not 0 <= x < n_layers]
        if bad:
            raise ConfigError(f"layers {bad} outside 0..{n_layers - 1}", field="layers")
        return sorted(set(cfg.layers))
    return sorted(set(range(1, n_layers, cfg.layer_stride)) | {n_layers - 1})


# ------------------------------------------------------------------------------ one cell
@dataclass
class CellInputs:
    """What a layer's probes need: the slots' tokens and the activations at that layer."""

    tokens: Tensor  # [n, T] context prompts of the slots
    context: Float[Tensor, "n d"]  # their own activations
    real: Float[Tensor, "n d"]  # held-out rows tested
    public: Float[Tensor, "m d"]  # mu, Sigma and P2's nearest-neighbour set
    unit_tokens: Tensor  # [k, T] prompts of the units' real-to-real paths
    unit_acts: Float[Tensor, "k d"]


def tested_groups(x: CellInputs, cfg: AtlasConfig) -> dict[str, Float[Tensor, "n d"]]:
    """The points a cell tests: the held-out real rows and as many N(mu, Sigma) samples."""
    stats = ActivationStats.fit(x.public)
    n = len(x.real)
    return {
        "real": x.real,
        "random": gaussian_like(stats, n, rng.generator(cfg.seed, "atlas.random")),
    }


def run_cell(engine: PerturbationEngine, x: CellInputs, cfg: AtlasConfig) -> dict[str, np.ndarray]:
    """Every probe's features for both groups at the engine's write layer:
    ``{"<group>/<feature>": [n]}``, ``units/<name>`` scalars and the P1 curves
    (``curves/<group>/{l2,kl,target_step}``)."""
    units = measure_units(engine, x.unit_tokens, x.unit_acts)
    n, d = x.real.shape
    stats = ActivationStats.fit(x.public)
    slots = Slots(
        tokens=x.tokens,
        context_acts=x.context,
        dirs=unit_directions(n, cfg.n_directions, d, rng.generator(cfg.seed, "atlas.directions")),
        ap_ends=gaussian_like(stats, n, rng.generator(cfg.seed, "atlas.ap_ends")),
    )
    groups = tested_groups(x, cfg)
    out: dict[str, np.ndarray] = {f"units/{k}": np.asarray(v) for k, v in units.items()}
    for g, pts in groups.items():
        feats = run_probes(engine, pts, slots, x.public, units, cfg.probes())
        out |= {f"{g}/{k}": np.asarray(v, dtype=np.float64) for k, v in feats.items()}
    return out | run_p1_cell(engine, x, groups, cfg, units)


def run_p1_cell(
    engine: PerturbationEngine,
    x: CellInputs,
    groups: dict[str, Float[Tensor, "n d"]],
    cfg: AtlasConfig,
    units: dict[str, float],
) -> dict[str, np.ndarray]:
    """The P1 part of a cell (published definitions, the layer's scale-free units): per group of
    :func:`tested_groups` ``p1.ms_l2`` / ``p1.ms_kl`` and the curves they were read from."""
    p1cfg = cfg.p1()
    r = resolve_p1(p1cfg, units)
    out: dict[str, np.ndarray] = {}
    for g, pts in groups.items():
        curves, p1f, extra = p1_published_probe(
            engine, x.tokens, x.context, pts, None, p1cfg, r, desc=f"P1 {g}"
        )
        out |= {f"{g}/p1.ms_l2": p1f["ms_l2"], f"{g}/p1.ms_kl": p1f["ms_kl"]}
        out |= {
            f"curves/{g}/l2": curves.l2,
            f"curves/{g}/kl": curves.kl,
            f"curves/{g}/target_step": extra["target_step"],
        }
    return out


def upgrade_cell(
    engine: PerturbationEngine, old: dict[str, np.ndarray], x: CellInputs, cfg: AtlasConfig
) -> dict[str, np.ndarray]:
    """A cell of a version in :data:`P1_ONLY_CHANGED` brought to :data:`CELL_VERSION`: its
    other probes' features kept, P1 re-run in the units the cell measured."""
    units = {k.split("/", 1)[1]: float(v) for k, v in old.items() if k.startswith("units/")}
    kept = {k: v for k, v in old.items() if not k.split("/")[-1].startswith("p1.")}
    return kept | run_p1_cell(engine, x, tested_groups(x, cfg), cfg, units)


# ------------------------------------------------------------------------------ summaries
def contrast(
    real: np.ndarray, rand: np.ndarray, boot: tuple[np.ndarray, np.ndarray]
) -> dict[str, float | list[float]]:
    """Both groups' summaries, mean difference real - random and AUC P(real > random), with
    95 % percentile intervals over the bootstrap indices ``boot`` (``[B, n]`` each)."""
    br, bg = boot
    diffs = np.nanmean(real[br], 1) - np.nanmean(rand[bg], 1)
    aucs = np.array([auc(rand[j], real[i]) for i, j in zip(br, bg, strict=True)])

    def ci(v):
        return list(bootstrap.interval(v))

    return {
        "real_mean": float(np.nanmean(real)),
        "real_sd": float(np.nanstd(real)),
        "real_median": float(np.nanmedian(real)),
        "random_mean": float(np.nanmean(rand)),
        "random_sd": float(np.nanstd(rand)),
        "random_median": float(np.nanmedian(rand)),
        "diff": float(np.nanmean(real) - np.nanmean(rand)),
        "diff_ci": ci(diffs),
        "auc": auc(rand, real),
        "auc_ci": ci(aucs),
        "separation": abs(2 * auc(rand, real) - 1),
        "separation_ci": ci(np.abs(2 * aucs - 1)),
        "ks": M.ks_statistic(real[np.isfinite(real)], rand[np.isfinite(rand)]),
        "n_finite": [int(np.isfinite(real).sum()), int(np.isfinite(rand).sum())],
        "_boot_sep": np.abs(2 * aucs - 1),
    }


def summarise_layer(cell: dict[str, np.ndarray], cfg: AtlasConfig, layer: int) -> dict:
    """A layer's row of the atlas: per-feature contrasts and the mean separation of
    :data:`PRIMARY` with its interval (the same bootstrap indices for every feature)."""
    g = bootstrap.generator(rng.seed_for(cfg.seed, "atlas.bootstrap", layer))
    n = len(cell["real/radius.mean_log"])
    boot = (bootstrap.resample(n, cfg.n_boot, g), bootstrap.resample(n, cfg.n_boot, g))
    names = sorted(k.split("/", 1)[1] for k in cell if k.startswith("real/"))
    feats = {f: contrast(cell[f"real/{f}"], cell[f"random/{f}"], boot) for f in names}
    sep = np.mean([feats[f]["_boot_sep"] for f in PRIMARY], axis=0)
    for f in feats.values():
        f.pop("_boot_sep")
    units = {k.split("/", 1)[1]: float(v) for k, v in cell.items() if k.startswith("units/")}
    return {
        "layer": layer,
        "hook": hooks.resid_pre(layer),
        "units": units,
        "features": feats,
        "separation": float(np.mean([feats[f]["separation"] for f in PRIMARY])),
        "separation_ci": list(bootstrap.interval(sep)),
    }


def _holds(c: dict, sign: int) -> bool | None:
    """True when the difference's interval lies on ``sign``'s side of 0, False on the other,
    None when it contains 0."""
    lo, hi = c["diff_ci"]
    if lo > 0 or hi < 0:
        return (lo > 0) == (sign > 0)
    return None


def answers(rows: list[dict]) -> dict:
    """The atlas's questions, read off its rows: the best layers, the GPT-2 pattern (real MS
    earlier than random, real AP longer) per layer, and the trend of real sharpness with depth."""
    best = max(rows, key=lambda r: r["separation"])
    tied = [
        r["layer"] for r in rows if r["separation_ci"][1] >= best["separation_ci"][0]
    ]  # layers whose interval reaches the best one's
    gpt2 = {
        r["layer"]: {
            "ms_kl_earlier": _holds(r["features"]["p1.ms_kl"], -1),
            "ms_l2_earlier": _holds(r["features"]["p1.ms_l2"], -1),
            "ap_longer": _holds(r["features"]["ap.plateau_length"], +1),
        }
        for r in rows
    }
    layers = [r["layer"] for r in rows]
    trend = {
        f: corr(np.array(layers), np.array([r["features"][f]["real_median"] for r in rows]))
        for f in ("p2.sharpness_kl", "p2.sharpness_l2", "radius.mean_log")
    }
    return {
        "best_layer": best["layer"],
        "best_separation": best["separation"],
        "layers_tied_with_best": tied,
        "gpt2_pattern": gpt2,
        "depth_trend_spearman": trend,
    }


# ------------------------------------------------------------------------------ result
@dataclass
class AtlasHeadline:
    """The atlas's numbers to cite."""

    __pydantic_config__ = JSON_CONFIG

    model: str
    best_layer: int
    """write layer with the largest mean separation of the primary features"""
    layers_tied_with_best: list[int]
    """layers whose separation interval reaches the best layer's interval"""
    separation: dict[int, float] = field(default_factory=dict)
    """per write layer: mean ``|2 AUC - 1|`` of ``p1.ms_kl``, ``ap.plateau_length``,
    ``p2.sharpness_kl``, ``radius.mean_log`` (0 = real and N(mu, Sigma) alike)"""


@dataclass
class AtlasResult(Result):
    """The atlas; ``detail`` holds ``rows`` (one per layer), ``answers``, ``engines``."""

    __pydantic_config__ = JSON_CONFIG

    kind: Literal["atlas"]
    config: AtlasConfig
    headline: AtlasHeadline


# ------------------------------------------------------------------------------ driver
def _cell_path(
    out: Path, cfg: AtlasConfig, track_id: str, layer: int, version: int = CELL_VERSION
) -> Path:
    return Path(out) / track_id / "cells" / f"L{layer:02d}-{cfg.cell_key(version)}.npz"


def _old_cell(out: Path, cfg: AtlasConfig, track_id: str, layer: int) -> Path | None:
    """A cached cell of a version :func:`upgrade_cell` can bring up to date, if any."""
    found = (_cell_path(out, cfg, track_id, layer, v) for v in P1_ONLY_CHANGED)
    return next((p for p in found if p.exists()), None)


def _save_cell(path: Path, cell: dict[str, np.ndarray]) -> None:
    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **cell)

    _atomic_write(path, write)


def cell_inputs(track, model, layers: list[int], cfg: AtlasConfig) -> dict[int, CellInputs]:
    """The track's prompt windows and their clean activations at every layer of the grid (one
    forward pass per split and batch): slots, tested held-out rows, public rows, units' pairs."""
    n = cfg.n_points
    held, ctx = track.tokens("heldout"), track.tokens("context")
    if len(held) < n or len(ctx) < n:
        raise ConfigError(
            f"the track has {len(held)} held-out and {len(ctx)} context rows; n_points={n}",
            field="n_points",
        )
    rows = rng.subset(len(held), n, cfg.seed, "atlas.rows")
    slots = rng.subset(len(ctx), n, cfg.seed, "atlas.contexts")
    pub = track.tokens("public")[: cfg.n_stats]
    a_held = resid_pre_all(model, held[rows], layers)
    a_ctx = resid_pre_all(model, ctx, layers)
    a_pub = resid_pre_all(model, pub, layers)
    return {
        L: CellInputs(ctx[slots], a_ctx[L][slots], a_held[L], a_pub[L], ctx, a_ctx[L])
        for L in layers
    }


def run(
    cfg: AtlasConfig,
    env: StudyEnv | str | Path,
    *,
    out: Path,
    draw: bool = True,
    distributed=None,
) -> AtlasResult:
    """Probe every layer of the grid on ``env`` (a ``StudyEnv``, or a track id / directory to
    load; its model, prompt windows and read-out), cells cached and reused under
    ``<out>/<track id>/cells/``, summarise, save ``<out>/<track id>/atlas.{json,npz}`` and, when
    ``draw``, ``atlas.png``. ``distributed`` (``challenge.distributed.DistributedConfig``): every
    engine call's chunks run on Ray workers (``challenge.distributed_engine``; the same
    numbers)."""
    from tqdm.auto import tqdm

    from challenge.distributed_engine import distribute

    env = as_env(env)
    tr, lm = env.track, env.lm
    model = lm.model
    layers = layer_grid(cfg, model.cfg.n_layers)
    tid = tr.spec.track_id
    todo = [L for L in layers if not _cell_path(out, cfg, tid, L).exists()]
    inputs = cell_inputs(tr, model, todo, cfg) if todo else {}
    old = {L: p for L in todo if (p := _old_cell(out, cfg, tid, L)) is not None}
    cells, engines, secs = {}, {}, {}
    for L in tqdm(layers, desc=f"atlas {lm.provenance.get('model', tid)}"):
        eng = PerturbationEngine(
            model,
            EngineConfig(
                write_hook=hooks.resid_pre(L), read_hook=tr.spec.read_hook, progress=False
            ),
        )
        engines[L] = eng.describe()
        eng = distribute(eng, tr.spec.model, distributed)
        path = _cell_path(out, cfg, tid, L)
        if L in inputs:
            t0 = time.perf_counter()
            if L in old:  # only P1 changed since that cell was written
                with np.load(old[L]) as z:
                    cell = upgrade_cell(eng, {k: z[k] for k in z.files}, inputs.pop(L), cfg)
                secs[L] = float(cell["seconds"])  # the probes' cost, as first measured
                cell["seconds_upgrade"] = np.asarray(round(time.perf_counter() - t0, 1))
            else:
                cell = run_cell(eng, inputs.pop(L), cfg)
                secs[L] = round(time.perf_counter() - t0, 1)
                cell["seconds"] = np.asarray(secs[L])
            _save_cell(path, cell)
            cells[L] = cell
        else:
            with np.load(path) as z:
                cells[L] = {k: z[k] for k in z.files}
        secs.setdefault(L, float(cells[L].get("seconds", np.nan)))
    rows = [summarise_layer(cells[L], cfg, L) for L in layers]
    doc = {"rows": rows, "answers": answers(rows), "engines": engines, "cell_seconds": secs}
    model_name = tr.spec.model.name
    head = AtlasHeadline(
        model=model_name,
        best_layer=doc["answers"]["best_layer"],
        layers_tied_with_best=doc["answers"]["layers_tied_with_best"],
        separation={r["layer"]: r["separation"] for r in rows},
    )
    arrays = {f"L{L}/{k}": v for L, c in cells.items() for k, v in c.items() if "/" in k}
    res = AtlasResult(
        kind="atlas",
        config=cfg,
        headline=head,
        detail=doc,
        track=TrackRef.of(tr),
        provenance=provenance({**lm.provenance, "read_hook": tr.spec.read_hook}),
        arrays=arrays,
    )
    folder = Path(out) / tid
    res.save(folder, NAME)
    if draw:
        plot(res, folder / f"{NAME}.png")
    return res


def plot(res: AtlasResult, path: Path) -> Path:
    """AUC P(real > random) per feature against the write layer (with intervals), and the two
    groups' means of the primary features."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = res.detail["rows"]
    layers = [r["layer"] for r in rows]
    fig, axes = plt.subplots(1, 5, figsize=(22, 4.2))
    ax = axes[0]
    for f in PRIMARY:
        a = np.array([r["features"][f]["auc"] for r in rows])
        ci = np.array([r["features"][f]["auc_ci"] for r in rows])
        ax.errorbar(layers, a, yerr=[a - ci[:, 0], ci[:, 1] - a], marker="o", capsize=3, label=f)
    ax.axhline(0.5, color="grey", lw=0.8)
    ax.set(xlabel="write layer", ylabel="AUC  P(real > N(mu, Sigma))", ylim=(0, 1))
    ax.set_title(f"{res.headline.model}: separation by layer")
    ax.legend(fontsize=7)
    for ax, f in zip(axes[1:], PRIMARY, strict=True):
        for g, c in (("real", "C0"), ("random", "C3")):
            m = np.array([r["features"][f][f"{g}_mean"] for r in rows])
            sd = np.array([r["features"][f][f"{g}_sd"] for r in rows])
            ax.plot(layers, m, marker="o", color=c, label="real" if g == "real" else "N(mu, Sigma)")
            ax.fill_between(layers, m - sd, m + sd, color=c, alpha=0.15)
        ax.set(xlabel="write layer", title=f"{f} (mean +- sd)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def table(res: AtlasResult | dict) -> str:
    """The atlas as a markdown table (one row per layer)."""
    doc = res.to_json() if isinstance(res, Result) else res
    head = [
        "| layer | separation [95 % CI] | P1 MS (KL) real / random | AP real / random | "
        "P2 sharpness (KL) real / random | log radius real / random | AUC MS / AP / sharp / radius |",
        "|---|---|---|---|---|---|---|",
    ]
    lines = []
    for r in doc["detail"]["rows"]:
        f = r["features"]

        def rr(k, fmt=".1f", f=f):
            return f"{f[k]['real_mean']:{fmt}} / {f[k]['random_mean']:{fmt}}"

        aucs = " / ".join(
            f"{f[k]['auc']:.2f} [{f[k]['auc_ci'][0]:.2f}, {f[k]['auc_ci'][1]:.2f}]" for k in PRIMARY
        )
        lines.append(
            f"| {r['layer']} | {r['separation']:.2f} [{r['separation_ci'][0]:.2f}, "
            f"{r['separation_ci'][1]:.2f}] | {rr('p1.ms_kl')} | {rr('ap.plateau_length')} | "
            f"{rr('p2.sharpness_kl', '.2f')} | {rr('radius.mean_log', '.2f')} | {aucs} |"
        )
    return "\n".join(head + lines)
