"""The training study's typed config, its seed streams and its checkpoint schedule."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from challenge import checks, rng
from challenge.schemas import JSON_CONFIG


def seed_of(seed: int, stream: str, index: int = 0) -> int:
    """The seed of one of this study's ``training.*`` streams (``challenge.rng.STREAMS``)."""
    return rng.seed_for(seed, stream, index)


@dataclass
class TrainingConfig:
    """Issue 33 part 1: plateaus, MLP boundaries and local complexity over training."""

    __pydantic_config__ = JSON_CONFIG

    model: Literal["modadd", "lm"] = "modadd"
    """``modadd``: Nanda et al.'s modular-addition transformer; ``lm``: a 2-layer byte LM"""
    steps: int = 12000
    """training steps (full batch for modadd, ``batch`` windows for lm)"""
    p: int = 113
    """modadd: the modulus (a prime)"""
    frac: float = 0.3
    """modadd: fraction of the p^2 pairs used for training (the rest is the test set)"""
    lr: float = 1e-3
    """AdamW learning rate (constant)"""
    weight_decay: float = 1.0
    """AdamW weight decay (Nanda et al.: 1.0; use 0.1 for lm)"""
    batch: int = 32
    """lm: windows per step"""
    n_ctx: int = 32
    """lm: bytes per training window"""
    prompt_len: int = 16
    """lm: bytes per probed prompt (the written point is the last position)"""
    eval_every: int = 100
    """steps between train / test evaluations (and at every checkpoint)"""
    per_decade: int = 8
    """log-spaced checkpoints per decade of steps (step 0 and the last step always)"""
    n_points: int = 64
    """real (held-out) points, and as many N(mu, Sigma) points, probed per checkpoint"""
    n_directions: int = 8
    """radius probe: random directions per point"""
    n_paths: int = 48
    """boundary paths per kind (real-to-real, toward N(mu, Sigma))"""
    n_steps: int = 51
    """points along each boundary path"""
    window: int = 2
    """a path's busiest-flip step within this many steps of its KL max-slope step coincides"""
    lc_radius: float = 0.1
    """local complexity: the cross-polytope's radius, times the median real-to-real distance"""
    lc_directions: int = 16
    """local complexity: orthonormal directions of the cross-polytope (2x vertices)"""
    n_null: int = 999
    """step-shuffle null draws of the coincidence rate"""
    n_boot: int = 1000
    """bootstrap resamples of every interval"""
    seed: int = 0
    """run seed (init, split, batches, probes; the ``training.*`` streams of ``challenge.rng``)"""

    def __post_init__(self) -> None:
        checks.choice(self.model, ("modadd", "lm"), "model")
        for f in ("steps", "eval_every", "per_decade", "n_directions", "n_null", "n_boot"):
            checks.integer(getattr(self, f), f, minimum=1)
        for f in ("n_points", "n_paths", "batch", "p"):
            checks.integer(getattr(self, f), f, minimum=3)
        checks.integer(self.n_ctx, "n_ctx", minimum=2)
        checks.integer(self.prompt_len, "prompt_len", minimum=2)
        checks.integer(self.n_steps, "n_steps", minimum=5)
        checks.integer(self.window, "window", minimum=0)
        checks.integer(self.lc_directions, "lc_directions", minimum=1)
        checks.integer(self.seed, "seed", minimum=0)
        checks.number(self.lr, "lr", positive=True)
        checks.number(self.weight_decay, "weight_decay", minimum=0.0)
        checks.number(self.lc_radius, "lc_radius", positive=True)
        checks.number(self.frac, "frac", positive=True)
        if self.frac >= 1:
            checks.number(self.frac, "frac", minimum=2.0)  # raises naming the field
        if self.prompt_len > self.n_ctx:
            checks.integer(self.n_ctx, "n_ctx", minimum=self.prompt_len)


def checkpoint_steps(steps: int, per_decade: int) -> list[int]:
    """Step 0, ``round(10^(k / per_decade))`` for k = 0, 1, ... below ``steps``, and ``steps``:
    a schedule that does not depend on ``steps`` (a longer run only adds checkpoints)."""
    k = np.arange(0, int(np.ceil(per_decade * np.log10(max(steps, 1)))) + 1)
    s = np.unique(np.round(10.0 ** (k / per_decade)).astype(int))
    return sorted({0, int(steps)} | {int(x) for x in s if x < steps})
