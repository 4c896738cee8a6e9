"""Direction and target samplers for P1 / P3 baselines.

Every random draw takes an explicit ``seed`` (an int, from which a CPU ``torch.Generator`` is
made, or a ready ``torch.Generator``); the same seed gives the same draws. Samplers return
float32 ``[n, d_model]`` tensors; directions are not normalised (``paths.ray_path`` does that)
except where stated.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from challenge.errors import ConfigError

Seed = int | torch.Generator
LATENT_CLASSES = ("active", "inactive_alive", "dead")
DEAD_LOG10_FREQ = -10.0  # P1: latents with log10 firing frequency below -10 are dead


def as_generator(seed: Seed) -> torch.Generator:
    """``seed`` itself when it is a ``torch.Generator``, else a CPU generator seeded with it."""
    if isinstance(seed, torch.Generator):
        return seed
    return torch.Generator().manual_seed(int(seed))


def jittered_cholesky(cov: Tensor, jitter: float = 0.0) -> tuple[Tensor, float]:
    """Cholesky factor of ``cov + jitter I`` (float64), raising the jitter until it succeeds."""
    eye = torch.eye(cov.shape[0], dtype=torch.float64, device=cov.device)
    scale = float(cov.diagonal().mean().abs()) or 1.0
    extra = 0.0
    for _ in range(12):
        chol, info = torch.linalg.cholesky_ex(cov + (jitter + extra) * eye)
        if int(info) == 0:
            return chol, jitter + extra
        extra = scale * 1e-8 if extra == 0 else extra * 10
    raise ConfigError("covariance is not positive definite even with jitter", field="cov")


@dataclass
class ActivationStats:
    """Mean, covariance, its Cholesky factor and median norm of real activations ``[N, d]``.

    Fitted in float64, stored float32. ``jitter`` is the multiple of I added to ``cov`` before
    the factorisation (0 when none was needed); ``chol @ chol.T == cov + jitter I``.
    """

    mean: Float[Tensor, " d_model"]
    cov: Float[Tensor, "d_model d_model"]
    chol: Float[Tensor, "d_model d_model"]
    median_norm: float
    jitter: float = 0.0
    n: int = 0

    @classmethod
    def fit(cls, acts: Float[Tensor, "n d_model"]) -> ActivationStats:
        if acts.ndim != 2 or acts.shape[0] < 2:
            raise ConfigError(f"need [N >= 2, d_model], got {tuple(acts.shape)}", field="acts")
        x = acts.detach().to(torch.float64)
        mean = x.mean(0)
        cov = torch.cov(x.T).reshape(x.shape[1], x.shape[1])
        chol, jitter = jittered_cholesky(cov)
        return cls(
            mean=mean.float(),
            cov=cov.float(),
            chol=chol.float(),
            median_norm=float(x.norm(dim=1).median()),
            jitter=jitter,
            n=x.shape[0],
        )

    def to_dict(self) -> dict[str, Tensor]:
        """All fields as tensors (for ``torch.save`` / safetensors)."""
        return {
            "mean": self.mean,
            "cov": self.cov,
            "chol": self.chol,
            "median_norm": torch.tensor(self.median_norm, dtype=torch.float64),
            "jitter": torch.tensor(self.jitter, dtype=torch.float64),
            "n": torch.tensor(self.n, dtype=torch.int64),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Tensor]) -> ActivationStats:
        missing = {"mean", "cov", "chol", "median_norm"} - set(d)
        if missing:
            raise ConfigError(f"missing keys {sorted(missing)}", field="ActivationStats")
        return cls(
            mean=d["mean"].float(),
            cov=d["cov"].float(),
            chol=d["chol"].float(),
            median_norm=float(d["median_norm"]),
            jitter=float(d.get("jitter", 0.0)),
            n=int(d.get("n", 0)),
        )


def isotropic(n: int, d: int, seed: Seed) -> Float[Tensor, "n d_model"]:
    """Unit-norm isotropic Gaussian directions."""
    v = torch.randn(n, d, generator=as_generator(seed))
    return v / v.norm(dim=1, keepdim=True)


def gaussian_like(stats: ActivationStats, n: int, seed: Seed) -> Float[Tensor, "n d_model"]:
    """Samples of N(mu, Sigma) of real activations (P1 random targets, P3 N(mu, Sigma) baseline)."""
    z = torch.randn(n, stats.mean.shape[0], generator=as_generator(seed))
    return (stats.mean.cpu() + z @ stats.chol.cpu().T).to(stats.mean.device)


def cov_random_mixture(
    stats: ActivationStats, n: int, seed: Seed, jitter: float = 0.01
) -> Float[Tensor, "n d_model"]:
    """P3 "cov-random mixture": ``v1 - v2`` with ``v1, v2 ~ N(mu, Sigma + jitter I)``
    (independent of the base activation)."""
    chol, _ = jittered_cholesky(stats.cov.cpu().double(), jitter)
    gen, d = as_generator(seed), stats.mean.shape[0]
    mu = stats.mean.cpu().double()
    v1 = mu + torch.randn(n, d, generator=gen, dtype=torch.float64) @ chol.T
    v2 = mu + torch.randn(n, d, generator=gen, dtype=torch.float64) @ chol.T
    return (v1 - v2).float().to(stats.mean.device)


def real_mixture(
    acts: Float[Tensor, "N d_model"], n: int, seed: Seed
) -> Float[Tensor, "n d_model"]:
    """P3 real mixture: ``acts[i] - acts[j]`` for uniformly drawn ``i != j``."""
    if acts.ndim != 2 or acts.shape[0] < 2:
        raise ConfigError(f"need [N >= 2, d_model], got {tuple(acts.shape)}", field="acts")
    gen, N = as_generator(seed), acts.shape[0]
    i = torch.randint(N, (n,), generator=gen)
    j = (i + torch.randint(1, N, (n,), generator=gen)) % N
    return (acts[i.to(acts.device)] - acts[j.to(acts.device)]).float()


def toward(
    base: Float[Tensor, "batch d_model"], target: Float[Tensor, "batch d_model"]
) -> Float[Tensor, "batch d_model"]:
    """Direction from each base activation to its target: ``target - base``."""
    if base.shape != target.shape:
        raise ConfigError(f"{tuple(target.shape)} vs base {tuple(base.shape)}", field="target")
    return (target - base).float()


def sae_decoder_directions(
    W_dec: Float[Tensor, "n_latents d_model"], latent_ids: Int[Tensor, " n"]
) -> Float[Tensor, "n d_model"]:
    """Unit-norm SAE decoder rows for the given latents."""
    rows = W_dec[torch.as_tensor(latent_ids, dtype=torch.long, device=W_dec.device)].float()
    norm = rows.norm(dim=-1, keepdim=True)
    if (norm == 0).any():
        raise ConfigError("a selected decoder row has zero norm", field="latent_ids")
    return rows / norm


def classify_latents(
    latent_acts: Float[Tensor, "batch n_latents"],
    firing_freq: Float[Tensor, " n_latents"],
    dead_log10: float = DEAD_LOG10_FREQ,
    freq_threshold: float | None = None,
) -> dict[str, Bool[Tensor, "batch n_latents"]]:
    """Per-row latent classes as boolean masks ``{"active", "inactive_alive", "dead"}``.

    Dead: ``log10(firing_freq) < dead_log10`` (frequency 0 counts as dead), or
    ``firing_freq < freq_threshold`` when given. Active: activation > 0 at x (takes precedence
    over dead). The three masks partition each row; ``mask[b].nonzero()`` gives the indices.
    """
    if latent_acts.ndim != 2 or firing_freq.shape != latent_acts.shape[1:]:
        raise ConfigError(
            f"latent_acts {tuple(latent_acts.shape)} vs firing_freq {tuple(firing_freq.shape)}",
            field="firing_freq",
        )
    freq = firing_freq.to(latent_acts.device, torch.float64)
    dead = freq < freq_threshold if freq_threshold is not None else freq.log10() < dead_log10
    active = latent_acts > 0
    dead = dead[None, :] & ~active
    return {"active": active, "inactive_alive": ~active & ~dead, "dead": dead}


def pick_latent_per_class(
    classes: dict[str, Bool[Tensor, "batch n_latents"]], seed: Seed
) -> dict[str, Int[Tensor, " batch"]]:
    """One latent id per row and class, uniformly among the row's members; -1 where empty."""
    gen, out = as_generator(seed), {}
    for name in LATENT_CLASSES:
        mask = classes[name]
        score = torch.rand(mask.shape, generator=gen).to(mask.device)
        score = torch.where(mask, score, torch.full_like(score, -1.0))
        pick = score.argmax(dim=1)
        out[name] = torch.where(mask.any(dim=1), pick, torch.full_like(pick, -1))
    return out


def user_vectors(
    v, d_model: int | None = None, field: str = "directions"
) -> Float[Tensor, "batch d_model"]:
    """Validate user-given directions: ``[d]`` or ``[B, d]``, finite, non-zero norm per row."""
    try:
        t = torch.as_tensor(v, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ConfigError(f"not a numeric array: {e}", field=field) from e
    if t.ndim == 1:
        t = t[None, :]
    if t.ndim != 2 or t.shape[0] == 0 or t.shape[1] == 0:
        raise ConfigError(
            f"expected [d_model] or [batch, d_model], got {tuple(t.shape)}", field=field
        )
    if d_model is not None and t.shape[1] != d_model:
        raise ConfigError(f"expected d_model {d_model}, got {t.shape[1]}", field=field)
    if not torch.isfinite(t).all():
        raise ConfigError("contains NaN or inf", field=field)
    zero = (t.norm(dim=1) == 0).nonzero().flatten().tolist()
    if zero:
        raise ConfigError(f"zero-norm rows {zero[:10]}", field=field)
    return t
