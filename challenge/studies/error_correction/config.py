"""The error-correction study's typed config, its families and its seed streams."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from challenge import checks
from challenge.errors import ConfigError
from challenge.schemas import JSON_CONFIG

NAME = "error_correction"
FAMILIES = (
    "random",
    "cov_random",
    "pca",
    "sae_active",
    "sae_random",
    "contrastive",
    "sensitive",
    "optimised",
)
PAIR_FAMILIES = ("random", "cov_random", "pca", "sae_active", "sae_random", "contrastive")
# seeds of this study's draws: cfg.seed * 1000 + offset (no stream of challenge.rng is shared)
SEED_OFFSETS = {"points": 0, "random": 1, "cov_random": 2, "signs": 3, "latents": 4, "boot": 5}


def _seed(seed: int, what: str) -> int:
    return int(seed) * 1000 + SEED_OFFSETS[what]


@dataclass
class ErrorCorrectionConfig:
    """Exponent p of KL(p(x) || p(x + eps |x| u)) ~ eps^p per direction family."""

    __pydantic_config__ = JSON_CONFIG

    n_points: int = 64
    """real points (public split rows, seeded draw)"""
    eps_min: float = 1e-3
    """smallest perturbation, as a multiple of the point's norm |x|"""
    eps_max: float = 2.0
    """largest perturbation (x |x|)"""
    n_eps: int = 22
    """log-spaced grid points from eps_min to eps_max"""
    noise_eps: tuple[float, ...] = (0.0, 1e-7, 3e-7)
    """noise probes (x |x|): their KL is float32 noise; 0.0 repeats x in a separate row"""
    floor_factor: float = 10.0
    """fit only KL > floor_factor x the point's largest noise-probe KL"""
    kl_max: float = 1.0
    """fit only KL < kl_max nats (saturation)"""
    kl_max_small: float = 0.01
    """a second, small-perturbation fit window: KL < kl_max_small (reported as p_small)"""
    min_fit_points: int = 4
    """fewer usable grid points: p is NaN"""
    kl_threshold: float = 0.1
    """robustness: the eps at which KL first reaches this (nats), log-interpolated"""
    families: tuple[str, ...] = FAMILIES
    """direction families (random is always added: the reference of the paired differences)"""
    n_pca: int = 4
    """top principal components cycled over the points"""
    contrast: str = "person_adjective:sentiment:negative:positive"
    """family:label:class_A:class_B of the contrastive direction mean(B) - mean(A)"""
    contrast_b: str = "city_weather:weather_group:cold:warm"
    """the second contrastive direction (its pair's b)"""
    pairs: tuple[str, ...] = ("random", "pca", "sae_active", "sae_random", "contrastive")
    """families whose second direction b and mixture unit(a + b) are traced too (L^p model)"""
    lp_thresholds: tuple[float, ...] = (0.01, 0.1, 1.0)
    """KL thresholds (nats) at which the L^p exponent of the pairs is estimated"""
    sae: str | None = None
    """SAE directory (SAELens format); None: the track's SAE"""
    opt_radius: float = 0.05
    """radius of the optimised directions (x the track's median write norm)"""
    opt_steps: int = 8
    """gradient-ascent steps of the optimised directions"""
    n_boot: int = 1000
    """bootstrap resamples of the points"""
    seed: int = 0
    """run seed: points, random directions, signs, latents, bootstrap"""
    progress: bool = False
    """progress bars"""

    def __post_init__(self) -> None:
        checks.integer(self.n_points, "n_points", minimum=2)
        checks.number(self.eps_min, "eps_min", positive=True)
        checks.number(self.eps_max, "eps_max", positive=True)
        if self.eps_max <= self.eps_min:
            raise ConfigError("eps_max must exceed eps_min", field="eps_max")
        checks.integer(self.n_eps, "n_eps", minimum=3)
        checks.sequence(self.noise_eps, "noise_eps", nonempty=True)
        if any(not 0 <= e < self.eps_min for e in self.noise_eps):
            raise ConfigError("noise probes must be in [0, eps_min)", field="noise_eps")
        checks.number(self.floor_factor, "floor_factor", positive=True)
        checks.number(self.kl_max, "kl_max", positive=True)
        checks.number(self.kl_max_small, "kl_max_small", positive=True)
        checks.integer(self.min_fit_points, "min_fit_points", minimum=2)
        checks.number(self.kl_threshold, "kl_threshold", positive=True)
        checks.sequence(self.families, "families", choices=FAMILIES, nonempty=True)
        checks.integer(self.n_pca, "n_pca", minimum=1)
        from challenge.studies.steering import parse_contrast

        parse_contrast(self.contrast)
        parse_contrast(self.contrast_b)
        checks.sequence(self.pairs, "pairs", choices=PAIR_FAMILIES)
        checks.sequence(self.lp_thresholds, "lp_thresholds", nonempty=True)
        for t in self.lp_thresholds:
            checks.number(t, "lp_thresholds", positive=True)
        checks.number(self.opt_radius, "opt_radius", positive=True)
        checks.integer(self.opt_steps, "opt_steps", minimum=1)
        checks.integer(self.n_boot, "n_boot", minimum=10)
        checks.integer(self.seed, "seed", minimum=0)
        checks.boolean(self.progress, "progress")

    def grid(self) -> np.ndarray:
        return np.logspace(np.log10(self.eps_min), np.log10(self.eps_max), self.n_eps)
