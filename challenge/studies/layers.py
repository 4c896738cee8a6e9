"""Study 2: stable regions through the layers.

The P2 stable-regions protocol (Janiak et al. 2024) run with the write point at every layer
``L`` (``blocks.L.hook_resid_pre``, last position; read-out the track's read hook and the
next-token distribution), interpolating between the *same* prompt pairs (context prompts i and
i+1 of the track) at each layer: ``x(alpha) = (1 - alpha) A_L + alpha B_L``, written into
prompt i's context. Control: a cov-random-mixture direction (P3) of the same length, from
covariance statistics of the public split at that layer.

Per pair and layer:

- sharpness (``metrics.sharpness``, max d'(alpha)/d(1)) of the L2 and KL curves;
- boundary crossings: ``top1`` = steps where the top-1 next token changes between consecutive
  alphas; ``steep`` = runs of consecutive steps whose increase of the normalised L2 curve
  ``d(alpha)/d(1)`` exceeds ``steep_factor / (S - 1)`` (the slope of the straight line times
  ``steep_factor``); ``crossings`` = steps flagged by either.

Answer: if later layers *split* regions, the same pairs cross more boundaries the later the
write point; if they *sharpen* regions, sharpness grows while the number of crossings does not.
The trends over layers are given as Spearman correlations of the per-layer medians with depth.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from challenge import checks, hooks
from challenge import metrics as M
from challenge.directions import ActivationStats, cov_random_mixture
from challenge.engine import EngineConfig, PerturbationEngine
from challenge.errors import ConfigError
from challenge.paths import linear_path
from challenge.results import Result
from challenge.rng import seed_for
from challenge.schemas import JSON_CONFIG
from challenge.studies._common import (
    StudyEnv,
    as_env,
    finish,
    resid_pre_all,
    same_length,
    trace,
)

NAME = "layers"


@dataclass
class LayersConfig:
    """Study 2: the stable-regions protocol (P2) at every layer, along the same prompt pairs."""

    __pydantic_config__ = JSON_CONFIG

    n_pairs: int = 32
    """adjacent context-prompt pairs (i, i+1)"""
    n_steps: int = 41
    """points along each interpolation, endpoints included (>= 2)"""
    layers: tuple[int, ...] = ()
    """write layers (blocks.L.hook_resid_pre); empty = every layer_stride-th layer"""
    layer_stride: int = 1
    """with no layers given: every layer_stride-th layer from 0 (>= 1)"""
    control: bool = True
    """also run a cov-random-mixture direction of the same length at each layer"""
    n_stats: int = 1000
    """public prompts for the per-layer covariance of the control"""
    steep_factor: float = 3.0
    """a steep step rises by more than steep_factor / (S - 1) of the normalised L2 curve"""
    seed: int = 0
    """run seed: the control directions (stream layers.control, indexed by layer)"""

    def __post_init__(self) -> None:
        checks.integer(self.n_pairs, "n_pairs", minimum=1)
        checks.integer(self.n_steps, "n_steps", minimum=2)
        checks.sequence(self.layers, "layers")
        for L in self.layers:
            checks.integer(L, "layers", minimum=0)
        checks.integer(self.layer_stride, "layer_stride", minimum=1)
        checks.boolean(self.control, "control")
        if self.control:  # the control's covariance needs two rows
            checks.integer(self.n_stats, "n_stats", minimum=2)
        checks.number(self.steep_factor, "steep_factor", positive=True)
        checks.integer(self.seed, "seed", minimum=0)


@dataclass
class LayerMedians:
    """Medians over the real pairs at one write layer."""

    __pydantic_config__ = JSON_CONFIG

    sharpness_l2: float | None
    """P2 sharpness of the L2 curves"""
    sharpness_kl: float | None
    """P2 sharpness of the KL curves"""
    crossings: float | None
    """boundary crossings (top-1 changes or steep runs) per path"""


@dataclass
class LayersHeadline:
    """Study 2's numbers to cite."""

    __pydantic_config__ = JSON_CONFIG

    verdict: str
    """one-line reading of the real-pair trends with depth (:func:`verdict`)"""
    per_layer_real_median: dict[int, LayerMedians]
    """per write layer, medians over the real pairs"""


@dataclass
class LayersResult(Result):
    """Study 2's result; ``detail`` holds ``per_layer``, ``trends``, ``verdict``, ``engines``."""

    __pydantic_config__ = JSON_CONFIG

    kind: Literal["layers"]
    config: LayersConfig
    headline: LayersHeadline


def headline(doc: dict) -> LayersHeadline:
    """The numbers to cite from the study's document."""
    return LayersHeadline(
        verdict=doc["verdict"],
        per_layer_real_median={
            r["layer"]: LayerMedians(
                sharpness_l2=r["real"]["sharpness_l2"]["median"],
                sharpness_kl=r["real"]["sharpness_kl"]["median"],
                crossings=r["real"]["crossings"]["median"],
            )
            for r in doc["per_layer"]
        },
    )


def crossings(curves, steep_factor: float) -> dict[str, np.ndarray]:
    """Per path: top-1 changes between consecutive steps, runs of steep steps of the
    normalised L2 curve, and steps flagged by either."""
    top1 = curves["top1"]
    flip = top1[:, 1:] != top1[:, :-1]  # [B, S-1]
    l2 = np.asarray(curves["l2"], np.float64)
    S = l2.shape[1]
    last = l2[:, -1:]
    norm = np.divide(l2, last, out=np.zeros_like(l2), where=last > 0)
    steep = np.diff(norm, axis=1) > steep_factor / (S - 1)
    runs = steep[:, 0].astype(int) + (steep[:, 1:] & ~steep[:, :-1]).sum(1)
    return {
        "top1": flip.sum(1),
        "steep": runs,
        "crossings": (flip | steep).sum(1),
    }


def run(
    cfg: LayersConfig, env: StudyEnv | str | Path, *, out: Path, draw: bool = True
) -> LayersResult:
    """Study 2 on ``env`` (a study environment, or a track id / directory to load); writes
    ``<out>/layers.{json,npz}`` (+ ``.png`` when ``draw``)."""
    env = as_env(env)
    tr, model = env.track, env.lm.model
    n_layers = model.cfg.n_layers
    layers = list(cfg.layers) or list(range(0, n_layers, cfg.layer_stride))
    bad = [L for L in layers if not 0 <= L < n_layers]
    if bad:
        raise ConfigError(f"layers {bad} outside 0..{n_layers - 1}", field="layers")
    toks = tr.tokens("context")
    n = min(cfg.n_pairs, len(toks) - 1)
    if n < 1:
        raise ConfigError("need at least 2 context prompts", field="n_pairs")
    ctx = toks[: n + 1]
    stats_acts = (
        resid_pre_all(model, tr.tokens("public")[: cfg.n_stats], layers) if cfg.control else {}
    )
    per_layer, arrays, engines = [], {}, {}
    groups = ("real", "random") if cfg.control else ("real",)
    for L in layers:
        eng = PerturbationEngine(
            model,
            EngineConfig(
                write_hook=hooks.resid_pre(L), read_hook=tr.spec.read_hook, progress=False
            ),
        )
        engines[L] = eng.describe()
        acts = eng.clean(ctx, read=False)["write"].cpu()
        a, b = acts[:n], acts[1 : n + 1]
        dist = (b - a).norm(dim=-1)
        targets = {"real": b}
        if cfg.control:
            seed = seed_for(cfg.seed, "layers.control", index=L)
            d = cov_random_mixture(ActivationStats.fit(stats_acts[L]), n, seed)
            targets["random"] = a + same_length(d, dist)
        row = {
            "layer": L,
            "write_norm_median": float(a.norm(dim=-1).median()),
            "write_distance_median": float(dist.median()),
        }
        for g in groups:
            c = trace(eng, ctx[:n], linear_path(a, targets[g], cfg.n_steps))
            sh = {"l2": M.sharpness(c["l2"]), "kl": M.sharpness(c["kl"])}
            cr = crossings(c, cfg.steep_factor)
            row[g] = {
                "sharpness_l2": M.summarise(sh["l2"]),
                "sharpness_kl": M.summarise(sh["kl"]),
                "top1_changes": M.summarise(cr["top1"]),
                "steep_runs": M.summarise(cr["steep"]),
                "crossings": M.summarise(cr["crossings"]),
                "fraction_top1_changed_at_end": float(c["top1_changed"][:, -1].mean()),
                "kl_end": M.summarise(c["kl"][:, -1]),
                "l2_end": M.summarise(c["l2"][:, -1]),
            }
            for k, v in {**{f"sharpness_{m}": x for m, x in sh.items()}, **cr}.items():
                arrays.setdefault(f"{g}_{k}", []).append(v)
            l2 = c["l2"]
            arrays.setdefault(f"{g}_l2_norm_median", []).append(
                np.median(np.divide(l2, l2[:, -1:], out=np.zeros_like(l2), where=l2[:, -1:] > 0), 0)
            )
        per_layer.append(row)
    arrays = {k: np.stack(v) for k, v in arrays.items()}  # [layers, pairs] / [layers, steps]
    arrays["layers"] = np.array(layers)

    def trend(g, key):
        from scipy.stats import spearmanr

        med = [r[g][key]["median"] for r in per_layer]
        ok = len(layers) > 2 and np.std(med) > 0
        return {
            "spearman_with_layer": float(spearmanr(layers, med)[0]) if ok else None,
            "first": med[0],
            "last": med[-1],
            "max": float(np.max(med)),
            "argmax_layer": int(layers[int(np.argmax(med))]),
        }

    keys = ("sharpness_l2", "sharpness_kl", "top1_changes", "steep_runs", "crossings")
    trends = {g: {k: trend(g, k) for k in keys} for g in groups}
    doc = {
        "question": "Do later layers split stable regions (more boundary crossings along the "
        "same pairs) or sharpen them (higher sharpness, same crossings)?",
        "n_pairs": n,
        "layers": layers,
        "per_layer": per_layer,
        "trends": trends,
        "verdict": verdict(trends["real"]),
        "engines": {str(L): e for L, e in engines.items()},
    }
    return finish(
        env, cfg, NAME, LayersResult, headline(doc), doc, arrays, plot=plot, out=out, draw=draw
    )


def verdict(t: dict) -> str:
    """A one-line reading of the real-pair trends (Spearman of per-layer medians with depth;
    |rho| > 0.5 counts as a trend)."""

    def word(k):
        r = t[k]["spearman_with_layer"]
        if r is None or abs(r) <= 0.5:
            return f"no monotone trend (rho={0.0 if r is None else r:+.2f})"
        return f"{'rises' if r > 0 else 'falls'} with depth (rho={r:+.2f})"

    sharp = max(
        (t["sharpness_l2"]["spearman_with_layer"] or 0.0, "sharpness_l2"),
        (t["sharpness_kl"]["spearman_with_layer"] or 0.0, "sharpness_kl"),
        key=lambda x: abs(x[0]),
    )[1]
    s = f"sharpness {word(sharp)}; boundary crossings {word('crossings')}"
    r_sh = t[sharp]["spearman_with_layer"] or 0.0
    r_cr = t["crossings"]["spearman_with_layer"] or 0.0
    if r_cr > 0.5:
        return s + ": later layers split regions"
    if r_sh > 0.5:
        return s + ": later layers sharpen regions"
    if r_sh < -0.5 and r_cr < -0.5:
        return s + ": regions are sharpest and most numerous at early write points"
    return s


def plot(res: LayersResult, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from challenge.plots import save_figure

    doc, arrays = res.detail, res.arrays
    layers = np.asarray(doc["layers"])
    groups = [g for g in ("real", "random") if f"{g}_sharpness_l2" in arrays]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    cols = {"real": "C0", "random": "C3"}
    for ax, metric, label in (
        (axes[0], "sharpness_l2", "sharpness (L2)"),
        (axes[0], "sharpness_kl", "sharpness (KL)"),
        (axes[1], "crossings", "crossings"),
        (axes[1], "top1_changes", "top-1 changes"),
    ):
        key = metric if metric != "top1_changes" else "top1"
        for g in groups:
            v = arrays[f"{g}_{key}"].astype(float)
            ls = "-" if metric in ("sharpness_l2", "crossings") else "--"
            ax.plot(layers, np.nanmedian(v, 1), ls, color=cols[g], label=f"{g}: {label}")
            if ls == "-":
                ax.fill_between(
                    layers, *np.nanpercentile(v, [25, 75], 1), color=cols[g], alpha=0.15
                )
    axes[0].set_ylabel("median sharpness = max d'(alpha)/d(1)")
    axes[1].set_ylabel("median count per path")
    for ax in axes[:2]:
        ax.set_xlabel("write layer L (blocks.L.hook_resid_pre)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    ax = axes[2]
    med = arrays["real_l2_norm_median"]
    x = np.linspace(0, 1, med.shape[1])
    cmap = plt.get_cmap("viridis")
    pick = np.unique(np.linspace(0, len(layers) - 1, min(6, len(layers))).round().astype(int))
    for i in pick:
        ax.plot(x, med[i], color=cmap(i / max(1, len(layers) - 1)), label=f"L={layers[i]}")
    ax.set_xlabel("alpha")
    ax.set_ylabel("median d(alpha)/d(1), real pairs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.suptitle(
        f"Study 2: stable regions through layers ({res.track.id}, {doc['n_pairs']} pairs): "
        f"{doc['verdict']}",
        fontsize=9,
    )
    return save_figure(fig, path, dpi=100)
