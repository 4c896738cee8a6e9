"""The direction families: one unit direction per point for each family, the pair families'
second directions and mixtures (:func:`directions`)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from challenge.directions import ActivationStats, cov_random_mixture, isotropic
from challenge.studies._common import StudyEnv, write_point_acts
from challenge.studies.error_correction.config import ErrorCorrectionConfig, _seed


def unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _signs(n: int, seed: int, index: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(_seed(seed, "signs") + 7919 * index)
    return torch.randint(0, 2, (n, 1), generator=g).float() * 2 - 1


def sae_latents(sae, x: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    """Per point: two distinct latents active at x (``a``, ``b``; by pre-activation rank where
    fewer are active) and two distinct uniformly random alive latents (``r``, ``r2``)."""
    g = torch.Generator().manual_seed(_seed(seed, "latents"))
    with torch.no_grad():
        pre = sae.pre_acts(x.float())
        act = sae.activate(pre) > 0
    rank = pre.argsort(1).argsort(1).float() / pre.shape[1]  # in [0, 1), by pre-activation
    score = torch.where(act, 2 + torch.rand(pre.shape, generator=g), rank)
    top2 = score.topk(2, dim=1).indices  # random among the active; else the highest pre
    alive = ~sae.dead_mask().cpu()
    ids = torch.nonzero(alive).flatten()
    r = ids[torch.randint(len(ids), (2, len(x)), generator=g)]
    r2 = torch.where(r[1] == r[0], ids[(torch.searchsorted(ids, r[0]) + 1) % len(ids)], r[1])
    return {"a": top2[:, 0], "b": top2[:, 1], "r": r[0], "r2": r2, "n_active": act.sum(1)}


def directions(env: StudyEnv, cfg: ErrorCorrectionConfig, tokens, x, timings: dict) -> tuple:
    """One unit direction per point for each family; for the families in ``cfg.pairs`` also a
    second direction of the same family (``<f>_b``) and the mixture ``unit(a + b)``
    (``<f>_mix``). Returns the directions, a description and ``cos(a, b)`` per pair family."""
    from challenge.studies.feature_finding import get_sae, pca_directions
    from challenge.studies.sensitive_directions import (
        local_jacobian_directions,
        optimised_directions,
    )

    n, d = x.shape
    pub = env.track.acts("public")
    fams = dict.fromkeys(("random", *cfg.families))
    out, second, info = {}, {}, {}
    for f in fams:
        t = time.perf_counter()
        if f == "random":
            v = isotropic(2 * n, d, _seed(cfg.seed, "random"))
            out[f], second[f] = v[:n], v[n:]
        elif f == "cov_random":
            stats = ActivationStats.fit(pub)
            v = cov_random_mixture(stats, 2 * n, _seed(cfg.seed, "cov_random"))
            out[f], second[f] = v[:n], v[n:]
        elif f == "pca":
            pcs, var = pca_directions(pub, cfg.n_pca)
            i = torch.arange(n)
            out[f] = pcs[i % cfg.n_pca] * _signs(n, cfg.seed, 0)
            second[f] = pcs[(i + 1) % cfg.n_pca] * _signs(n, cfg.seed, 2)
            info["pca_variance"] = var.tolist()
        elif f in ("sae_active", "sae_random"):
            if "sae" not in info:
                from challenge.sae import describe

                sae = get_sae(env, _FFShim(cfg.sae, cfg.progress))
                lat = sae_latents(sae, x, cfg.seed)
                W = sae.W_dec.detach().float().cpu()
                info["sae"] = describe(sae)
                info["n_active_median"] = float(lat["n_active"].float().median())
                info["latents"] = {k: v.tolist() for k, v in lat.items()}
            a, b = ("a", "b") if f == "sae_active" else ("r", "r2")
            out[f], second[f] = W[lat[a]], W[lat[b]]
        elif f == "contrastive":
            out[f] = contrastive(env, cfg.contrast, info)[None].expand(n, -1).clone()
            second[f] = contrastive(env, cfg.contrast_b, info)[None].expand(n, -1).clone()
        elif f == "sensitive":
            U, S = local_jacobian_directions(
                env.eng, tokens, x, seed=cfg.seed, metric="fisher", progress=cfg.progress
            )
            out[f] = U * _signs(n, cfg.seed, 1)
            info["sensitive_sqrt_eigenvalue_median"] = float(S.median())
        elif f == "optimised":
            r = cfg.opt_radius * env.track.units["write_norm_median"]
            U, _ = optimised_directions(
                env.eng, tokens, x, r, "kl", cfg.opt_steps, seed=cfg.seed, progress=cfg.progress
            )
            out[f] = U
        timings[f] = round(time.perf_counter() - t, 1)
    cos = {}
    for f in cfg.pairs:
        if f in out:
            a, b = unit(out[f].float()), unit(second[f].float())
            out[f + "_b"], out[f + "_mix"] = b, unit(a + b)
            cos[f] = (a * b).sum(1).double().numpy()
    return {k: unit(v.float()) for k, v in out.items()}, info, cos


def contrastive(env: StudyEnv, contrast: str, info: dict) -> torch.Tensor:
    """Unit difference of means ``mean(B) - mean(A)`` of a templated contrast (all prompts)."""
    from challenge.studies.output_states import family_prompts
    from challenge.studies.steering import parse_contrast, steering_vector

    fam, label, ca, cb = parse_contrast(contrast)
    fp = family_prompts(fam, env.lm.tokenizer, cut_at_last_slot=True)
    v = steering_vector(write_point_acts(env.eng, fp.tokens), fp.labels[label], ca, cb)
    info.setdefault("contrastive_norms", {})[contrast] = float(v.norm())
    return unit(v)


@dataclass
class _FFShim:
    """What ``feature_finding.get_sae`` reads from its config."""

    sae: str | None
    progress: bool
    use_sae: bool = True
