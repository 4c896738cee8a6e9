"""Feature finding by sensitivity: the directions at a track's write point to which the output
is most sensitive (:mod:`challenge.studies.sensitive_directions`), compared with SAE decoder
directions, PCA and random baselines (P3); see docs/feature-finding.md.

:func:`run` probes every direction set with ``challenge.protocols.p3_probe`` from the same
context bases that ``run_p3`` uses, and measures how well each sensitive direction aligns with
the SAE's decoder rows (max |cosine| over all rows, against random directions). It writes
``<out>/<track id>_feature_finding.{json,npz,png,md}`` (the ``.md`` is :func:`table_markdown`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from challenge import checks
from challenge.directions import ActivationStats
from challenge.results import Result
from challenge.rng import generator, seed_for, subset
from challenge.schemas import JSON_CONFIG
from challenge.studies._common import StudyEnv, as_env, finish
from challenge.studies.sensitive_directions import (
    global_jacobian_directions,
    local_jacobian_directions,
    optimised_directions,
    unit,
)

NAME = "feature_finding"
METRICS = ("l2", "fisher")
OBJECTIVES = ("l2", "kl")


@dataclass
class FeatureFindingConfig:
    """What ``plateau find-features`` runs (see docs/feature-finding.md)."""

    __pydantic_config__ = JSON_CONFIG

    sae: str | None = None
    """SAE directory (SAELens format) or saelens:<release>/<id>; None: the track's SAE"""
    use_sae: bool = True
    """probe the SAE's directions and measure alignment with its decoder rows"""
    n_base: int = 64
    """context bases for the P3 curves (the same rows as run_p3 with this seed)"""
    units: Literal["gpt2", "scale_free"] = "scale_free"
    """P3 length units: GPT-2's absolute grid, or scaled by the track's median write norm"""
    seed: int = 0
    """run seed: bases (stream p3.contexts) and every feature_finding.* stream"""
    n_jac: int = 16
    """public prompts for the global Jacobian / shared optimisation"""
    k: int = 4
    """global directions kept (base i gets direction i mod k)"""
    oversample: int = 4
    """extra columns of the randomised subspace iteration"""
    iters: int = 2
    """subspace iterations (global)"""
    local_iters: int = 3
    """block power iterations (local)"""
    opt_radius: float = 0.1
    """optimisation radius, x the track's median write-point norm"""
    opt_steps: int = 12
    """projected gradient-ascent steps"""
    opt_restarts: int = 2
    """random starts of the optimisation (the best is kept)"""
    metrics: tuple[str, ...] = METRICS
    """Jacobian sensitivity: read-out L2 (l2), KL through the Fisher pull-back (fisher)"""
    objectives: tuple[str, ...] = OBJECTIVES
    """optimised directions: read-out L2 (l2) or KL (kl) at the radius"""
    kl_threshold: float = 0.1
    """median KL (nats) whose first crossing length is reported"""
    n_random: int = 1000
    """random directions for the max-cosine baseline"""
    progress: bool = True
    """progress bars of the direction finders"""

    def __post_init__(self) -> None:
        checks.boolean(self.use_sae, "use_sae")
        checks.choice(self.units, ("gpt2", "scale_free"), "units")
        for f in ("n_base", "n_jac", "k", "opt_restarts", "n_random"):
            checks.integer(getattr(self, f), f, minimum=1)
        for f in ("oversample", "iters", "local_iters", "opt_steps", "seed"):
            checks.integer(getattr(self, f), f, minimum=0)
        checks.number(self.opt_radius, "opt_radius", positive=True)
        checks.number(self.kl_threshold, "kl_threshold", positive=True)
        checks.sequence(self.metrics, "metrics", choices=METRICS)
        checks.sequence(self.objectives, "objectives", choices=OBJECTIVES)
        checks.boolean(self.progress, "progress")


@dataclass
class FeatureFindingHeadline:
    """The numbers to cite: the sensitivity and alignment tables' main columns and the
    agreement between methods."""

    __pydantic_config__ = JSON_CONFIG

    length_to_kl_threshold_rel: dict[str, float | None]
    """per direction kind: the length (/ the largest) where the median KL first reaches
    ``kl_threshold`` (None: never)"""
    top1_changed_at_max: dict[str, float]
    """per direction kind: fraction of bases whose top-1 token changed at the largest length"""
    max_cos_median: dict[str, float]
    """per direction set: median of max |cos| with a decoder row (empty without an SAE)"""
    agreement: dict[str, float]
    """|cos| / energy agreements between the methods, and the random-pair expectation"""


@dataclass
class FeatureFindingResult(Result):
    """The feature-finding result; ``detail`` holds ``sensitivity``, ``alignment``,
    ``agreement``, ``found``, ``lengths``, ``timings_s`` and the SAE's description."""

    __pydantic_config__ = JSON_CONFIG

    kind: Literal["feature_finding"]
    config: FeatureFindingConfig
    headline: FeatureFindingHeadline


def headline(doc: dict) -> FeatureFindingHeadline:
    """The numbers to cite from the study's document."""
    sens = doc["sensitivity"]
    return FeatureFindingHeadline(
        length_to_kl_threshold_rel={k: s["length_to_kl_threshold_rel"] for k, s in sens.items()},
        top1_changed_at_max={k: s["top1_changed_at_max"] for k, s in sens.items()},
        max_cos_median={
            k: a["max_cos_median"] for k, a in doc["alignment"].items() if "max_cos_median" in a
        },
        agreement=dict(doc["agreement"]),
    )


# ---------------------------------------------------------------------------------- baselines
def pca_directions(acts: Float[Tensor, "n d_model"], k: int) -> tuple[Tensor, Tensor]:
    """Top-``k`` principal components (rows) and their variances."""
    x = acts.double() - acts.double().mean(0)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    return vh[:k].float(), (s[:k] ** 2 / (len(x) - 1)).float()


def random_signs(n: int, seed: int, index: int = 0) -> Float[Tensor, "n 1"]:
    """``n`` random signs from the run seed's ``feature_finding.signs`` stream, set ``index``."""
    g = generator(seed, "feature_finding.signs", index)
    return torch.randint(0, 2, (n, 1), generator=g).float() * 2 - 1


def cycle(
    dirs: Float[Tensor, "k d_model"], n: int, seed: int, index: int = 0
) -> Float[Tensor, "n d_model"]:
    """Base ``i`` gets direction ``i mod k`` with a random sign (the sign matters off-linearity;
    signs from :func:`random_signs` ``(n, seed, index)``)."""
    return dirs[torch.arange(n) % len(dirs)] * random_signs(n, seed, index)


def max_abs_cosine(dirs: Float[Tensor, "n d"], W_dec: Float[Tensor, "m d"]) -> Tensor:
    """Per direction: ``[max over decoder rows of |cosine|, the row reaching it]``."""
    c = unit(dirs.float()) @ unit(W_dec.detach().float()).T
    v, i = c.abs().max(1)
    return torch.stack([v, i.float()], 1)


def sensitivity_summary(curves, lengths: Tensor, kl_threshold: float) -> dict:
    """Length at which the median KL first reaches the threshold; median KL / L2 at fractions of
    the longest length; fraction of bases whose top-1 token changed at the longest length."""
    med_kl = np.median(curves.kl, 0)
    hit = np.nonzero(med_kl >= kl_threshold)[0]
    L = lengths.numpy()
    at = {f"{q:g}": int(np.argmin(np.abs(L - q * L[-1]))) for q in (0.1, 0.25, 0.5)}
    return {
        "length_to_kl_threshold": float(L[hit[0]]) if len(hit) else None,
        "length_to_kl_threshold_rel": float(L[hit[0]] / L[-1]) if len(hit) else None,
        "median_kl_at": {q: float(med_kl[i]) for q, i in at.items()},
        "median_l2_at": {q: float(np.median(curves.l2[:, i])) for q, i in at.items()},
        "top1_changed_at_max": float(curves.top1_changed[:, -1].mean()),
        "median_kl": med_kl.tolist(),
        "median_l2": np.median(curves.l2, 0).tolist(),
    }


# ---------------------------------------------------------------------------------- the study
def get_sae(env: StudyEnv, cfg: FeatureFindingConfig):
    """The SAE the config names (``sae``, else the track's), or None without ``use_sae``."""
    from challenge.sae import load_sae, track_sae

    if not cfg.use_sae:
        return None
    if cfg.sae is not None:
        return load_sae(cfg.sae)
    return track_sae(env.track, lm=env.lm, progress=cfg.progress)


def compare(env: StudyEnv, cfg: FeatureFindingConfig, sae) -> tuple[dict, dict[str, np.ndarray]]:
    """Find sensitive directions, probe them and the baselines with P3, and measure alignment."""
    from challenge.protocols import P3Config, p3_directions, p3_lengths, p3_probe
    from challenge.sae import describe, sae_direction_sets

    t0 = time.perf_counter()
    track, eng, progress = env.track, env.eng, cfg.progress
    ctx_t, ctx_a = track.tokens("context"), track.acts("context")
    idx = subset(len(ctx_a), cfg.n_base, cfg.seed, "p3.contexts")
    bt, ba = ctx_t[idx], ctx_a[idx]
    n = len(idx)
    pub_t, pub_a = track.tokens("public"), track.acts("public")
    jidx = subset(len(pub_a), cfg.n_jac, cfg.seed, "feature_finding.jacobian_rows")
    jt, ja = pub_t[jidx], pub_a[jidx]
    radius = cfg.opt_radius * track.units["write_norm_median"]
    timings, found, extra, dirs = {}, {}, {}, {}

    def timed(name, fn):
        t = time.perf_counter()
        r = fn()
        timings[name] = round(time.perf_counter() - t, 1)
        return r

    for m in cfg.metrics:
        U, evals = timed(
            f"jacobian_{m}_global",
            lambda m=m: global_jacobian_directions(
                eng, jt, ja, cfg.k, cfg.oversample, cfg.iters, cfg.seed, metric=m, progress=progress
            ),
        )
        Ul, Sl = timed(
            f"jacobian_{m}_local",
            lambda m=m: local_jacobian_directions(
                eng, bt, ba, cfg.local_iters, seed=cfg.seed, metric=m, progress=progress
            ),
        )
        found[f"jacobian_{m}_global"], found[f"jacobian_{m}_local"] = U, Ul
        extra[f"jacobian_{m}_global_eigenvalues"] = evals.tolist()
        extra[f"jacobian_{m}_local_sqrt_eigenvalue"] = {
            "median": float(Sl.median()),
            "min": float(Sl.min()),
            "max": float(Sl.max()),
        }
        dirs[f"jacobian_{m}_global_top1"] = cycle(U[:1], n, cfg.seed, 0)
        dirs[f"jacobian_{m}_global_top{cfg.k}"] = cycle(U, n, cfg.seed, 1)
        dirs[f"jacobian_{m}_local"] = Ul * random_signs(n, cfg.seed, 2)
    for obj in cfg.objectives:
        Uo, vo = timed(
            f"optimised_{obj}",
            lambda obj=obj: optimised_directions(
                eng,
                bt,
                ba,
                radius,
                obj,
                cfg.opt_steps,
                cfg.opt_restarts,
                seed=cfg.seed,
                progress=progress,
            ),
        )
        Ug, vg = timed(
            f"optimised_{obj}_global",
            lambda obj=obj: optimised_directions(
                eng,
                jt,
                ja,
                radius,
                obj,
                cfg.opt_steps,
                cfg.opt_restarts,
                shared=True,
                seed=cfg.seed,
                progress=progress,
            ),
        )
        found[f"optimised_{obj}"], found[f"optimised_{obj}_global"] = Uo, Ug[:1]
        extra[f"optimised_{obj}_objective_median"] = float(vo.median())
        extra[f"optimised_{obj}_global_objective_mean"] = float(vg[0])
        dirs[f"optimised_{obj}"] = Uo
        dirs[f"optimised_{obj}_global"] = cycle(Ug[:1], n, cfg.seed, 3)
    pca, pvar = pca_directions(pub_a, cfg.k)
    dirs[f"pca_top{cfg.k}"] = cycle(pca, n, cfg.seed, 4)
    if sae is not None:
        dirs |= sae_direction_sets(sae, track, n_base=cfg.n_base, seed=cfg.seed)
    stats = ActivationStats.fit(pub_a)
    dirs |= p3_directions(("isotropic", "cov_mixture", "real_mixture"), pub_a, stats, n, cfg.seed)
    lengths = p3_lengths(P3Config(units=cfg.units), track.units)
    curves, _ = timed("p3", lambda: p3_probe(eng, bt, ba, dirs, lengths, cfg.kl_threshold))
    summary = {k: sensitivity_summary(c, lengths, cfg.kl_threshold) for k, c in curves.items()}

    # ---- alignment with the SAE's decoder rows
    align = {}
    if sae is not None:
        W = sae.W_dec.detach()
        dead = sae.dead_mask()
        g_rnd = generator(cfg.seed, "feature_finding.random")
        rnd = unit(torch.randn(cfg.n_random, W.shape[1], generator=g_rnd))
        s_cov = seed_for(cfg.seed, "feature_finding.cov_mixture")
        cov_rnd = unit(
            p3_directions(("cov_mixture",), pub_a, stats, cfg.n_random, s_cov)["cov_mixture"]
        )
        sets = {**found, "pca": pca, "random_isotropic": rnd, "random_cov_mixture": cov_rnd}
        for name, D in sets.items():
            mc = max_abs_cosine(D, W)
            best = mc[:, 1].long()
            align[name] = {
                "n": len(D),
                "max_cos_median": float(mc[:, 0].median()),
                "max_cos_mean": float(mc[:, 0].mean()),
                "max_cos_max": float(mc[:, 0].max()),
                "best_latent_dead_fraction": float(dead[best].float().mean()),
            }
        # how much of each global top-k sensitive subspace the decoder rows see (random: k / d)
        for m in cfg.metrics:
            proj = (unit(W.float()) @ found[f"jacobian_{m}_global"].T).pow(2).sum(1)
            align[f"decoder_energy_in_jacobian_{m}_top{cfg.k}"] = {
                "median": float(proj.median()),
                "max": float(proj.max()),
                "random_expectation": cfg.k / W.shape[1],
                "top_latents": torch.topk(proj, 5).indices.tolist(),
            }
    agree = {}
    for m in cfg.metrics:
        U, Ul = found[f"jacobian_{m}_global"], found[f"jacobian_{m}_local"]
        agree[f"{m}: local vs global top-1, |cos| median"] = float((Ul @ U[0]).abs().median())
        agree[f"{m}: local in global top-{cfg.k}, energy median"] = float(
            (Ul @ U.T).pow(2).sum(1).median()
        )
    if set(cfg.metrics) >= {"l2", "fisher"}:
        agree["global top-1 l2 vs fisher, |cos|"] = float(
            (found["jacobian_l2_global"][0] @ found["jacobian_fisher_global"][0]).abs()
        )
        agree["local l2 vs fisher, |cos| median"] = float(
            (found["jacobian_l2_local"] * found["jacobian_fisher_local"]).sum(1).abs().median()
        )
    for obj, m in (("l2", "l2"), ("kl", "fisher")):
        if obj in cfg.objectives and m in cfg.metrics:
            agree[f"optimised {obj} vs local Jacobian {m}, |cos| median"] = float(
                (found[f"optimised_{obj}"] * found[f"jacobian_{m}_local"]).sum(1).abs().median()
            )
    agree["random pair, |cos| expected"] = float(np.sqrt(2 / (np.pi * pub_a.shape[1])))
    doc = {
        "sae": describe(sae) if sae is not None else None,
        "lengths": lengths.tolist(),
        "opt_radius_abs": radius,
        "sensitivity": summary,
        "alignment": align,
        "agreement": agree,
        "pca_variance": pvar.tolist(),
        "found": extra,
        "timings_s": timings | {"total": round(time.perf_counter() - t0, 1)},
        "n_base": n,
    }
    arrays = {"lengths": lengths.numpy(), "pca": pca.numpy()}
    for name, c in curves.items():
        arrays[f"{name}_kl"], arrays[f"{name}_l2"] = c.kl, c.l2
    for name, D in found.items():
        arrays[f"dir_{name}"] = D.numpy()
    return doc, arrays


def run(
    cfg: FeatureFindingConfig, env: StudyEnv | str | Path, *, out: Path, draw: bool = True
) -> FeatureFindingResult:
    """The whole comparison on ``env`` (a study environment, or a track id / directory to
    load); writes ``<out>/<track id>_feature_finding.{json,npz,md}`` (+ ``.png`` when
    ``draw``)."""
    env = as_env(env)
    doc, arrays = compare(env, cfg, get_sae(env, cfg))
    name = f"{env.track.spec.track_id}_{NAME}"
    res = finish(
        env,
        cfg,
        name,
        FeatureFindingResult,
        headline(doc),
        doc,
        arrays,
        plot=plot,
        kind=NAME,
        out=out,
        draw=draw,
    )
    (Path(out) / f"{name}.md").write_text(table_markdown(res))
    return res


# ---------------------------------------------------------------------------------- reporting
GROUPS = {
    "sensitive (found)": ("jacobian", "optimised"),
    "SAE": ("sae_",),
    "baselines": ("pca", "isotropic", "cov_mixture", "real_mixture"),
}


def table_markdown(res: FeatureFindingResult) -> str:
    """The sensitivity table (one row per direction kind) and the alignment table."""
    doc = res.detail
    sens, align = doc["sensitivity"], doc["alignment"]
    L = doc["lengths"][-1]
    rows = sorted(
        sens.items(),
        key=lambda kv: (
            kv[1]["length_to_kl_threshold"] or np.inf,
            -kv[1]["median_kl_at"]["0.25"],
        ),
    )
    out = [
        f"| direction | length to median KL >= {res.config.kl_threshold:g} (/ max length {L:.1f}) "
        "| median KL at 0.1 / 0.25 / 0.5 x max | median L2 at 0.25 x max | top-1 changed at max |",
        "|---|---|---|---|---|",
    ]
    for name, s in rows:
        lt = s["length_to_kl_threshold_rel"]
        kl = s["median_kl_at"]
        out.append(
            f"| {name} | {'never' if lt is None else f'{lt:.3f}'} | "
            f"{kl['0.1']:.3g} / {kl['0.25']:.3g} / {kl['0.5']:.3g} | {s['median_l2_at']['0.25']:.1f} | "
            f"{s['top1_changed_at_max']:.2f} |"
        )
    if align:
        out += [
            "",
            "| direction set | n | max abs cos with a decoder row: median | mean | max | best row dead |",
            "|---|---|---|---|---|---|",
        ]
        for name, a in align.items():
            if "max_cos_median" not in a:
                continue
            out.append(
                f"| {name} | {a['n']} | {a['max_cos_median']:.3f} | {a['max_cos_mean']:.3f} | "
                f"{a['max_cos_max']:.3f} | {a['best_latent_dead_fraction']:.2f} |"
            )
    return "\n".join(out) + "\n"


def plot(res: FeatureFindingResult, path) -> Path:
    """Median KL (log) and L2 along each direction kind, one colour family per group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from challenge.plots import save_figure

    doc, arrays = res.detail, res.arrays
    L = arrays["lengths"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    cmaps = {"sensitive (found)": plt.cm.Reds, "SAE": plt.cm.Greens, "baselines": plt.cm.Blues}
    names = list(doc["sensitivity"])
    for group, prefixes in GROUPS.items():
        members = [m for m in names if m.startswith(prefixes)]
        for j, m in enumerate(members):
            col = cmaps[group](0.4 + 0.55 * j / max(1, len(members) - 1))
            for ax, key in zip(axes, ("kl", "l2"), strict=True):
                ax.plot(L, np.median(arrays[f"{m}_{key}"], 0), color=col, label=m, lw=1.5)
    axes[0].set_yscale("log")
    axes[0].axhline(res.config.kl_threshold, color="k", ls=":", lw=0.8)
    axes[0].set_ylabel("median KL(original || perturbed)")
    axes[1].set_ylabel("median L2 at read-out")
    for ax in axes:
        ax.set_xlabel("perturbation length")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, ncol=2)
    fig.suptitle(
        f"Sensitive vs SAE vs random directions on {res.track.id} "
        f"(P3, {res.config.units} units, {doc['n_base']} bases)",
        fontsize=10,
    )
    return save_figure(fig, path, dpi=110)
