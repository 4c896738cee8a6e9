"""The configuration of an interactions run: what is trained and measured, not where it goes.

The track (model and text) and the output folder are arguments of
:func:`challenge.interactions.sweep.run`; ``plateau interactions`` adds them as flags.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from challenge import checks
from challenge.errors import ConfigError


@dataclass
class InteractionsConfig:
    """Sparse feature interactions: Jacobian-sparse dictionary pairs on every MLP."""

    layers: tuple[int, ...] = ()
    """layers to train; empty = every layer"""
    lambdas: tuple[float, ...] = (0.0, 0.3)
    """Jacobian-L1 weights; one full set of dictionaries per value"""
    n_latents: int = 2048
    """latents per dictionary"""
    k: int = 16
    """active latents per token (TopK)"""
    ctx: int = 128
    """tokens per text window"""
    n_train_tokens: int = 8192
    """training tokens per layer (position 0 of each window dropped)"""
    n_eval_tokens: int = 2048
    """held-out tokens (disjoint windows) for the metrics and the CE"""
    batch_size: int = 256
    """tokens per step"""
    epochs: float = 3.0
    """passes over the training tokens"""
    lr: float = 2e-3
    """Adam learning rate (linear decay over the last 20% of the steps)"""
    jac_tokens: int = 128
    """tokens per batch on which the Jacobian penalty is computed (0 = the whole batch)"""
    jac_eval_tokens: int = 1024
    """held-out tokens on which Jacobian statistics are measured"""
    thresholds: tuple[float, ...] = (0.01, 0.05)
    """|J| thresholds for counting nonzero interactions"""
    eval_ce: bool = True
    """measure next-token CE with all trained dictionaries spliced in"""
    seed: int = 0
    """run seed (streams ``interactions.*``)"""
    threads: int = 0
    """torch threads; 0 = leave torch's default"""

    def __post_init__(self) -> None:
        for name in ("layers", "lambdas", "thresholds"):
            checks.sequence(getattr(self, name), name, nonempty=name != "layers")
            setattr(self, name, tuple(getattr(self, name)))
        for lam in self.lambdas:
            checks.number(lam, "lambdas", minimum=0)
        for L in self.layers:
            checks.integer(L, "layers", minimum=0)
        for name in ("n_latents", "n_eval_tokens", "batch_size", "jac_eval_tokens"):
            checks.integer(getattr(self, name), name, minimum=1)
        checks.integer(self.k, "k", minimum=1)
        if self.k > self.n_latents:
            raise ConfigError(f"k={self.k} must be in [1, n_latents={self.n_latents}]", field="k")
        checks.integer(self.ctx, "ctx", minimum=2)  # position 0 is dropped
        checks.integer(self.n_train_tokens, "n_train_tokens", minimum=self.batch_size)
        for name in ("epochs", "lr"):
            checks.number(getattr(self, name), name, positive=True)
        for name in ("jac_tokens", "threads"):
            checks.integer(getattr(self, name), name, minimum=0)
        for t in self.thresholds:
            checks.number(t, "thresholds", positive=True)
        checks.boolean(self.eval_ce, "eval_ce")
        checks.integer(self.seed, "seed")

    def check_layers(self, n_layers: int) -> None:
        """``ConfigError`` if a requested layer is not in the model's ``n_layers``."""
        bad = [L for L in self.layers if not 0 <= L < n_layers]
        if bad:
            raise ConfigError(f"layers {bad} out of range [0, {n_layers})", field="layers")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> InteractionsConfig:
        raw = json.loads(text)
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown fields {sorted(unknown)}", field=",".join(sorted(unknown)))
        return cls(**raw)
