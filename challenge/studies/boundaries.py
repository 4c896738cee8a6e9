"""Study 4: activation-function boundaries along perturbation paths.

Along each path the engine captures the MLP gate pre-activations of every layer after the write
point (``capture_mlp_pre=True``: ``[B, S, layers, d_mlp]``; for SmolLM2's gated SiLU MLP the
gate's pre-activation). A unit *crosses its boundary* between consecutive steps when its gate
pre-activation changes sign (SiLU's transition region around 0; for ReLU / GELU models the same
count is the exact / approximate kink). Counts are reduced chunk by chunk inside
``challenge.studies.trace`` and never stored whole.

Paths (P1 relative scheme): from the context prompts' own activations toward held-out real
activations (``real``) and toward N(mu, Sigma) samples (``random``), ``S`` steps.

Questions:

- do per-step crossing counts correlate with the per-step output jumps (increase of the L2 and
  KL curves, and the JS between consecutive steps)? Pearson and Spearman, pooled over all
  (path, step) and within paths (median of per-path Spearman), and per layer;
- do the crossings bunch up at the output's max-slope step (the grokking-literature prediction
  that linear-region boundaries concentrate at decision boundaries)? Crossing counts aligned at
  each path's max-slope step (L2 and KL), as a ratio to the path's mean count per step; the
  fraction of paths whose busiest step lies within ``window`` steps of the max-slope step,
  against the same fraction for a random step (chance).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from challenge import checks
from challenge import metrics as M
from challenge.directions import ActivationStats, gaussian_like
from challenge.paths import linear_path
from challenge.results import Result
from challenge.rng import generator, seed_for
from challenge.schemas import JSON_CONFIG
from challenge.studies._common import StudyEnv, as_env, corr, finish, trace

NAME = "boundaries"


@dataclass
class BoundariesConfig:
    """Study 4: MLP gate sign changes per step along paths vs the output's jumps."""

    __pydantic_config__ = JSON_CONFIG

    n_paths: int = 48
    """paths per kind (real-to-real and toward random N(mu, Sigma) targets)"""
    n_steps: int = 51
    """points along each path, endpoints included (>= 3)"""
    max_rows: int = 510
    """curve-steps per engine call (the gate capture is [rows, layers, d_mlp] floats)"""
    window: int = 2
    """busiest step within this many steps of the max-slope step counts as a coincidence"""
    align: int = 10
    """half-width of the profile aligned at the max-slope step"""
    seed: int = 0
    """run seed: paths (stream boundaries.paths), random endpoints, bunching nulls"""

    def __post_init__(self) -> None:
        checks.integer(self.n_paths, "n_paths", minimum=1)
        checks.integer(self.n_steps, "n_steps", minimum=3)
        checks.integer(self.max_rows, "max_rows", minimum=1)
        checks.integer(self.window, "window", minimum=0)
        checks.integer(self.align, "align", minimum=0)
        checks.integer(self.seed, "seed", minimum=0)


@dataclass
class Correlation:
    """Pearson and Spearman correlation of a flat sample of pairs (:func:`corr`)."""

    __pydantic_config__ = JSON_CONFIG

    pearson: float | None
    """None when fewer than 3 finite pairs or a constant side"""
    spearman: float | None
    """rank correlation (None as for pearson)"""
    n: int
    """finite pairs used"""


@dataclass
class KindHeadline:
    """One path kind's numbers to cite (crossings = MLP gate sign changes per step)."""

    __pydantic_config__ = JSON_CONFIG

    corr_pooled_dkl: Correlation
    """crossings vs the step's KL increase, pooled over all (path, step)"""
    within_path_spearman_dkl: float | None
    """median over paths of the per-path Spearman of crossings vs KL increase"""
    ratio_at_ms_kl: float | None
    """median ratio of the crossings at the KL max-slope step to the path's mean per step"""
    busiest_within_window: float
    """fraction of paths whose busiest step is within ``window`` steps of the KL max slope"""
    busiest_within_window_chance: float
    """the same fraction for a random step (chance)"""


@dataclass
class BoundariesHeadline:
    """Study 4's numbers to cite, per path kind (real, random)."""

    __pydantic_config__ = JSON_CONFIG

    kinds: dict[str, KindHeadline]


@dataclass
class BoundariesResult(Result):
    """Study 4's result; ``detail["kinds"]`` holds one document per path kind."""

    __pydantic_config__ = JSON_CONFIG

    kind: Literal["boundaries"]
    config: BoundariesConfig
    headline: BoundariesHeadline


def headline(kinds: dict[str, dict]) -> BoundariesHeadline:
    """The numbers to cite from the per-kind documents."""
    return BoundariesHeadline(
        {
            k: KindHeadline(
                corr_pooled_dkl=Correlation(**v["corr_pooled"]["dkl"]),
                within_path_spearman_dkl=v["corr_within_path_spearman"]["dkl"]["median"],
                ratio_at_ms_kl=v["bunching_at_ms_kl"]["ratio_at_max_slope"]["median"],
                busiest_within_window=v["bunching_at_ms_kl"]["busiest_within_window"],
                busiest_within_window_chance=v["bunching_at_ms_kl"]["busiest_within_window_chance"],
            )
            for k, v in kinds.items()
        }
    )


def flip_counts(
    eng, tokens: torch.Tensor, paths: torch.Tensor, max_rows: int = 510
) -> dict[str, np.ndarray]:
    """Trace paths with the gate capture: curves plus ``flips [B, S-1, layers]``."""
    return trace(eng, tokens, paths, capture_mlp_pre=True, max_rows=max_rows)


def aligned_profile(
    counts: np.ndarray, centre: np.ndarray, half: int
) -> tuple[np.ndarray, np.ndarray]:
    """``counts [B, S-1]`` (per step), ``centre [B]`` in step units (1..S-1: the rise into step
    ``s`` is ``counts[:, s-1]``): ratio to each path's mean count at offsets -half..half, NaN
    outside the path; returns (offsets, ratio [B, 2 half + 1])."""
    B, T = counts.shape
    mean = counts.mean(1, keepdims=True)
    ratio = np.divide(counts, mean, out=np.full(counts.shape, np.nan), where=mean > 0)
    offs = np.arange(-half, half + 1)
    idx = (centre[:, None] - 1) + offs[None, :]
    ok = (idx >= 0) & (idx < T)
    prof = np.full((B, len(offs)), np.nan)
    prof[ok] = ratio[np.nonzero(ok)[0], idx[ok]]
    return offs, prof


def bunching(counts: np.ndarray, ms: np.ndarray, window: int, half: int, seed: int) -> dict:
    """How the crossings sit around the max-slope step ``ms [B]`` (values 1..S-1)."""
    offs, prof = aligned_profile(counts, ms, half)
    busiest = counts.argmax(1) + 1
    hit = np.abs(busiest - ms) <= window
    rng = np.random.default_rng(seed)
    chance = []
    for _ in range(200):  # a random step per path instead of the max-slope step
        r = rng.integers(1, counts.shape[1] + 1, size=len(ms))
        chance.append(np.mean(np.abs(busiest - r) <= window))
    at = prof[:, half]
    return {
        "ratio_at_max_slope": M.summarise(at),
        "ratio_profile_median": np.nanmedian(prof, 0).tolist(),
        "offsets": offs.tolist(),
        "busiest_within_window": float(hit.mean()),
        "busiest_within_window_chance": float(np.mean(chance)),
        "fraction_ratio_above_1": float(np.nanmean(at > 1)),
    }


def analyse(c: dict[str, np.ndarray], cfg: BoundariesConfig, dist: np.ndarray) -> tuple[dict, dict]:
    flips = c["flips"].astype(np.float64)  # [B, S-1, layers]
    total = flips.sum(-1)  # [B, S-1]
    jumps = {
        "dl2": np.diff(c["l2"], axis=1),
        "dkl": np.diff(c["kl"], axis=1),
        "step_js": c["step_js"],
    }
    pooled = {k: corr(total, v) for k, v in jumps.items()}

    def within(v):
        from scipy.stats import spearmanr

        rs = [
            spearmanr(t, j)[0]
            for t, j in zip(total, v, strict=True)
            if np.std(t) > 0 and np.std(j) > 0
        ]
        return M.summarise(rs)

    within_path = {k: within(v) for k, v in jumps.items()}
    n_layers = flips.shape[-1]
    per_layer = [corr(flips[:, :, i], jumps["dkl"])["spearman"] for i in range(n_layers)]
    ms_l2 = M.max_slope_step(c["l2"], normalise=True)
    ms_kl = M.max_slope_step(c["kl"], normalise=True)
    S = c["l2"].shape[1]
    # a path whose curve never rises above the threshold gets MS = S-1 by the P1 convention;
    # those are kept (the convention is part of the metric) and counted
    doc = {
        "n_paths": int(len(total)),
        "write_distance": M.summarise(dist),
        "crossings_per_path": M.summarise(total.sum(1)),
        "crossings_per_path_per_unit_length": M.summarise(total.sum(1) / np.maximum(dist, 1e-12)),
        "crossings_per_step": M.summarise(total),
        "top1_changes_per_path": M.summarise((np.diff(c["top1"], axis=1) != 0).sum(1)),
        "corr_pooled": pooled,
        "corr_within_path_spearman": within_path,
        "corr_per_layer_spearman_dkl": per_layer,
        "bunching_at_ms_l2": bunching(
            total, ms_l2, cfg.window, cfg.align, seed_for(cfg.seed, "boundaries.bunching_l2")
        ),
        "bunching_at_ms_kl": bunching(
            total, ms_kl, cfg.window, cfg.align, seed_for(cfg.seed, "boundaries.bunching_kl")
        ),
        "ms_at_last_step_fraction": {
            "l2": float((ms_l2 == S - 1).mean()),
            "kl": float((ms_kl == S - 1).mean()),
        },
    }
    arrays = {
        "flips_total": total.astype(np.int32),
        "flips_layer_sum": flips.sum(1).astype(np.int32),  # [B, layers]
        "l2": c["l2"],
        "kl": c["kl"],
        "step_js": c["step_js"],
        "ms_l2": ms_l2,
        "ms_kl": ms_kl,
    }
    return doc, arrays


def run(
    cfg: BoundariesConfig, env: StudyEnv | str | Path, *, out: Path, draw: bool = True
) -> BoundariesResult:
    """Study 4 on ``env`` (a study environment, or a track id / directory to load); writes
    ``<out>/boundaries.{json,npz}`` (+ ``.png`` when ``draw``)."""
    env = as_env(env)
    tr, eng = env.track, env.eng
    ctx_t, ctx_a, held = tr.tokens("context"), tr.acts("context"), tr.acts("heldout")
    g = generator(cfg.seed, "boundaries.paths")
    idx = torch.randperm(len(ctx_a), generator=g)[: cfg.n_paths]
    n = len(idx)
    stats = ActivationStats.fit(tr.acts("public"))
    targets = {
        "real": held[torch.randperm(len(held), generator=g)[:n]],
        "random": gaussian_like(stats, n, seed_for(cfg.seed, "boundaries.random_points")),
    }
    kinds, arrays = {}, {}
    for kind, t in targets.items():
        a = ctx_a[idx]
        c = flip_counts(eng, ctx_t[idx], linear_path(a, t, cfg.n_steps), cfg.max_rows)
        d, arr = analyse(c, cfg, (t - a).norm(dim=-1).numpy())
        kinds[kind] = d
        arrays |= {f"{kind}_{k}": v for k, v in arr.items()}
    d_mlp = env.lm.model.cfg.d_mlp
    doc = {
        "question": "Do MLP gate boundary crossings along paths correlate with the output's "
        "jumps, and do they bunch up at the max-slope step?",
        "boundary": "sign change of the MLP gate pre-activation between consecutive steps",
        "n_units": int(d_mlp * arrays["real_flips_layer_sum"].shape[1]),
        "layers_after_write": int(arrays["real_flips_layer_sum"].shape[1]),
        "first_mlp_layer": int(eng.start),
        "kinds": kinds,
    }
    return finish(
        env,
        cfg,
        NAME,
        BoundariesResult,
        headline(kinds),
        doc,
        arrays,
        plot=plot,
        out=out,
        draw=draw,
    )


def plot(res: BoundariesResult, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from challenge.plots import save_figure

    doc, arrays = res.detail, res.arrays
    fig, axes = plt.subplots(1, 4, figsize=(19, 4.2))
    cols = {"real": "C0", "random": "C3"}
    for kind, col in cols.items():
        k = doc["kinds"][kind]
        tot = arrays[f"{kind}_flips_total"].astype(float)
        x = np.arange(1, tot.shape[1] + 1)
        axes[0].plot(x, np.median(tot, 0), color=col, label=f"{kind}: crossings / step")
        axes[0].fill_between(x, *np.percentile(tot, [25, 75], 0), color=col, alpha=0.15)
        kl = arrays[f"{kind}_kl"]
        dkl = np.diff(
            np.divide(kl, kl[:, -1:], out=np.zeros_like(kl), where=kl[:, -1:] > 0), axis=1
        )
        ax2 = axes[1]
        ax2.scatter(tot.ravel(), dkl.ravel(), s=2, alpha=0.25, color=col,
                    label=f"{kind}: Spearman {k['corr_pooled']['dkl']['spearman']:.2f}")  # fmt: skip
        b = k["bunching_at_ms_kl"]
        axes[2].plot(b["offsets"], b["ratio_profile_median"], marker="o", ms=3, color=col,
                     label=f"{kind} (at MS: {b['ratio_at_max_slope']['median']:.2f})")  # fmt: skip
        pl = k["corr_per_layer_spearman_dkl"]
        axes[3].plot(doc["first_mlp_layer"] + np.arange(len(pl)), pl, color=col, label=kind)
    axes[0].set_xlabel("step (alpha x (S-1))")
    axes[0].set_ylabel("MLP units crossing 0 (all layers)")
    axes[1].set_xlabel("crossings in the step")
    axes[1].set_ylabel("increase of KL / KL(end) in the step")
    axes[2].axhline(1, color="k", lw=0.7, ls="--")
    axes[2].set_xlabel("steps from the KL max-slope step")
    axes[2].set_ylabel("crossings / path mean (median)")
    axes[3].set_xlabel("MLP layer")
    axes[3].set_ylabel("Spearman(crossings in layer, dKL)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Study 4: MLP gate boundaries along paths ({res.track.id})", fontsize=10)
    return save_figure(fig, path, dpi=100)
