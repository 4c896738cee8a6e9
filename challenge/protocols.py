"""The published protocols as typed configs, runners and results (see docs/protocols.md).

- P1 "teren" (Giglemiani et al. 2024): from a real activation toward a target, relative
  (``linspace(0,1,100)``) or absolute (fixed step) scheme; curve features MS, AP, NL, AR.
- P2 "stable regions" (Janiak et al. 2024): interpolation between adjacent prompts' activations,
  sharpness = max d'(alpha)/d(1).
- P3 sensitive directions (Lee & Heimersheim 2024): x + L d/||d|| over a length grid.

Units: ``gpt2`` uses the published constants (GPT-2 small's scale); ``scale_free`` derives
them from the track's measured units (``Track.units``):
absolute step = median real-to-real write distance / 100; plateau distance = 0.2 x median
read-out distance at the end of a real-to-real path; P3 lengths = published grid / 91 x median
write-point norm. Every result records which units were used and the resolved values.

``run_p1`` / ``run_p2`` / ``run_p3`` run a protocol with a given engine and return its typed
result (:class:`P1Result`, ...); :func:`run_protocol` does the whole job for a track and a
model: engine, run, JSON + ``.npz`` + PNG.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from challenge import bootstrap, checks, rng
from challenge import metrics as M
from challenge.directions import (
    ActivationStats,
    cov_random_mixture,
    gaussian_like,
    isotropic,
    real_mixture,
)
from challenge.distributed import DistributedConfig, resumable
from challenge.distributed_engine import distribute
from challenge.engine import Curves, PerturbationEngine
from challenge.errors import ConfigError
from challenge.metrics import Summary
from challenge.paths import (
    absolute_path,
    arc_path,
    linear_path,
    p3_length_grid,
    published_path,
    ray_path,
)
from challenge.results import Result, TrackRef, provenance
from challenge.schemas import JSON_CONFIG

Units = Literal["gpt2", "scale_free"]
UNITS = ("gpt2", "scale_free")
GPT2 = {"abs_step": 0.5, "plateau_distance": 20.0, "slope_threshold": 0.02}
DIRECTION_KINDS = ("isotropic", "gaussian", "cov_mixture", "real_mixture")


# ---------------------------------------------------------------------------------------- P1
@dataclass
class P1Config:
    """P1 "teren" plateau protocol."""

    __pydantic_config__ = JSON_CONFIG

    scheme: Literal["relative", "absolute"] = "relative"
    """``relative``: ``n_steps`` points on ``linspace(0, 1)`` from the base to its target;
    ``absolute``: steps of fixed length ``abs_step`` toward the target."""
    units: Units = "scale_free"
    """``gpt2``: the published constants; ``scale_free``: derived from the track's units."""
    n_curves: int = 200
    """Context prompts probed (each toward a real and a random target)."""
    n_steps: int = 100
    """Relative: points on the path; absolute: the path has ``n_steps + 1`` points. A curve
    needs at least ``metrics.NL_FIT_STEPS`` (10) points, the nonlinearity step's fit window."""
    slope_threshold: float = 0.02
    """MS: the smallest slope that counts. ``suite``: of the curve normalised to end at 1;
    ``published``: of the raw L2 / KL curve. The L2 threshold is in GPT-2 read-out units
    (``scale_free`` rescales it by ``plateau_distance / 20``, as it does the plateau distance);
    the KL threshold is in nats, the same on every model, so it is never rescaled."""
    plateau_distance: float | None = None
    """AP: the read-out distance that ends the plateau (``None``: from ``units``)."""
    abs_step: float | None = None
    """Absolute scheme: the step length at the write point (``None``: from ``units``)."""
    definitions: Literal["suite", "published"] = "suite"
    """``suite``: the suite's features (MS on normalised curves, least-squares NL, AR returning
    i, AP from the base toward the tested point, absolute steps clamped at the target);
    ``published``: the papers' code exactly (teren, branch ``explorations``): their paths
    (``paths.published_path``), MS / AR on ``curve[:target_step]``, NL on the whole curve
    (``metrics.*_published``), and AP from their AP experiment: the tested activation (real or
    N(mu, Sigma)) written in the base prompt's context and moved toward a fresh N(mu, Sigma)
    sample."""
    seed: int = 0
    """Run seed; contexts and targets use the ``p1.*`` streams of ``challenge.rng``."""

    def __post_init__(self) -> None:
        checks.choice(self.scheme, ("relative", "absolute"), "scheme")
        checks.choice(self.definitions, M.DEFINITIONS, "definitions")
        if self.definitions == "published":  # their NL needs more than 10 points
            checks.integer(self.n_steps, "n_steps", minimum=M.NL_FIT_STEPS + 1)
        checks.choice(self.units, UNITS, "units")
        checks.integer(self.n_curves, "n_curves", minimum=1)
        points = M.NL_FIT_STEPS - (self.scheme == "absolute")  # n_steps giving 10 points
        checks.integer(self.n_steps, "n_steps", minimum=points)
        checks.number(self.slope_threshold, "slope_threshold", minimum=0)
        checks.number(self.plateau_distance, "plateau_distance", positive=True, optional=True)
        checks.number(self.abs_step, "abs_step", positive=True, optional=True)
        checks.integer(self.seed, "seed")


def resolve_p1(cfg: P1Config, units: dict[str, float]) -> dict[str, float]:
    """The constants a P1 run uses, in read-out / write-point units."""
    if cfg.units not in UNITS:
        raise ConfigError(f"unknown units {cfg.units!r}", field="units")
    if cfg.units == "gpt2":
        r = dict(GPT2)
    else:
        r = {
            "abs_step": units["write_distance_median"] / 100.0,
            "plateau_distance": 0.2 * units["read_distance_median"],
            "slope_threshold": cfg.slope_threshold,
        }
    if cfg.plateau_distance is not None:
        r["plateau_distance"] = cfg.plateau_distance
    if cfg.abs_step is not None:
        r["abs_step"] = cfg.abs_step
    r["slope_threshold"] = cfg.slope_threshold
    r["slope_threshold_kl"] = cfg.slope_threshold  # nats: a unit every model shares
    if cfg.definitions == "published" and cfg.units == "scale_free":
        r["slope_threshold"] = (
            cfg.slope_threshold * r["plateau_distance"] / GPT2["plateau_distance"]
        )
    r["units"] = cfg.units
    r["definitions"] = cfg.definitions
    return r


def p1_paths(
    bases: Float[Tensor, "n d"], targets: Float[Tensor, "n d"], cfg: P1Config, r: dict
) -> Float[Tensor, "n steps d"]:
    if cfg.scheme == "relative":
        return linear_path(bases, targets, cfg.n_steps)
    return absolute_path(bases, targets, step_size=r["abs_step"], n_steps=cfg.n_steps + 1)


def p1_features(curves: Curves, cfg: P1Config, r: dict) -> dict[str, np.ndarray]:
    """Per-curve features: max-slope step on L2 and KL (curves normalised to end at 1),
    plateau length (first step with L2 >= plateau distance), nonlinearity and area-ratio steps."""
    th = r["slope_threshold"]
    return {
        "ms_l2": M.max_slope_step(curves.l2, threshold=th, normalise=True),
        "ms_kl": M.max_slope_step(curves.kl, threshold=th, normalise=True),
        "plateau_length": M.plateau_length(curves.l2, threshold=r["plateau_distance"]),
        "nl_l2": M.nonlinearity_step(curves.l2),
        "ar_l2": M.area_ratio_step(curves.l2),
    }


def p1_probe(
    engine: PerturbationEngine,
    tokens: Int[Tensor, "n pos"],
    bases: Float[Tensor, "n d"],
    targets: Float[Tensor, "n d"],
    cfg: P1Config,
    r: dict,
    desc: str = "P1",
) -> tuple[Curves, dict[str, np.ndarray]]:
    """Curves from each base (written in its context prompt) toward its target, and features."""
    curves = engine.curves(tokens, p1_paths(bases, targets, cfg, r), desc=desc)
    return curves, p1_features(curves, cfg, r)


def p1_features_published(
    curves: Curves,
    cut: np.ndarray,
    ap_curves: Curves | None,
    ap_cut: np.ndarray | None,
    r: dict,
) -> dict[str, np.ndarray]:
    """Per-curve features as the papers' code computes them: MS (L2 and KL) and AR over
    ``curve[:cut]``, NL over the whole curve, AP over ``ap_curve[:ap_cut]`` of the AP experiment's
    curves. A curve cut below the ``metrics.PUBLISHED_MIN_POINTS`` (7) points AR needs (their
    code fails on it) gets NaN features,
    which the summaries and KS leave out (``detail['n_short']`` counts them)."""
    th, th_kl, n = r["slope_threshold"], r["slope_threshold_kl"], curves.l2.shape[1]
    feats = {k: np.full(len(cut), np.nan) for k in ("ms_l2", "ms_kl", "ar_l2")}
    for i, c in enumerate(np.minimum(cut, n)):
        if c < M.PUBLISHED_MIN_POINTS:
            continue
        feats["ms_l2"][i] = M.max_slope_step_published(curves.l2[i, :c], threshold=th)[0]
        feats["ms_kl"][i] = M.max_slope_step_published(curves.kl[i, :c], threshold=th_kl)[0]
        feats["ar_l2"][i] = M.area_ratio_step_published(curves.l2[i, :c])[0]
    if ap_curves is None:  # AP not run (``p1_published_probe(ap_ends=None)``)
        ap = np.full(len(cut), np.nan)
    else:
        ap = M.plateau_length_published(ap_curves.l2, ap_cut, threshold=r["plateau_distance"])
    return {
        "ms_l2": feats["ms_l2"],
        "ms_kl": feats["ms_kl"],
        "plateau_length": ap,
        "nl_l2": M.nonlinearity_step_published(curves.l2),
        "ar_l2": feats["ar_l2"],
    }


def p1_published_probe(
    engine: PerturbationEngine,
    tokens: Int[Tensor, "n pos"],
    bases: Float[Tensor, "n d"],
    tested: Float[Tensor, "n d"],
    ap_ends: Float[Tensor, "n d"] | None,
    cfg: P1Config,
    r: dict,
    desc: str = "P1",
) -> tuple[Curves, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The papers' two experiments for one group of tested activations, each in its base
    prompt's context: from the base toward ``tested`` (MS, NL, AR: ``replications.ipynb``), and
    from ``tested`` toward a fresh N(mu, Sigma) sample ``ap_ends`` (AP:
    ``experiment_plateaus.ipynb``). Returns the first experiment's curves, the features, and the
    extra arrays (the AP curves ``ap_<metric>`` and both experiments' target steps). With
    ``ap_ends=None`` only the first experiment runs (``plateau_length`` is NaN; the atlas takes
    AP from ``probes.plateau_length_ap``, the same definition evaluated in chunks)."""
    step = r["abs_step"] if cfg.scheme == "absolute" else None
    x, cut = published_path(bases, tested, cfg.n_steps, step)
    curves = engine.curves(tokens, x, desc=desc)
    if ap_ends is None:
        feats = p1_features_published(curves, cut.numpy(), None, None, r)
        return curves, feats, {"target_step": cut.numpy()}
    x_ap, ap_cut = published_path(tested, ap_ends, cfg.n_steps, step)
    ap_curves = engine.curves(tokens, x_ap, desc=f"{desc} AP")
    feats = p1_features_published(curves, cut.numpy(), ap_curves, ap_cut.numpy(), r)
    extra = {f"ap_{k}": v for k, v in ap_curves.arrays().items()}
    extra |= {"target_step": cut.numpy(), "ap_target_step": ap_cut.numpy()}
    return curves, feats, extra


def compare_features(
    ref: dict[str, np.ndarray],
    other: dict[str, np.ndarray],
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, dict]:
    """Per feature: summaries of both samples, the KS statistic between their finite values and
    the mean difference ``ref - other``, each with a 95 % percentile interval over ``n_boot``
    bootstrap resamples of the curves. The two samples are paired (curve ``i`` of both shares
    its context prompt), so one index draw resamples both."""

    def finite(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return x[np.isfinite(x)]

    n = len(next(iter(ref.values())))
    boot = bootstrap.resample(n, n_boot, rng.seed_for(seed, "p1.bootstrap"))

    def ci(v: np.ndarray) -> list[float]:
        return list(bootstrap.interval(v)) if np.isfinite(v).any() else []

    out = {}
    for k in ref:
        a, b = np.asarray(ref[k], np.float64), np.asarray(other[k], np.float64)
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN resample: NaN, dropped
            diffs = np.nanmean(a[boot], 1) - np.nanmean(b[boot], 1)
        ks = np.array([M.ks_fast(finite(a[i]), finite(b[i])) for i in boot])
        out[k] = {
            "ref": M.summarise(ref[k]),
            "other": M.summarise(other[k]),
            "ks": M.ks_statistic(finite(ref[k]), finite(other[k])),
            "ks_ci": ci(ks),
            "diff": float(np.nanmean(a) - np.nanmean(b)),
            "diff_ci": ci(diffs),
        }
    return out


@dataclass
class FeatureContrast:
    """One P1 feature over real targets vs random N(mu, Sigma) targets."""

    __pydantic_config__ = JSON_CONFIG

    real: float | None
    """Mean of the feature over the curves toward real targets."""
    random: float | None
    """Mean of the feature over the curves toward random targets."""
    ks: float
    """Two-sample KS statistic between the two samples."""
    ks_ci: list[float] | None = None
    """95 % bootstrap interval of ``ks`` (curves resampled, paired by context)."""
    diff_ci: list[float] | None = None
    """95 % bootstrap interval of the mean difference real - random."""


@dataclass
class P1Headline:
    """Real mean, random mean and KS of each P1 curve feature."""

    __pydantic_config__ = JSON_CONFIG

    ms_l2: FeatureContrast
    ms_kl: FeatureContrast
    plateau_length: FeatureContrast
    nl_l2: FeatureContrast
    ar_l2: FeatureContrast

    @classmethod
    def of(cls, features: dict[str, dict]) -> P1Headline:
        """From :func:`compare_features` of (real, random)."""
        return cls(
            **{
                k: FeatureContrast(
                    real=v["ref"]["mean"],
                    random=v["other"]["mean"],
                    ks=v["ks"],
                    ks_ci=v.get("ks_ci"),
                    diff_ci=v.get("diff_ci"),
                )
                for k, v in features.items()
            }
        )


@dataclass
class P1Result(Result):
    """A P1 run. ``detail``: ``resolved`` constants, ``features`` (summaries of both samples
    and KS per feature), ``n_curves``. ``arrays``: ``{real,random}_{l2,kl,js,ce,top1_changed}``
    ``[n, steps]`` and ``{real,random}_feat_<feature>`` ``[n]``."""

    __pydantic_config__ = JSON_CONFIG

    kind: Literal["p1"]
    config: P1Config
    headline: P1Headline


# ---------------------------------------------------------------------------------------- P2
@dataclass
class P2Config:
    """P2 "stable regions" interpolation between adjacent prompts (i, i+1)."""

    __pydantic_config__ = JSON_CONFIG

    n_pairs: int = 100
    """Adjacent context pairs interpolated (at most the number of context prompts - 1)."""
    n_steps: int = 51
    """Points on each interpolation, ends included."""
    variant: Literal["linear", "arc"] = "linear"
    """``linear``: the straight segment; ``arc``: around the mean activation."""
    control: bool = True
    """Also run a cov-random-mixture direction of the same length from each start."""
    seed: int = 0
    """Run seed; the control directions use the ``p2.control`` stream."""

    def __post_init__(self) -> None:
        checks.integer(self.n_pairs, "n_pairs", minimum=1)
        checks.integer(self.n_steps, "n_steps", minimum=2)
        checks.choice(self.variant, ("linear", "arc"), "variant")
        checks.boolean(self.control, "control")
        checks.integer(self.seed, "seed")


def p2_paths(a: Tensor, b: Tensor, cfg: P2Config, mean: Tensor | None) -> Tensor:
    if cfg.variant == "arc":
        if mean is None:
            raise ConfigError("arc variant needs the mean activation", field="variant")
        return arc_path(a, b, mean, cfg.n_steps)
    return linear_path(a, b, cfg.n_steps)


def p2_sharpness(curves: Curves) -> dict[str, np.ndarray]:
    return {"sharpness_l2": M.sharpness(curves.l2), "sharpness_kl": M.sharpness(curves.kl)}


@dataclass
class Sharpness:
    """Summaries of P2 sharpness (max d'(alpha) / d(1)) over the interpolations of one group."""

    __pydantic_config__ = JSON_CONFIG

    sharpness_l2: Summary
    sharpness_kl: Summary


@dataclass
class P2Headline:
    """Sharpness of the real interpolations and of the random control."""

    __pydantic_config__ = JSON_CONFIG

    real: Sharpness
    random: Sharpness | None = None
    """``None`` without the control."""


@dataclass
class P2Result(Result):
    """A P2 run. ``detail``: ``n_pairs``, ``sharpness`` per group and, with the control,
    ``ks_real_vs_random``. ``arrays``: ``{real,random}_{l2,kl,js,ce,top1_changed}``
    ``[n, steps]`` and ``{real,random}_sharpness_{l2,kl}`` ``[n]``."""

    __pydantic_config__ = JSON_CONFIG

    kind: Literal["p2"]
    config: P2Config
    headline: P2Headline


# ---------------------------------------------------------------------------------------- P3
@dataclass
class P3Config:
    """P3 sensitive directions: x + L d/||d|| over the published length grid."""

    __pydantic_config__ = JSON_CONFIG

    units: Units = "scale_free"
    """``gpt2``: the published length grid; ``scale_free``: scaled to the track's norms."""
    n_base: int = 100
    """Context activations the rays start from."""
    directions: tuple[str, ...] = DIRECTION_KINDS
    """Direction kinds, among ``isotropic``, ``gaussian``, ``cov_mixture``, ``real_mixture``."""
    kl_threshold: float = 0.1
    """Nats: the headline length is the first at which the median KL reaches it."""
    seed: int = 0
    """Run seed; the i-th direction kind uses index i of the ``p3.direction`` stream."""

    def __post_init__(self) -> None:
        checks.choice(self.units, UNITS, "units")
        checks.integer(self.n_base, "n_base", minimum=1)
        self.directions = tuple(self.directions)
        if not self.directions:
            raise ConfigError("at least one direction kind is needed", field="directions")
        for k in self.directions:
            checks.choice(k, DIRECTION_KINDS, "directions")
        if len(set(self.directions)) != len(self.directions):
            raise ConfigError(f"repeated kinds in {list(self.directions)}", field="directions")
        checks.number(self.kl_threshold, "kl_threshold", positive=True)
        checks.integer(self.seed, "seed")


def p3_lengths(cfg: P3Config, units: dict[str, float]) -> Tensor:
    grid = torch.cat([torch.zeros(1), p3_length_grid()])
    if cfg.units == "gpt2":
        return grid
    return grid / 91.0 * units["write_norm_median"]


def p3_directions(
    kinds: tuple[str, ...], public: Tensor, stats: ActivationStats, n: int, seed: int
) -> dict[str, Tensor]:
    """``n`` directions per kind; the i-th kind draws from index i of the ``p3.direction`` stream."""
    out = {}
    for i, k in enumerate(kinds):
        g = rng.generator(seed, "p3.direction", i)
        if k == "isotropic":
            out[k] = isotropic(n, public.shape[1], g)
        elif k == "gaussian":
            out[k] = gaussian_like(stats, n, g)
        elif k == "cov_mixture":
            out[k] = cov_random_mixture(stats, n, g)
        elif k == "real_mixture":
            out[k] = real_mixture(public, n, g)
        else:
            raise ConfigError(f"unknown direction kind {k!r}", field="directions")
    return out


def p3_probe(
    engine: PerturbationEngine,
    tokens: Tensor,
    bases: Tensor,
    directions: dict[str, Tensor],
    lengths: Tensor,
    kl_threshold: float = 0.1,
) -> tuple[dict[str, Curves], dict[str, dict]]:
    """Curves along each direction kind from the same bases; summary per kind."""
    curves, summary = {}, {}
    for name, d in directions.items():
        c = engine.curves(tokens, ray_path(bases, d, lengths), desc=f"P3 {name}")
        curves[name] = c
        med_kl = np.median(c.kl, axis=0)
        hit = np.nonzero(med_kl >= kl_threshold)[0]
        summary[name] = {
            "median_kl": med_kl.tolist(),
            "median_l2": np.median(c.l2, axis=0).tolist(),
            "length_to_kl_threshold": float(lengths[hit[0]]) if len(hit) else None,
            "kl_at_max_length": M.summarise(c.kl[:, -1]),
        }
    return curves, summary


@dataclass
class P3Headline:
    """Per direction kind: the length at which the median KL first reaches the threshold."""

    __pydantic_config__ = JSON_CONFIG

    length_to_kl_threshold: dict[str, float | None]
    """``None`` where the median KL stays below the threshold over the whole grid."""


@dataclass
class P3Result(Result):
    """A P3 run. ``detail``: ``lengths`` and, per direction kind, ``directions[kind]``
    (median KL and L2 per length, length to the KL threshold, KL at the largest length).
    ``arrays``: ``lengths`` and ``<kind>_{l2,kl,js,ce,top1_changed}`` ``[n, lengths]``."""

    __pydantic_config__ = JSON_CONFIG

    kind: Literal["p3"]
    config: P3Config
    headline: P3Headline


# ------------------------------------------------------------------------------ runners
def run_p1(track, engine: PerturbationEngine, cfg: P1Config) -> P1Result:
    """Real targets (another prompt's activation) vs random N(mu, Sigma) targets."""
    r = resolve_p1(cfg, track.units)
    ctx_t, ctx_a, held = track.tokens("context"), track.acts("context"), track.acts("heldout")
    idx = rng.subset(len(ctx_a), cfg.n_curves, cfg.seed, "p1.contexts")
    n = len(idx)
    real_t = held[rng.subset(len(held), n, cfg.seed, "p1.real_targets")]
    stats = ActivationStats.fit(track.acts("public"))
    rand_t = gaussian_like(stats, n, rng.generator(cfg.seed, "p1.random_targets"))
    detail: dict = {}
    if cfg.definitions == "published":
        ap_ends = gaussian_like(stats, n, rng.generator(cfg.seed, "p1.ap_ends"))
        groups = {}
        for name, tested in (("real", real_t), ("random", rand_t)):
            groups[name] = p1_published_probe(
                engine, ctx_t[idx], ctx_a[idx], tested, ap_ends, cfg, r, f"P1 {name}"
            )
        (c_real, f_real, ex_real), (c_rand, f_rand, ex_rand) = groups["real"], groups["random"]
        detail["n_short"] = {
            k: int(np.isnan(f["ms_l2"]).sum()) for k, f in (("real", f_real), ("random", f_rand))
        }
    else:
        c_real, f_real = p1_probe(engine, ctx_t[idx], ctx_a[idx], real_t, cfg, r, "P1 real")
        c_rand, f_rand = p1_probe(engine, ctx_t[idx], ctx_a[idx], rand_t, cfg, r, "P1 random")
        ex_real = ex_rand = {}
    features = compare_features(f_real, f_rand, seed=cfg.seed)
    arrays = {f"real_{k}": v for k, v in (c_real.arrays() | ex_real).items()} | {
        f"random_{k}": v for k, v in (c_rand.arrays() | ex_rand).items()
    }
    arrays |= {f"real_feat_{k}": v for k, v in f_real.items()} | {
        f"random_feat_{k}": v for k, v in f_rand.items()
    }
    return P1Result(
        kind="p1",
        config=cfg,
        headline=P1Headline.of(features),
        detail={"resolved": r, "features": features, "n_curves": n} | detail,
        track=TrackRef.of(track),
        provenance=provenance(engine.describe()),
        arrays=arrays,
    )


def run_p2(track, engine: PerturbationEngine, cfg: P2Config) -> P2Result:
    """Interpolations between adjacent context prompts' activations, and the random control."""
    ctx_t, ctx_a = track.tokens("context"), track.acts("context")
    n = min(cfg.n_pairs, len(ctx_a) - 1)
    a, b, toks = ctx_a[:n], ctx_a[1 : n + 1], ctx_t[:n]
    mean = track.acts("public").mean(0)
    c_real = engine.curves(toks, p2_paths(a, b, cfg, mean), desc="P2 real")
    s_real = p2_sharpness(c_real)
    detail: dict = {"n_pairs": n, "sharpness": {}}
    arrays = {f"real_{k}": v for k, v in c_real.arrays().items()} | {
        f"real_{k}": v for k, v in s_real.items()
    }
    groups = {"real": s_real}
    if cfg.control:
        stats = ActivationStats.fit(track.acts("public"))
        d = cov_random_mixture(stats, n, rng.generator(cfg.seed, "p2.control"))
        d = d / d.norm(dim=-1, keepdim=True) * (b - a).norm(dim=-1, keepdim=True)
        c_rand = engine.curves(toks, p2_paths(a, a + d, cfg, mean), desc="P2 random")
        s_rand = p2_sharpness(c_rand)
        groups["random"] = s_rand
        arrays |= {f"random_{k}": v for k, v in c_rand.arrays().items()} | {
            f"random_{k}": v for k, v in s_rand.items()
        }
    for g, s in groups.items():
        detail["sharpness"][g] = {k: M.summarise(v) for k, v in s.items()}
    if cfg.control:
        detail["ks_real_vs_random"] = {
            k: M.ks_statistic(groups["real"][k], groups["random"][k]) for k in s_real
        }
    sharp = {g: Sharpness(**s) for g, s in detail["sharpness"].items()}
    return P2Result(
        kind="p2",
        config=cfg,
        headline=P2Headline(**sharp),
        detail=detail,
        track=TrackRef.of(track),
        provenance=provenance(engine.describe()),
        arrays=arrays,
    )


def run_p3(
    track, engine: PerturbationEngine, cfg: P3Config, extra: dict[str, Tensor] | None = None
) -> P3Result:
    """``extra``: additional direction sets ``[n_base, d]`` (e.g. SAE decoder directions)."""
    ctx_t, ctx_a = track.tokens("context"), track.acts("context")
    idx = rng.subset(len(ctx_a), cfg.n_base, cfg.seed, "p3.contexts")
    public = track.acts("public")
    dirs = p3_directions(cfg.directions, public, ActivationStats.fit(public), len(idx), cfg.seed)
    dirs |= extra or {}
    lengths = p3_lengths(cfg, track.units)
    curves, summary = p3_probe(engine, ctx_t[idx], ctx_a[idx], dirs, lengths, cfg.kl_threshold)
    arrays = {"lengths": lengths.numpy()}
    for name, c in curves.items():
        arrays |= {f"{name}_{k}": v for k, v in c.arrays().items()}
    return P3Result(
        kind="p3",
        config=cfg,
        headline=P3Headline({k: v["length_to_kl_threshold"] for k, v in summary.items()}),
        detail={"lengths": lengths.tolist(), "directions": summary},
        track=TrackRef.of(track),
        provenance=provenance(engine.describe()),
        arrays=arrays,
    )


ProtocolConfig = P1Config | P2Config | P3Config
ProtocolResult = P1Result | P2Result | P3Result


def default_name(track_id: str, cfg: ProtocolConfig) -> str:
    """``<track>_p1_<scheme>_<units>`` (``..._published`` with the papers' definitions),
    ``<track>_p2`` or ``<track>_p3_<units>``."""
    if isinstance(cfg, P1Config):
        tail = "_published" if cfg.definitions == "published" else ""
        return f"{track_id}_p1_{cfg.scheme}_{cfg.units}{tail}"
    if isinstance(cfg, P2Config):
        return f"{track_id}_p2"
    return f"{track_id}_p3_{cfg.units}"


def run_protocol(
    track,
    lm,
    cfg: ProtocolConfig,
    *,
    sae=None,
    out: Path,
    name: str | None = None,
    distributed: DistributedConfig | None = None,
) -> ProtocolResult:
    """Run a protocol on ``track`` (a :class:`~challenge.track.Track`, registered id or
    directory) with ``lm`` (a ``LoadedModel``) and write ``<out>/<name>.json`` + ``.npz`` +
    ``.png`` (``name`` defaults to :func:`default_name`). ``sae`` (P3 only: an SAE or its
    directory) adds the SAE direction sets of ``challenge.sae.sae_direction_sets``.
    ``distributed``: the engine's chunks run on those workers (``challenge.distributed_engine``;
    the same result, bit for bit), resumable after an interruption."""
    from challenge.protocol_plots import plot_protocol
    from challenge.track import resolve_track

    if not isinstance(cfg, ProtocolConfig):
        raise ConfigError(f"not a protocol config: {type(cfg).__name__}", field="cfg")
    if sae is not None and not isinstance(cfg, P3Config):
        raise ConfigError("an SAE adds P3 direction sets; P1 and P2 take none", field="sae")
    tr = resolve_track(track)
    eng = distribute(tr.engine(lm), lm.spec, distributed)
    with resumable(
        distributed, "protocol", tr.manifest_sha256 or "unknown", cfg, lm.spec, str(sae)
    ):
        if isinstance(cfg, P1Config):
            res = run_p1(tr, eng, cfg)
        elif isinstance(cfg, P2Config):
            res = run_p2(tr, eng, cfg)
        else:
            extra = None
            if sae is not None:
                from challenge.sae import load_sae, sae_direction_sets

                if isinstance(sae, (str, Path)):
                    sae = load_sae(sae)
                extra = sae_direction_sets(sae, tr, n_base=cfg.n_base, seed=cfg.seed)
            res = run_p3(tr, eng, cfg, extra)
    res.provenance = provenance(lm.provenance | eng.describe())
    name = name or default_name(tr.spec.track_id, cfg)
    res.save(out, name)
    plot_protocol(res, Path(out) / f"{name}.png")
    return res
