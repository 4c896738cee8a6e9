"""What the training study measures at one checkpoint, all through the suite's engine.

The checkpoint becomes an in-memory :class:`challenge.track.Track` (public / heldout / context
prompts with their activations at the write point, last position; units from
:func:`challenge.track.measure_units`), and then:

- **probes** (``challenge.probes.run_probes``, the challenge's own): the plateau radius
  (bisection, ``radius.mean_log`` = mean log radius / median write norm) and P2 sharpness (KL and
  L2) at ``n_points`` held-out real activations and as many N(mu, Sigma) points (fitted on the
  public split), in the same slots (context, directions): a paired design;
- **boundaries** (``challenge.studies.boundaries``: ``flip_counts``, ``analyse``): MLP units
  after the write point whose pre-activation changes sign per step along real-to-real paths and
  paths toward N(mu, Sigma); a path *coincides* when its busiest-flip step is within ``window``
  steps of its KL max-slope step; the rate against the step-shuffle null
  (``controls.step_shuffle_null``: another path's max-slope step);
- **local complexity** (Humayun et al. 2024's cross-polytope): around each point, ``2 Q``
  vertices ``x +- r q_i`` (``Q`` random orthonormal directions, ``r = lc_radius`` x the median
  real-to-real distance); LC = MLP units (after the write point) whose pre-activation sign is
  not the same at the centre and all vertices. For modadd the MLP input is affine in the written
  point, so this counts exactly the units whose hyperplane cuts the polytope; for lm it goes
  through a LayerNorm and attention (the vertex-sign count, as Humayun et al. use for deep layers).
"""

from __future__ import annotations

import numpy as np
import torch

from challenge import bootstrap as B
from challenge.directions import ActivationStats, gaussian_like
from challenge.engine import EngineConfig, PerturbationEngine
from challenge.models import LoadedModel, ModelSpec
from challenge.paths import linear_path
from challenge.probes import ProbeConfig, Slots, run_probes, unit_directions
from challenge.prompts import PromptSpec
from challenge.studies import controls as C
from challenge.studies._common import trace, write_point_acts
from challenge.studies.boundaries import BoundariesConfig, analyse, flip_counts
from challenge.studies.training import models as Mo
from challenge.studies.training.config import TrainingConfig, seed_of
from challenge.track import Track, TrackSpec, measure_units

WRITE, READ = "blocks.1.hook_resid_pre", "blocks.1.hook_resid_post"
"""modadd: Nanda's ``blocks.0.hook_resid_mid`` at ``=`` (the MLP's input); lm: the residual
stream entering the last block, last position."""


def prompts(cfg: TrainingConfig) -> dict[str, torch.Tensor]:
    """Token windows per split: modadd's public = training pairs, heldout / context = test pairs
    (disjoint); lm's public from the training text, heldout / context from the test text."""
    n = max(2 * cfg.n_points, cfg.n_paths + 2)
    g = np.random.default_rng(seed_of(cfg.seed, "training.points"))
    if cfg.model == "modadd":
        (xt, _), (xe, _) = Mo.modadd_data(cfg.p, cfg.frac, seed_of(cfg.seed, "training.split"))
        pub = xt[torch.from_numpy(g.permutation(len(xt))[:2000])]
        te = xe[torch.from_numpy(g.permutation(len(xe))[: 2 * n])]
        return {"public": pub, "heldout": te[:n], "context": te[n:]}
    train, test = Mo.lm_split(Mo.lm_text())
    L = cfg.prompt_len
    pub = Mo.windows(train, g.integers(0, len(train) - L, 2000), L)
    te = Mo.windows(test, g.choice(len(test) - L, 2 * n, replace=False), L)
    return {"public": pub, "heldout": te[:n], "context": te[n:]}


def checkpoint_env(cfg: TrainingConfig, model, step: int, toks: dict[str, torch.Tensor]):
    """(track, loaded model, engine) of one checkpoint."""
    eng = PerturbationEngine(model, EngineConfig(write_hook=WRITE, read_hook=READ, progress=False))
    acts = {s: write_point_acts(eng, t) for s, t in toks.items()}
    units = measure_units(eng, toks["context"], acts["context"])
    spec = TrackSpec(
        track_id=f"training-{cfg.model}",
        version=f"step-{step}",
        model=ModelSpec(name=f"training-{cfg.model}"),
        write_hook=WRITE,
        read_hook=READ,
        prompts=PromptSpec(source="pydoc", n_tokens=toks["public"].shape[1]),
        n_public=len(toks["public"]),
        n_heldout=len(toks["heldout"]),
        n_context=len(toks["context"]),
        seed=cfg.seed,
        description=f"{cfg.model} checkpoint at step {step}, write {WRITE}, last position",
    )
    splits = {s: {"tokens": toks[s].numpy(), "activation": acts[s].numpy()} for s in toks}
    meta = {"units": units, "sizes": {s: len(t) for s, t in toks.items()}}
    track = Track(spec=spec, meta=meta, splits=splits)
    lm = LoadedModel(model, None, spec.model, {"model": f"training-{cfg.model}", "step": step})
    return track, lm, eng


def paired(real: np.ndarray, gauss: np.ndarray, cfg: TrainingConfig, stream: int) -> dict:
    """Means of a per-point feature at real and N(mu, Sigma) points, and the paired mean
    difference (real - Gaussian) with its bootstrap interval and minimum detectable effect."""
    ok = np.isfinite(real) & np.isfinite(gauss)
    seed = seed_of(cfg.seed, "training.bootstrap", stream)
    est = B.bootstrap(
        lambda a, b: float(np.mean(a - b)), real[ok], gauss[ok], n_boot=cfg.n_boot, seed=seed
    )
    sd = float(np.std(real[ok] - gauss[ok])) if ok.sum() > 1 else float("nan")
    return {
        "real": float(np.mean(real[ok])) if ok.any() else None,
        "gaussian": float(np.mean(gauss[ok])) if ok.any() else None,
        "diff": est.value, "lo": est.lo, "hi": est.hi, "n": int(ok.sum()),
        "mde": C.mde_mean(sd, int(ok.sum())) if ok.sum() > 1 else None,
    }  # fmt: skip


def local_complexity(eng, tokens, points, radius: float, q: int, seed: int) -> np.ndarray:
    """Per point, the MLP units whose pre-activation sign changes over the cross-polytope
    ``conv{x +- radius q_i}`` (centre and vertices; see the module docstring)."""
    n, d = points.shape
    g = torch.Generator().manual_seed(seed)
    dirs = torch.linalg.qr(torch.randn(n, d, min(q, d), generator=g))[0].transpose(1, 2)
    paths = torch.cat(
        [points[:, None], points[:, None] + radius * dirs, points[:, None] - radius * dirs], 1
    )

    def count(out, logp):
        pos = out["mlp_pre"] > 0  # [b, S, layers, d_mlp]
        return {"lc": (pos.any(1) & ~pos.all(1)).sum((-1, -2)).to(torch.int32)}

    return trace(eng, tokens, paths, capture_mlp_pre=True, extra=count)["lc"].astype(np.float64)


def coincidence_test(flips: np.ndarray, ms: np.ndarray, cfg: TrainingConfig, stream: int) -> dict:
    """Busiest-flip step vs KL max-slope step per path: the coincidence rate (``window``), its
    bootstrap interval and MDE, its exact chance under the step-shuffle null and the null's
    p-value (one-sided: more often than with another path's step). Paths without a flip are
    left out (no busiest step)."""
    keep = flips.sum(1) > 0
    busiest, ms = flips[keep].argmax(1) + 1, ms[keep].astype(np.int64)
    out = {"n_paths": int(keep.sum()), "n_without_flips": int((~keep).sum())}
    if keep.sum() < 3:
        return out | {
            "rate": None,
            "lo": None,
            "hi": None,
            "chance": None,
            "p_value": None,
            "mde": None,
        }
    seed = seed_of(cfg.seed, "training.null", stream)
    null = C.step_shuffle_null(
        lambda s: C.coincidence(busiest, s, cfg.window), ms, n_draws=cfg.n_null, seed=seed
    )
    est = B.bootstrap(lambda a, b: float(np.mean(np.abs(a - b) <= cfg.window)), busiest, ms,
                      n_boot=cfg.n_boot, seed=seed_of(cfg.seed, "training.bootstrap", stream))  # fmt: skip
    return out | {
        "rate": null.observed, "lo": est.lo, "hi": est.hi,
        "chance": C.coincidence_chance(busiest, ms, cfg.window), "p_value": null.p_value,
        "mde": C.mde_from_interval(est.lo, est.hi) if np.isfinite(est.lo) else None,
    }  # fmt: skip


def measure(
    cfg: TrainingConfig, model, step: int, toks: dict[str, torch.Tensor]
) -> tuple[dict, dict]:
    """One checkpoint's document and per-point arrays."""
    track, _, eng = checkpoint_env(cfg, model, step, toks)
    units, n = track.units, cfg.n_points
    ctx_t, ctx_a, held, pub = (
        track.tokens("context"),
        track.acts("context"),
        track.acts("heldout"),
        track.acts("public"),
    )
    stats = ActivationStats.fit(pub)
    real = held[:n]
    gauss = gaussian_like(stats, n, seed_of(cfg.seed, "training.gaussian"))
    g = torch.Generator().manual_seed(seed_of(cfg.seed, "training.directions"))
    slots = Slots(
        ctx_t[:n], ctx_a[:n], unit_directions(n, cfg.n_directions, track.d_model, g), gauss
    )
    pcfg = ProbeConfig(probes=("radius", "p2"), n_directions=cfg.n_directions)
    f = {
        k: run_probes(eng, pts, slots, pub, units, pcfg)
        for k, pts in (("real", real), ("gaussian", gauss))
    }
    censored = {
        k: float(np.mean(v["radius.max_log"] >= np.log(pcfg.r_max) - 0.05)) for k, v in f.items()
    }
    doc = {"step": step, "units": units, "radius_at_r_max_fraction": censored}
    for i, feat in enumerate(("radius.mean_log", "p2.sharpness_kl", "p2.sharpness_l2")):
        doc[feat] = paired(f["real"][feat], f["gaussian"][feat], cfg, i)
    arrays = {
        f"{k}_{feat}": f[k][feat] for k in f for feat in ("radius.mean_log", "p2.sharpness_kl")
    }
    # boundaries along paths (study 4's functions)
    bcfg = BoundariesConfig(
        n_paths=cfg.n_paths, n_steps=cfg.n_steps, window=cfg.window, seed=cfg.seed
    )
    gp = torch.Generator().manual_seed(seed_of(cfg.seed, "training.points", 1))
    idx = torch.randperm(len(ctx_a), generator=gp)[: cfg.n_paths]
    m = len(idx)
    targets = {"real": held[torch.randperm(len(held), generator=gp)[:m]],
               "gaussian": gaussian_like(stats, m, seed_of(cfg.seed, "training.gaussian", 1))}  # fmt: skip
    n_units = model.cfg.d_mlp * (model.cfg.n_layers - 1)
    doc["boundaries"] = {}
    for j, (kind, t) in enumerate(targets.items()):
        a = ctx_a[idx]
        c = flip_counts(eng, ctx_t[idx], linear_path(a, t, cfg.n_steps))
        bd, barr = analyse(c, bcfg, (t - a).norm(dim=-1).numpy())
        doc["boundaries"][kind] = {
            "coincidence": coincidence_test(barr["flips_total"], barr["ms_kl"], cfg, 10 + j),
            "flips_per_path": bd["crossings_per_path"],
            "ratio_at_ms_kl": bd["bunching_at_ms_kl"]["ratio_at_max_slope"],
            "corr_pooled_dkl": bd["corr_pooled"]["dkl"],
            "ms_at_last_step_fraction_kl": bd["ms_at_last_step_fraction"]["kl"],
        }
        arrays[f"{kind}_flips_total"] = barr["flips_total"]
        arrays[f"{kind}_ms_kl"] = barr["ms_kl"]
    # local complexity around real and N(mu, Sigma) points
    r = cfg.lc_radius * units["write_distance_median"]
    lc = {k: local_complexity(eng, slots.tokens, pts, r, cfg.lc_directions, seed_of(cfg.seed, "training.lc"))
          for k, pts in (("real", real), ("gaussian", gauss))}  # fmt: skip
    doc["local_complexity"] = paired(lc["real"], lc["gaussian"], cfg, 20) | {
        "radius": r, "n_units": n_units, "directions": min(cfg.lc_directions, track.d_model)}  # fmt: skip
    arrays |= {f"{k}_lc": v for k, v in lc.items()}
    return doc, arrays
