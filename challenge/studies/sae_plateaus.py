"""Study 5: SAEs and plateaus.

Questions: (1) do SAE reconstructions map the activations of one plateau to nearby points (in
the same plateau)? (2) where in a plateau do real activations sit: centre or edge?

The SAE is the track's (``challenge.sae.track_sae``: trained on the public split and cached,
or SAELens' published one for GPT-2 tracks) or any SAELens-format directory (``--sae``). An
end-to-end SAE (Braun et al. 2024) is analysed the same way when given (``--e2e-sae``, a
SAELens-format directory); none exists offline for SmolLM2, so the default run has none.

A. Reconstruction step: path ``x -> SAE(x)`` from context activations, and same-length paths
   toward a held-out real activation, along a cov-random-mixture direction and an isotropic
   one. KL(p(x) || p(end)) and top-1 change say whether SAE(x) stays in x's plateau, compared
   with an equally long step elsewhere.
B. Plateau consistency: along real-to-real paths ``x_s`` (P1 relative scheme) the
   reconstructions ``r_s = SAE(x_s)`` form a second path. Per step: KL(p(x_s) || p(r_s)) and
   top-1 agreement (2-point paths through the engine); the max-slope step of the
   reconstructed path's KL curve vs the original's; on the plateau (steps where the original
   KL from step 0 is below ``edge_kl``), the reconstructed path's KL from ``r_0`` and the
   distance ratio ``|r_s - r_0| / |x_s - x_0|``.
C. Centre vs edge: from each point, rays ``+-d`` along ``n_dirs`` directions (half
   real-mixture: differences of two public activations; half isotropic) with lengths up to the
   track's median real-to-real distance. The edge distance ``r`` along a ray is the first length
   where KL(p(point) || p(ray)) reaches ``edge_kl`` (linearly interpolated; censored at the
   largest length). Position along the chord ``t = r(-d) / (r(+d) + r(-d))``; centredness
   ``1 - |2t - 1|`` (1 = centre, 0 = edge; a uniformly placed point has median 0.5). Points:
   real activations, their SAE reconstructions, and N(mu, Sigma) samples, in the same contexts.
   A KL radius grows about equally both ways around any point where the output is smooth
   (KL is quadratic in the displacement to second order), so centredness alone cannot tell a
   plateau's centre from a smooth bowl. The anchoring test tells them apart: each real point is
   shifted by ``delta`` along ``+d`` and the edges are measured again; ``anchoring = (r+ - r+')
   / delta`` (and ``(r-' - r-) / delta``) is 1 when the edges stay where they are in activation
   space (boundaries of a region) and 0 when they move with the point.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from challenge import bootstrap, checks
from challenge import metrics as M
from challenge.directions import ActivationStats, cov_random_mixture, gaussian_like, isotropic
from challenge.errors import ConfigError
from challenge.paths import linear_path, ray_path
from challenge.results import Result
from challenge.rng import generator, seed_for
from challenge.schemas import JSON_CONFIG
from challenge.studies._common import StudyEnv, as_env, finish, same_length, trace
from challenge.studies.sae_collapse import Interval

NAME = "sae_plateaus"


@dataclass
class SAEPlateausConfig:
    """Study 5: SAE reconstructions vs plateaus; where real activations sit in their plateau."""

    __pydantic_config__ = JSON_CONFIG

    sae: str | None = None
    """SAE directory (SAELens format) or saelens:<release>/<id>; None: the track's SAE"""
    e2e_sae: str | None = None
    """an end-to-end SAE directory (SAELens format), analysed the same way; None: none"""
    e2e: bool = False
    """analyse the track's end-to-end SAE (E2EConfig's defaults, trained and cached when
    missing; unless --e2e-sae is given) beside, as ``local``, the local TopK SAE with its
    n_latents and k trained on the public split's last position (matched L0); the track's
    default SAE is then analysed only when --sae names it"""
    n_p3: int = 0
    """D: context activations for P3 along each SAE's decoder directions (0: skip part D)"""
    train_sae: bool = True
    """train (and cache) the track's SAE when it is missing (minutes on 2 cores)"""
    n_recon: int = 64
    """A: context activations whose reconstruction step is probed"""
    recon_steps: int = 21
    """A: points along each reconstruction step, endpoints included (>= 2)"""
    n_paths: int = 32
    """B: real-to-real paths"""
    path_steps: int = 41
    """B: points along each real-to-real path, endpoints included (>= 2)"""
    n_points: int = 24
    """C: points per kind (real, SAE reconstruction, N(mu, Sigma))"""
    n_dirs: int = 6
    """C: directions per point (each probed both ways)"""
    ray_steps: int = 21
    """C: lengths along each ray, 0 and the largest included (>= 2)"""
    edge_kl: float = 0.1
    """KL (nats) that marks a plateau's edge"""
    shift_frac: float = 0.5
    """C: real points are shifted along each direction by this x their median edge distance"""
    seed: int = 0
    """run seed: every draw of parts A, B, C (streams sae_plateaus.*)"""

    def __post_init__(self) -> None:
        checks.boolean(self.e2e, "e2e")
        checks.boolean(self.train_sae, "train_sae")
        checks.integer(self.n_p3, "n_p3", minimum=0)
        for f in ("n_recon", "n_paths", "n_points", "n_dirs"):
            checks.integer(getattr(self, f), f, minimum=1)
        for f in ("recon_steps", "path_steps", "ray_steps"):
            checks.integer(getattr(self, f), f, minimum=2)
        checks.number(self.edge_kl, "edge_kl", positive=True)
        checks.number(self.shift_frac, "shift_frac", positive=True)
        checks.integer(self.seed, "seed", minimum=0)


@dataclass
class SAEPlateausHeadline:
    """Study 5's numbers to cite, keyed by SAE slot (``sae``, ``e2e``) or point kind."""

    __pydantic_config__ = JSON_CONFIG

    kl_end_ratio_to_controls: dict[str, dict[str, float | None]]
    """A: median KL of the step x -> SAE(x) over that of same-length steps toward a real
    activation / a cov-random-mixture / an isotropic direction, per SAE"""
    top1_agreement_on_plateau: dict[str, float | None]
    """B: fraction of on-plateau path points whose reconstruction keeps the top-1 token, per SAE"""
    top1_agreement_near_boundary: dict[str, float]
    """B: the same within 2 steps of the path's max-slope step, per SAE"""
    centredness_median: dict[str, float | None]
    """C: median centredness (1 = centre, 0 = edge) per point kind (real, SAEs, gaussian)"""
    anchoring_median: float | None
    """C: median anchoring of the real points' edges (1 = fixed in space, 0 = move along)"""
    centredness_minus_real: dict[str, Interval]
    """C: per SAE, median over (point, direction) of centredness(SAE(x)) - centredness(x), with
    a bootstrap interval over points (> 0: reconstructions sit nearer the chord's centre)"""
    p3_length_to_kl_threshold: dict[str, Interval]
    """D: per direction set (``<sae>:<kind>``, ``isotropic``), the length at which the median
    KL reaches edge_kl, with a bootstrap interval over bases (empty when part D is skipped)"""


@dataclass
class SAEPlateausResult(Result):
    """Study 5's result; ``detail`` holds ``A_reconstruction_step``, ``B_plateau_consistency``,
    ``C_centre_vs_edge`` and the SAEs' descriptions."""

    __pydantic_config__ = JSON_CONFIG

    kind: Literal["sae_plateaus"]
    config: SAEPlateausConfig
    headline: SAEPlateausHeadline


def headline(a: dict, b: dict, c: dict, d: dict) -> SAEPlateausHeadline:
    """The numbers to cite from parts A, B, C and D."""
    saes = [s for s in b if s != "n_paths"]
    return SAEPlateausHeadline(
        centredness_minus_real=c["centredness_minus_real"],
        p3_length_to_kl_threshold=d.get("length_to_kl_threshold", {}),
        kl_end_ratio_to_controls={s: a[s]["kl_end_ratio_to_controls"] for s in a},
        top1_agreement_on_plateau={s: b[s]["top1_agreement_on_plateau"] for s in saes},
        top1_agreement_near_boundary={s: b[s]["top1_agreement_near_boundary"] for s in saes},
        centredness_median={
            k: v["centredness"]["median"]
            for k, v in c.items()
            if isinstance(v, dict) and "centredness" in v
        },
        anchoring_median=c["anchoring"]["anchoring_all"]["median"],
    )


def get_saes(env: StudyEnv, cfg: SAEPlateausConfig) -> dict:
    from challenge.sae import load_sae, track_sae

    if cfg.sae is not None:
        saes = {"sae": load_sae(cfg.sae)}
    elif cfg.e2e:
        saes = {}
    else:
        saes = {"sae": track_sae(env.track, lm=env.lm, train=cfg.train_sae, progress=False)}
    if cfg.e2e_sae is not None:
        saes["e2e"] = load_sae(cfg.e2e_sae)
    elif cfg.e2e:
        from challenge.sae.e2e import E2EConfig
        from challenge.sae.e2e_track import track_e2e_sae

        saes["e2e"] = track_e2e_sae(env.track, E2EConfig(), engine=env.eng, train=cfg.train_sae)
    if cfg.e2e:
        from challenge.sae import SAEConfig

        e = saes["e2e"]
        lcfg = SAEConfig(n_latents=e.n_latents, k=e.k, positions="last")
        local = track_sae(env.track, lcfg, lm=env.lm, train=cfg.train_sae, progress=False)
        # the track's default SAE stays only when given explicitly (--sae)
        saes = ({"sae": saes["sae"]} if cfg.sae is not None else {}) | {"local": local, "e2e": e}
    d = env.track.d_model
    for name, s in saes.items():
        if s.d_in != d:
            raise ConfigError(f"{name}: SAE d_in {s.d_in} != track d_model {d}", field=name)
    return saes


@torch.no_grad()
def reconstruct(sae, x: torch.Tensor, batch: int = 4096) -> torch.Tensor:
    flat = x.reshape(-1, x.shape[-1]).float()
    out = torch.cat([sae(flat[i : i + batch]) for i in range(0, len(flat), batch)])
    return out.reshape(x.shape)


def edge_distance(
    kl: np.ndarray, lengths: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """First length where each KL curve reaches ``threshold`` (linear between grid points) and
    whether it was censored (never reached: the largest length is returned)."""
    kl = np.asarray(kl, np.float64)
    hit = kl >= threshold
    first = hit.argmax(1)
    censored = ~hit.any(1)
    r = np.empty(len(kl))
    for i, (f, c) in enumerate(zip(first, censored, strict=True)):
        if c:
            r[i] = lengths[-1]
        elif f == 0:
            r[i] = 0.0
        else:
            k0, k1 = kl[i, f - 1], kl[i, f]
            w = (threshold - k0) / (k1 - k0) if k1 > k0 else 1.0
            r[i] = lengths[f - 1] + w * (lengths[f] - lengths[f - 1])
    return r, censored


def part_a(env, cfg, saes, stats) -> tuple[dict, dict]:
    tr, eng = env.track, env.eng
    g = generator(cfg.seed, "sae_plateaus.recon")
    ctx_t, ctx_a, held = tr.tokens("context"), tr.acts("context"), tr.acts("heldout")
    idx = torch.randperm(len(ctx_a), generator=g)[: cfg.n_recon]
    x, toks = ctx_a[idx], ctx_t[idx]
    out, arrays = {}, {}
    s_random = seed_for(cfg.seed, "sae_plateaus.random")
    s_iso = seed_for(cfg.seed, "sae_plateaus.isotropic")
    for name, sae in saes.items():
        r = reconstruct(sae, x)
        length = (r - x).norm(dim=-1)
        ends = {
            name: r,
            "real": x
            + same_length(held[torch.randperm(len(held), generator=g)[: len(x)]] - x, length),
            "random": x + same_length(cov_random_mixture(stats, len(x), s_random), length),
            "isotropic": x + same_length(isotropic(len(x), x.shape[1], s_iso), length),
        }
        res = {"recon_distance": M.summarise(length.numpy()),
               "recon_relative_error": M.summarise((length / x.norm(dim=-1)).numpy())}  # fmt: skip
        for kind, e in ends.items():
            c = trace(eng, toks, linear_path(x, e, cfg.recon_steps))
            res[kind] = {
                "kl_end": M.summarise(c["kl"][:, -1]),
                "fraction_kl_end_below_edge": float((c["kl"][:, -1] < cfg.edge_kl).mean()),
                "fraction_top1_changed": float(c["top1_changed"][:, -1].mean()),
                "sharpness_kl": M.summarise(M.sharpness(c["kl"])),
            }
            arrays[f"A_{name}_{kind}_kl"] = c["kl"]
        ks = res[name]["kl_end"]["median"]
        res["kl_end_ratio_to_controls"] = {
            k: (ks / res[k]["kl_end"]["median"]) if res[k]["kl_end"]["median"] else None
            for k in ("real", "random", "isotropic")
        }
        out[name] = res
    return out, arrays


def part_b(env, cfg, saes) -> tuple[dict, dict]:
    tr, eng = env.track, env.eng
    g = generator(cfg.seed, "sae_plateaus.paths")
    ctx_t, ctx_a, held = tr.tokens("context"), tr.acts("context"), tr.acts("heldout")
    idx = torch.randperm(len(ctx_a), generator=g)[: cfg.n_paths]
    tgt = held[torch.randperm(len(held), generator=g)[: len(idx)]]
    toks, x0 = ctx_t[idx], ctx_a[idx]
    X = linear_path(x0, tgt, cfg.path_steps)  # [B, S, d]
    B, S, d = X.shape
    orig = trace(eng, toks, X)
    ms_orig = M.max_slope_step(orig["kl"], normalise=True)
    out, arrays = {"n_paths": B}, {"B_orig_kl": orig["kl"], "B_ms_orig": ms_orig}
    for name, sae in saes.items():
        R = reconstruct(sae, X)
        rec = trace(eng, toks, R)
        # each step's point and its reconstruction: a 2-point path, KL(p(x_s) || p(r_s))
        pair = trace(
            eng,
            toks.repeat_interleave(S, 0),
            torch.stack([X.reshape(B * S, d), R.reshape(B * S, d)], 1),
        )
        kl_xr = pair["kl"][:, 1].reshape(B, S)
        agree = ~pair["top1_changed"][:, 1].reshape(B, S)
        ms_rec = M.max_slope_step(rec["kl"], normalise=True)
        plateau = orig["kl"] < cfg.edge_kl  # points still in x_0's plateau
        plateau[:, 0] = False  # step 0 is trivially so
        dx = (X - X[:, :1]).norm(dim=-1).numpy()
        dr = (R - R[:, :1]).norm(dim=-1).numpy()
        ratio = np.divide(dr, dx, out=np.full_like(dr, np.nan), where=dx > 0)
        off = np.arange(S)[None, :] - ms_orig[:, None]  # steps from the original's max slope
        near = np.abs(off) <= 2
        from scipy.stats import spearmanr

        out[name] = {
            "ms_orig": M.summarise(ms_orig),
            "ms_recon": M.summarise(ms_rec),
            "ms_abs_difference": M.summarise(np.abs(ms_rec - ms_orig)),
            "ms_spearman": float(spearmanr(ms_orig, ms_rec)[0])
            if np.std(ms_orig) and np.std(ms_rec)
            else None,
            "kl_x_vs_recon": M.summarise(kl_xr),
            "kl_x_vs_recon_near_boundary": M.summarise(kl_xr[near]),
            "kl_x_vs_recon_on_plateau": M.summarise(kl_xr[plateau]),
            "top1_agreement": float(agree.mean()),
            "top1_agreement_on_plateau": float(agree[plateau].mean()) if plateau.any() else None,
            "top1_agreement_near_boundary": float(agree[near].mean()),
            "plateau_points": int(plateau.sum()),
            "recon_kl_from_r0_on_plateau": M.summarise(rec["kl"][plateau]),
            "orig_kl_from_x0_on_plateau": M.summarise(orig["kl"][plateau]),
            "fraction_plateau_points_whose_recon_stays_below_edge": float(
                (rec["kl"][plateau] < cfg.edge_kl).mean()
            )
            if plateau.any()
            else None,
            "distance_ratio_on_plateau": M.summarise(ratio[plateau]),
            "distance_ratio_all": M.summarise(ratio[:, 1:]),
        }
        arrays |= {f"B_{name}_recon_kl": rec["kl"], f"B_{name}_kl_x_vs_recon": kl_xr,
                   f"B_{name}_ms_recon": ms_rec}  # fmt: skip
    return out, arrays


def part_c(env, cfg, saes, stats) -> tuple[dict, dict]:
    tr, eng = env.track, env.eng
    g = generator(cfg.seed, "sae_plateaus.points")
    ctx_t, ctx_a, pub = tr.tokens("context"), tr.acts("context"), tr.acts("public")
    idx = torch.randperm(len(ctx_a), generator=g)[: cfg.n_points]
    toks, x = ctx_t[idx], ctx_a[idx]
    n = len(idx)
    points = {"real": x}
    for name, sae in saes.items():
        points[name] = reconstruct(sae, x)
    points["gaussian"] = gaussian_like(stats, n, seed_for(cfg.seed, "sae_plateaus.gaussian"))
    # directions: half real-mixture (difference of two public activations), half isotropic
    n_mix = cfg.n_dirs // 2
    i1 = torch.randint(len(pub), (n_mix,), generator=g)
    i2 = torch.randint(len(pub), (n_mix,), generator=g)
    iso = isotropic(cfg.n_dirs - n_mix, x.shape[1], seed_for(cfg.seed, "sae_plateaus.directions"))
    dirs = torch.cat([pub[i1] - pub[i2], iso])
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    dir_kind = np.array(["real_mixture"] * n_mix + ["isotropic"] * (cfg.n_dirs - n_mix))
    max_len = float(tr.units["write_distance_median"])
    lengths = torch.linspace(0, max_len, cfg.ray_steps)
    D = len(dirs)
    out = {"max_length": max_len, "directions": dir_kind.tolist()}
    arrays = {"C_lengths": lengths.numpy()}
    for kind, p in points.items():
        # rays: point i, direction j, sign +/-  ->  [n * D * 2]
        base = p.repeat_interleave(2 * D, 0)
        dd = torch.cat([dirs, -dirs]).repeat(n, 1)  # per point: +d_0..+d_{D-1}, -d_0..-d_{D-1}
        c = trace(eng, toks.repeat_interleave(2 * D, 0), ray_path(base, dd, lengths))
        r, cens = edge_distance(c["kl"], lengths.numpy(), cfg.edge_kl)
        r = r.reshape(n, 2, D)
        cens = cens.reshape(n, 2, D)
        plus, minus = r[:, 0], r[:, 1]
        tot = plus + minus
        t = np.divide(minus, tot, out=np.full_like(tot, np.nan), where=tot > 0)
        centred = 1 - np.abs(2 * t - 1)
        both_cens = cens[:, 0] & cens[:, 1]
        res = {
            "edge_distance": M.summarise(r),
            "nearest_edge_per_point": M.summarise(r.reshape(n, -1).min(1)),
            "fraction_censored": float(cens.mean()),
            "centredness": M.summarise(centred[~both_cens]),
            "fraction_centredness_above_half": float(np.nanmean(centred[~both_cens] > 0.5)),
            "by_direction_kind": {
                k: {
                    "centredness": M.summarise(
                        centred[:, dir_kind == k][~both_cens[:, dir_kind == k]]
                    ),
                    "edge_distance": M.summarise(r[:, :, dir_kind == k]),
                }
                for k in np.unique(dir_kind)
            },
            "kl_at_max_length": M.summarise(c["kl"][:, -1]),
        }
        out[kind] = res
        arrays[f"C_{kind}_edge"] = r
        arrays[f"C_{kind}_centredness"] = centred
        if kind == "real":
            arrays["C_real_censored"] = cens
    # anchoring: shift each real point along +d by delta and measure again along +-d. Edges
    # fixed in space give r+' = r+ - delta and r-' = r- + delta (anchoring 1); edges that move
    # with the point (a mere KL radius around it) give r' = r (anchoring 0).
    r_real = arrays["C_real_edge"]
    delta = cfg.shift_frac * float(np.median(r_real))
    shifted = x[:, None, :] + delta * dirs[None, :, :]  # [n, D, d]
    base = torch.cat([shifted, shifted], 1).reshape(n * 2 * D, -1)  # rays +d block, -d block
    dd = torch.cat([dirs, -dirs]).repeat(n, 1)
    c = trace(eng, toks.repeat_interleave(2 * D, 0), ray_path(base, dd, lengths))
    r2, cens2 = edge_distance(c["kl"], lengths.numpy(), cfg.edge_kl)
    r2, cens2 = r2.reshape(n, 2, D), cens2.reshape(n, 2, D)
    cens1 = arrays.pop("C_real_censored")
    ok_p = ~(cens1[:, 0] | cens2[:, 0])
    ok_m = ~(cens1[:, 1] | cens2[:, 1])
    anch_p = (r_real[:, 0] - r2[:, 0])[ok_p] / delta
    anch_m = (r2[:, 1] - r_real[:, 1])[ok_m] / delta
    out["anchoring"] = {
        "shift": delta,
        "anchoring_plus": M.summarise(anch_p),
        "anchoring_minus": M.summarise(anch_m),
        "anchoring_all": M.summarise(np.concatenate([anch_p, anch_m])),
        "meaning": "1 = the KL edge stays where it is in activation space when the point moves "
        "(a real boundary); 0 = it moves with the point (a KL radius around any point)",
    }
    arrays["C_anchoring"] = np.concatenate([anch_p, anch_m])
    # the seed's anecdote, paired: does SAE(x) sit nearer the chord's centre than x itself?
    point = np.repeat(np.arange(n), D)
    real_c = arrays["C_real_centredness"].ravel()
    out["centredness_minus_real"] = {}
    for name in saes:
        diff = arrays[f"C_{name}_centredness"].ravel() - real_c
        ok = np.isfinite(diff)
        out["centredness_minus_real"][name] = Interval.of(
            bootstrap.bootstrap(np.median, diff[ok], groups=point[ok], seed=cfg.seed)
        )
        near = arrays[f"C_{name}_edge"].reshape(n, -1).min(1) - r_real.reshape(n, -1).min(1)
        out.setdefault("nearest_edge_minus_real", {})[name] = M.summarise(near)
    return out, arrays


def part_d(env, cfg, saes) -> tuple[dict, dict]:
    """P3 along each SAE's decoder directions (a latent active at x, an alive inactive one) and
    isotropic ones, from the same ``n_p3`` context activations (``challenge.protocols.run_p3``)."""
    if cfg.n_p3 == 0:
        return {}, {}
    from challenge.protocols import P3Config, run_p3
    from challenge.sae import sae_direction_sets

    extra = {}
    for name, sae in saes.items():
        sets = sae_direction_sets(sae, env.track, n_base=cfg.n_p3, seed=cfg.seed)
        extra |= {f"{name}:{k}": sets[f"sae_{k}"] for k in ("active", "inactive_alive")}
    p3 = P3Config(n_base=cfg.n_p3, directions=("isotropic",), kl_threshold=cfg.edge_kl,
                  seed=cfg.seed)  # fmt: skip
    res = run_p3(env.track, env.eng, p3, extra)
    lengths = res.arrays["lengths"]

    def reach(kl):
        med = np.median(kl, 0)
        hit = np.nonzero(med >= cfg.edge_kl)[0]
        return float(lengths[hit[0]]) if len(hit) else np.nan

    out = {"lengths": lengths.tolist(), "length_to_kl_threshold": {}, "median_kl": {}}
    arrays = {"D_lengths": lengths}
    for name in res.detail["directions"]:
        kl = res.arrays[f"{name}_kl"]
        # every base its own cluster: the plain row bootstrap (the same draws)
        out["length_to_kl_threshold"][name] = Interval.of(
            bootstrap.bootstrap(reach, kl, seed=cfg.seed)
        )
        out["median_kl"][name] = res.detail["directions"][name]["median_kl"]
        arrays[f"D_{name}_kl"] = kl
    return out, arrays


def run(
    cfg: SAEPlateausConfig, env: StudyEnv | str | Path, *, out: Path, draw: bool = True
) -> SAEPlateausResult:
    """Study 5 on ``env`` (a study environment, or a track id / directory to load); writes
    ``<out>/sae_plateaus.{json,npz}`` (+ ``.png`` when ``draw``)."""
    from challenge.sae import describe, evaluate_sae

    env = as_env(env)
    saes = get_saes(env, cfg)
    stats = ActivationStats.fit(env.track.acts("public"))
    a, arr_a = part_a(env, cfg, saes, stats)
    b, arr_b = part_b(env, cfg, saes)
    c, arr_c = part_c(env, cfg, saes, stats)
    d, arr_d = part_d(env, cfg, saes)
    doc = {
        "question": "Do SAE reconstructions map a plateau's activations to nearby points in "
        "the same plateau; where in a plateau do real activations sit (centre vs edge)?",
        "saes": {
            k: describe(s)
            | {"eval_context_last_position": evaluate_sae(s, env.track.acts("context"))}
            for k, s in saes.items()
        },
        "e2e_sae": "given" if cfg.e2e_sae else ("the track's" if cfg.e2e else "none"),
        "A_reconstruction_step": a,
        "B_plateau_consistency": b,
        "C_centre_vs_edge": c,
        "D_p3_decoder_directions": d,
    }
    arrays = arr_a | arr_b | arr_c | arr_d
    return finish(
        env,
        cfg,
        NAME,
        SAEPlateausResult,
        headline(a, b, c, d),
        doc,
        arrays,
        plot=plot,
        out=out,
        draw=draw,
    )


def plot(res: SAEPlateausResult, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from challenge.plots import save_figure

    doc, arrays, cfg = res.detail, res.arrays, res.config
    saes = list(doc["saes"])
    has_d = "D_lengths" in arrays
    fig, axes = plt.subplots(1, 5 if has_d else 4, figsize=(24 if has_d else 19, 4.2))
    ax = axes[0]
    for i, kind in enumerate([saes[0], "real", "random", "isotropic"]):
        v = arrays[f"A_{saes[0]}_{kind}_kl"]
        x = np.linspace(0, 1, v.shape[1])
        ax.plot(
            x,
            np.median(v, 0),
            color=f"C{i}",
            label=f"toward {kind}" if kind != saes[0] else "toward SAE(x)",
        )
        ax.fill_between(x, *np.percentile(v, [25, 75], 0), color=f"C{i}", alpha=0.15)
    for j, other in enumerate(saes[1:]):  # the other SAEs' own reconstruction steps
        v = arrays[f"A_{other}_{other}_kl"]
        ax.plot(np.linspace(0, 1, v.shape[1]), np.median(v, 0), color=f"C{4 + j}", ls="--",
                label=f"toward {other}(x)")  # fmt: skip
    ax.set_xlabel("fraction of |SAE(x) - x|")
    ax.set_ylabel("KL(p(x) || p)")
    ax.set_title("A: the reconstruction step vs same-length steps", fontsize=9)
    ax = axes[1]
    kl0 = arrays["B_orig_kl"]
    x = np.linspace(0, 1, kl0.shape[1])
    ax.plot(x, np.median(kl0, 0), color="C0", label="original path KL from x_0")
    for i, s in enumerate(saes):
        ax.plot(
            x,
            np.median(arrays[f"B_{s}_recon_kl"], 0),
            color=f"C{i + 1}",
            label=f"{s}(path) KL from r_0",
        )
        ax.plot(x, np.median(arrays[f"B_{s}_kl_x_vs_recon"], 0), ls="--", color=f"C{i + 1}",
                label=f"KL(p(x_s) || p({s}(x_s)))")  # fmt: skip
    ax.axhline(cfg.edge_kl, color="k", lw=0.7, ls=":")
    ax.set_yscale("symlog", linthresh=1e-2)
    ax.set_xlabel("alpha (real-to-real path)")
    ax.set_title("B: plateau consistency", fontsize=9)
    ax = axes[2]
    kinds = [k for k in ("real", *saes, "gaussian") if f"C_{k}_centredness" in arrays]
    data = [arrays[f"C_{k}_centredness"][np.isfinite(arrays[f"C_{k}_centredness"])] for k in kinds]
    ax.boxplot(data, showfliers=False)
    ax.set_xticks(range(1, len(kinds) + 1), kinds)
    ax.axhline(0.5, color="k", lw=0.7, ls=":")
    ax.set_ylabel("centredness 1 - |2t - 1| (1 = centre)")
    ax.set_title("C: where points sit on chords through their plateau", fontsize=9)
    ax = axes[3]
    for i, k in enumerate(kinds):
        e = arrays[f"C_{k}_edge"].ravel()
        ax.hist(e, bins=20, alpha=0.45, color=f"C{i}", label=k)
    ax.set_xlabel(f"edge distance (KL reaches {cfg.edge_kl})")
    ax.set_title("C: distance to the plateau edge along rays", fontsize=9)
    if has_d:
        ax = axes[4]
        lengths = arrays["D_lengths"]
        sets = [k[2:-3] for k in arrays if k.startswith("D_") and k.endswith("_kl")]
        for i, name in enumerate(sets):
            ls = "--" if name.endswith("inactive_alive") else "-"
            ax.plot(lengths, np.median(arrays[f"D_{name}_kl"], 0), ls=ls, color=f"C{i // 2}"
                    if name != "isotropic" else "k", label=name)  # fmt: skip
        ax.axhline(cfg.edge_kl, color="k", lw=0.7, ls=":")
        ax.set_yscale("log")
        ax.set_xlabel("length along the direction")
        ax.set_ylabel("median KL")
        ax.set_title("D: P3 along decoder directions", fontsize=9)
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax is not axes[2]:
            ax.legend(fontsize=7)
    fig.suptitle(f"Study 5: SAEs and plateaus ({res.track.id})", fontsize=10)
    return save_figure(fig, path, dpi=100)
