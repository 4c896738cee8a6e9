"""Study 3: steering through the plateau lens.

A steering vector ``v = mean(acts of class B) - mean(acts of class A)`` (difference of means at
the track's write point, last position) is fitted on one half of a templated family's prompts
(cut after the last slot, as in study 1, so the class word is the last token). On the other
half, every prompt of class A is steered with ``x + c v`` and every prompt of class B with
``x - c v``, ``c = linspace(0, coef_max, S)``. The same lengths ``L = c |v|`` are applied along
other directions from the same base:

- ``real``: toward a real activation of the other class (a prompt with the same prefix, so the
  direction is the one a real prompt pair spans: a plateau perturbation as in P1 / P2);
- ``random``: a cov-random-mixture direction (P3) from the track's public split;
- ``isotropic``: a uniformly random direction.

Smoothness of each response curve: P2 sharpness of the L2 and KL curves (max d'/d(end); 1 for a
straight line, larger for a jump), the concentration of the output's movement (``max / mean`` of
``sqrt(JS)`` between consecutive steps: 1 = constant speed), the number of top-1 changes, and the
P1 max-slope step. Efficacy: JS between the steered distribution and the other class's mean
next-token distribution. ``coef_max`` defaults to ``median |T - x| / |v|`` over the real pairs,
so every direction reaches the typical real-to-real distance.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from challenge import checks
from challenge import metrics as M
from challenge.directions import ActivationStats, cov_random_mixture, isotropic
from challenge.divergence import js_to_reference
from challenge.errors import ConfigError
from challenge.paths import ray_path
from challenge.results import Result
from challenge.rng import seed_for
from challenge.schemas import JSON_CONFIG
from challenge.studies._common import (
    StudyEnv,
    as_env,
    clean_logp,
    finish,
    trace,
    write_point_acts,
)
from challenge.studies.output_states import concentration, family_prompts

NAME = "steering"
KINDS = ("steer", "real", "random", "isotropic")


@dataclass
class SteeringConfig:
    """Study 3: difference-of-means steering vs plateau perturbations of the same norm."""

    __pydantic_config__ = JSON_CONFIG

    contrasts: tuple[str, ...] = (
        "person_adjective:sentiment:negative:positive",
        "city_weather:weather_group:cold:warm",
    )
    """family:label:class_A:class_B; v = mean(B) - mean(A)"""
    n_bases: int = 64
    """steered prompts per contrast (half class A, half class B), from the held-out half"""
    n_steps: int = 41
    """coefficients from 0 to coef_max, both included (>= 2)"""
    coef_max: float | None = None
    """largest steering coefficient; None: median real-pair distance / |v|"""
    kl_threshold: float = 0.1
    """report the length at which the median KL first reaches this (nats), per direction"""
    seed: int = 0
    """run seed: the fit / held-out split and base draws, and the random directions (streams
    steering.random, steering.isotropic)"""

    def __post_init__(self) -> None:
        from challenge.prompts import TEMPLATE_FAMILIES

        checks.sequence(self.contrasts, "contrasts", nonempty=True)
        for c in self.contrasts:  # parse_contrast refuses a malformed one
            checks.choice(parse_contrast(c)[0], TEMPLATE_FAMILIES, "contrasts")
        checks.integer(self.n_bases, "n_bases", minimum=2)
        checks.integer(self.n_steps, "n_steps", minimum=2)
        checks.number(self.coef_max, "coef_max", positive=True, optional=True)
        checks.number(self.kl_threshold, "kl_threshold", positive=True)
        checks.integer(self.seed, "seed", minimum=0)


@dataclass
class DirectionHeadline:
    """Medians over the bases of one direction kind's response curves."""

    __pydantic_config__ = JSON_CONFIG

    sharpness_kl: float | None
    """P2 sharpness of the KL curve (1 = straight line)"""
    concentration: float | None
    """max / mean of sqrt(JS) between consecutive steps (1 = constant speed)"""
    kl_end: float | None
    """KL(p_0 || p_end) at the largest length (nats)"""
    js_target_end: float | None
    """JS to the other class's mean next-token distribution at the largest length (nats)"""


@dataclass
class SteeringHeadline:
    """Study 3's numbers to cite: per contrast, per direction kind (steer, real, random,
    isotropic)."""

    __pydantic_config__ = JSON_CONFIG

    contrasts: dict[str, dict[str, DirectionHeadline]]


@dataclass
class SteeringResult(Result):
    """Study 3's result; ``detail["contrasts"]`` holds one document per contrast."""

    __pydantic_config__ = JSON_CONFIG

    kind: Literal["steering"]
    config: SteeringConfig
    headline: SteeringHeadline


def headline(contrasts: list[dict]) -> SteeringHeadline:
    """The numbers to cite from the per-contrast documents."""
    return SteeringHeadline(
        {
            c["contrast"]: {
                k: DirectionHeadline(
                    sharpness_kl=v["sharpness_kl"]["median"],
                    concentration=v["concentration"]["median"],
                    kl_end=v["kl_end"]["median"],
                    js_target_end=v["js_target_end"]["median"],
                )
                for k, v in c["directions"].items()
            }
            for c in contrasts
        }
    )


def parse_contrast(s: str) -> tuple[str, str, str, str]:
    parts = s.split(":")
    if len(parts) != 4:
        raise ConfigError(f"{s!r} is not family:label:class_A:class_B", field="contrasts")
    return parts[0], parts[1], parts[2], parts[3]


def steering_vector(acts: torch.Tensor, cls: np.ndarray, a: str, b: str) -> torch.Tensor:
    """Difference of class means ``mean(B) - mean(A)``."""
    ma, mb = torch.as_tensor(cls == a), torch.as_tensor(cls == b)
    if not ma.any() or not mb.any():
        raise ConfigError(f"class {a!r} or {b!r} has no prompt", field="contrasts")
    return acts[mb].mean(0) - acts[ma].mean(0)


def smoothness(c: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-curve smoothness of a traced response."""
    top1 = c["top1"]
    return {
        "sharpness_l2": M.sharpness(c["l2"]),
        "sharpness_kl": M.sharpness(c["kl"]),
        "concentration": concentration(c["step_js"]),
        "top1_changes": (top1[:, 1:] != top1[:, :-1]).sum(1),
        "ms_kl": M.max_slope_step(c["kl"], normalise=True).astype(float),
    }


def run_contrast(env: StudyEnv, cfg: SteeringConfig, contrast: str, stats: ActivationStats):
    family, label, ca, cb = parse_contrast(contrast)
    eng = env.eng
    fp = family_prompts(family, env.lm.tokenizer, cut_at_last_slot=True)
    if label not in fp.labels:
        raise ConfigError(f"family {family} has no label {label!r}", field="contrasts")
    cls = fp.labels[label]
    acts = write_point_acts(eng, fp.tokens)
    rng = np.random.default_rng(cfg.seed)
    perm = rng.permutation(len(cls))
    fit, held = perm[: len(perm) // 2], perm[len(perm) // 2 :]
    v = steering_vector(acts[fit], cls[fit], ca, cb)
    logp = clean_logp(eng, fp.tokens, acts)
    mean_p = {
        c: torch.log(logp[fit][torch.as_tensor(cls[fit] == c)].exp().mean(0)) for c in (ca, cb)
    }

    # bases: held-out prompts of A (steered +v) and of B (steered -v), half each
    base_idx, sign, target_idx = [], [], []
    for c_from, c_to, sg in ((ca, cb, 1.0), (cb, ca, -1.0)):
        cand = held[cls[held] == c_from]
        cand = rng.permutation(cand)[: cfg.n_bases // 2]
        for i in cand:  # a real target of the other class sharing the prefix
            same = held[(cls[held] == c_to) & (fp.prefix_id[held] == fp.prefix_id[i])]
            if len(same) == 0:
                continue
            base_idx.append(i)
            sign.append(sg)
            target_idx.append(int(rng.choice(same)))
    if not base_idx:
        raise ConfigError(f"{contrast}: no base prompt with a real target", field="contrasts")
    bi, ti = np.array(base_idx), np.array(target_idx)
    sign_t = torch.tensor(sign)[:, None]
    x, toks = acts[bi], fp.tokens[bi]
    real_dist = (acts[ti] - x).norm(dim=-1)
    vnorm = float(v.norm())
    coef_max = cfg.coef_max if cfg.coef_max is not None else float(real_dist.median()) / vnorm
    coefs = torch.linspace(0, coef_max, cfg.n_steps)
    lengths = coefs * vnorm
    n = len(bi)
    dirs = {
        "steer": sign_t * v[None, :],
        "real": acts[ti] - x,
        "random": cov_random_mixture(stats, n, seed_for(cfg.seed, "steering.random")),
        "isotropic": isotropic(n, x.shape[1], seed_for(cfg.seed, "steering.isotropic")),
    }
    target_ref = torch.stack([mean_p[cb] if s > 0 else mean_p[ca] for s in sign])

    res, arrays = {}, {"coefs": coefs.numpy(), "lengths": lengths.numpy()}
    for kind, d in dirs.items():
        order = {}

        def to_target(out, lp, order=order):  # JS to the other class's mean distribution
            i0 = order.setdefault("i", 0)
            ref = target_ref[i0 : i0 + lp.shape[0]]
            order["i"] = i0 + lp.shape[0]
            js = torch.stack([js_to_reference(lp[j], ref[j]) for j in range(lp.shape[0])])
            return {"js_target": js}

        c = trace(eng, toks, ray_path(x, d, lengths), extra=to_target)
        sm = smoothness(c)
        med_kl = np.median(c["kl"], 0)
        hit = np.nonzero(med_kl >= cfg.kl_threshold)[0]
        res[kind] = {
            **{k: M.summarise(v_) for k, v_ in sm.items()},
            "kl_end": M.summarise(c["kl"][:, -1]),
            "l2_end": M.summarise(c["l2"][:, -1]),
            "length_to_kl_threshold": float(lengths[hit[0]]) if len(hit) else None,
            "js_target_start": M.summarise(c["js_target"][:, 0]),
            "js_target_end": M.summarise(c["js_target"][:, -1]),
            "js_target_min": M.summarise(c["js_target"].min(1)),
            "fraction_top1_changed_at_end": float(c["top1_changed"][:, -1].mean()),
        }
        for k in ("l2", "kl", "js_target"):
            arrays[f"{kind}_{k}"] = c[k]
        for k, v_ in sm.items():
            arrays[f"{kind}_{k}"] = v_
    # pairwise comparison of smoothness: steering vs each other kind (KS and medians)
    cmp = {
        other: {
            k: {
                "ks": M.ks_statistic(arrays[f"steer_{k}"], arrays[f"{other}_{k}"]),
                "median_steer": float(np.nanmedian(arrays[f"steer_{k}"])),
                "median_other": float(np.nanmedian(arrays[f"{other}_{k}"])),
            }
            for k in ("sharpness_l2", "sharpness_kl", "concentration", "top1_changes")
        }
        for other in KINDS[1:]
    }
    doc = {
        "contrast": contrast,
        "family": family,
        "classes": [ca, cb],
        "n_fit": int(len(fit)),
        "n_bases": n,
        "steering_vector_norm": vnorm,
        "write_norm_median": float(x.norm(dim=-1).median()),
        "real_distance_median": float(real_dist.median()),
        "coef_max": coef_max,
        "max_length": float(lengths[-1]),
        "directions": res,
        "steer_vs": cmp,
    }
    return doc, arrays


def run(
    cfg: SteeringConfig, env: StudyEnv | str | Path, *, out: Path, draw: bool = True
) -> SteeringResult:
    """Study 3 on ``env`` (a study environment, or a track id / directory to load); writes
    ``<out>/steering.{json,npz}`` (+ ``.png`` when ``draw``)."""
    env = as_env(env)
    stats = ActivationStats.fit(env.track.acts("public"))
    contrasts, arrays = [], {}
    for i, con in enumerate(cfg.contrasts):
        d, arr = run_contrast(env, cfg, con, stats)
        contrasts.append(d)
        arrays |= {f"c{i}_{k}": v for k, v in arr.items()}
    doc = {
        "question": "Is the response to a difference-of-means steering vector smoother than "
        "plateau perturbations (toward real activations) of the same norm?",
        "contrasts": contrasts,
    }
    return finish(
        env,
        cfg,
        NAME,
        SteeringResult,
        headline(contrasts),
        doc,
        arrays,
        plot=plot,
        out=out,
        draw=draw,
    )


def plot(res: SteeringResult, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from challenge.plots import save_figure

    cons, arrays = res.detail["contrasts"], res.arrays
    fig, axes = plt.subplots(len(cons), 4, figsize=(18, 3.8 * len(cons)), squeeze=False)
    cols = dict(zip(KINDS, ("C2", "C0", "C3", "C7"), strict=True))
    for r, con in enumerate(cons):
        p = f"c{r}_"
        coefs = arrays[p + "coefs"]
        for kind in KINDS:
            kl, l2, jt = (
                arrays[p + kind + "_kl"],
                arrays[p + kind + "_l2"],
                arrays[p + kind + "_js_target"],
            )
            for ax, v in ((axes[r, 0], kl), (axes[r, 2], jt)):
                ax.plot(coefs, np.median(v, 0), color=cols[kind], label=kind)
                ax.fill_between(coefs, *np.percentile(v, [25, 75], 0), color=cols[kind], alpha=0.15)
            nl2 = np.divide(l2, l2[:, -1:], out=np.zeros_like(l2), where=l2[:, -1:] > 0)
            axes[r, 1].plot(coefs, np.median(nl2, 0), color=cols[kind], label=kind)
        axes[r, 0].set_ylabel("KL(p_0 || p_c)")
        axes[r, 0].set_yscale("symlog", linthresh=1e-3)
        axes[r, 1].set_ylabel("median L2 / L2(end)")
        axes[r, 2].set_ylabel("JS to the other class's mean output")
        ax = axes[r, 3]
        data = [np.nan_to_num(arrays[p + k + "_concentration"]) for k in KINDS]
        ax.boxplot(data, showfliers=False)
        ax.set_xticks(range(1, len(KINDS) + 1), KINDS)
        ax.set_ylabel("concentration (max/mean sqrt JS step)")
        for ax in axes[r, :3]:
            ax.set_xlabel(
                f"coefficient c (length = c x |v| = c x {con['steering_vector_norm']:.1f})"
            )
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        axes[r, 0].set_title(con["contrast"], fontsize=9)
    fig.suptitle(f"Study 3: steering vs same-norm perturbations ({res.track.id})", fontsize=10)
    return save_figure(fig, path, dpi=100)
