"""Baseline generators behind the submission interface (``fit(track, lm)``, ``sample(n, *, seed)``).

Each produces a scored submission on a track with ``plateau generate <name>`` / ``plateau main``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from challenge.directions import ActivationStats, gaussian_like
from challenge.submission import Generator


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class Isotropic:
    """Isotropic Gaussian directions scaled to norms drawn from the public real norms."""

    name, uses = "isotropic", ["public_activations"]
    description = (
        "isotropic Gaussian, each row rescaled to a norm sampled from the public real norms"
    )

    def fit(self, track, lm) -> None:
        self.norms, self.d = track.acts("public").norm(dim=-1), track.d_model

    def sample(self, n: int, *, seed: int) -> Tensor:
        g = _gen(seed)
        x = torch.randn(n, self.d, generator=g)
        r = self.norms[torch.randint(len(self.norms), (n,), generator=g)]
        return x / x.norm(dim=-1, keepdim=True) * r[:, None]


class Gaussian:
    """N(mu, Sigma) of the public real activations (P1's "random" targets)."""

    name, uses = "gaussian", ["public_activations"]
    description = "multivariate normal with the mean and covariance of the public real activations"

    def fit(self, track, lm) -> None:
        self.stats = ActivationStats.fit(track.acts("public"))

    def sample(self, n: int, *, seed: int) -> Tensor:
        return gaussian_like(self.stats, n, seed)


class Interpolation:
    """Convex mixtures of two distinct public real activations, alpha ~ U(0.25, 0.75)."""

    name, uses = "interpolation", ["public_activations"]
    description = (
        "x = (1 - alpha) a_i + alpha a_j of two public real activations, alpha ~ U(0.25, 0.75)"
    )

    def fit(self, track, lm) -> None:
        self.acts = track.acts("public")

    def sample(self, n: int, *, seed: int) -> Tensor:
        g = _gen(seed)
        i = torch.randint(len(self.acts), (n,), generator=g)
        j = (i + 1 + torch.randint(len(self.acts) - 1, (n,), generator=g)) % len(self.acts)
        a = 0.25 + 0.5 * torch.rand(n, 1, generator=g)
        return (1 - a) * self.acts[i] + a * self.acts[j]


class HeldoutReal:
    """Oracle upper bound: the track's held-out real activations themselves (uses held-out data)."""

    name, uses = "heldout_real", ["heldout_activations"]
    description = "oracle: the held-out real activations (in a seeded order)"

    def fit(self, track, lm) -> None:
        self.acts = track.acts("heldout")

    def sample(self, n: int, *, seed: int) -> Tensor:
        if n > len(self.acts):
            raise ValueError(f"the oracle has only {len(self.acts)} held-out activations")
        return self.acts[torch.randperm(len(self.acts), generator=_gen(seed))[:n]].clone()


GENERATORS: dict[str, Callable[[], Generator]] = {
    "isotropic": Isotropic,
    "gaussian": Gaussian,
    "interpolation": Interpolation,
    "heldout_real": HeldoutReal,
}

try:  # SAE-based generators register themselves when the SAE module is present
    from baselines.sae_generators import SAE_GENERATORS

    GENERATORS |= SAE_GENERATORS
except ImportError:  # pragma: no cover
    pass
