"""Step schedules that build activation paths for the perturbation engine.

Every path goes from ``base`` activations ``A [batch, d_model]`` and returns points
``[batch, n_steps, d_model]`` (float32, on the inputs' device). P1 relative / absolute schemes,
P3 rays along a direction with a length grid, P2 linear and "arc" interpolation.
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from challenge.errors import ConfigError

P1_RELATIVE_STEPS = 100
P1_ABSOLUTE_STEP, P1_ABSOLUTE_STEPS = 0.5, 101  # t = 0..100, GPT-2 small units


def _pair(base: Tensor, other: Tensor, name: str) -> tuple[Tensor, Tensor]:
    if base.ndim != 2:
        raise ConfigError(f"expected [batch, d_model], got {tuple(base.shape)}", field="base")
    if other.shape != base.shape:
        raise ConfigError(
            f"shape {tuple(other.shape)} does not match base {tuple(base.shape)}", field=name
        )
    return base.float(), other.float().to(base.device)


def _check_steps(n_steps: int, minimum: int = 2) -> None:
    if n_steps < minimum:
        raise ConfigError(f"need at least {minimum} steps, got {n_steps}", field="n_steps")


def linear_path(
    base: Float[Tensor, "batch d_model"],
    target: Float[Tensor, "batch d_model"],
    n_steps: int = P1_RELATIVE_STEPS,
) -> Float[Tensor, "batch n_steps d_model"]:
    """P1 relative scheme / P2 interpolation: ``x = A + alpha (T - A)``,
    ``alpha = linspace(0, 1, n_steps)``. Endpoints are exactly ``A`` and ``T``."""
    a, t = _pair(base, target, "target")
    _check_steps(n_steps)
    alpha = torch.linspace(0, 1, n_steps, device=a.device)
    x = a[:, None, :] + alpha[None, :, None] * (t - a)[:, None, :]
    x[:, -1] = t
    return x


def absolute_path(
    base: Float[Tensor, "batch d_model"],
    target: Float[Tensor, "batch d_model"],
    step_size: float = P1_ABSOLUTE_STEP,
    n_steps: int = P1_ABSOLUTE_STEPS,
    return_mask: bool = False,
) -> (
    Float[Tensor, "batch n_steps d_model"]
    | tuple[Float[Tensor, "batch n_steps d_model"], Bool[Tensor, "batch n_steps"]]
):
    """P1 absolute scheme: ``x_t = A + min(step_size * t, ||T - A||) (T - A) / ||T - A||``,
    ``t = 0..n_steps-1``: fixed-length steps toward T, clamped at T once it is reached.

    With ``return_mask`` also returns ``mask [batch, n_steps]``, True where
    ``step_size * t <= ||T - A||`` (the step had not yet passed T); clamped points equal T.
    """
    a, t = _pair(base, target, "target")
    _check_steps(n_steps, 1)
    if step_size <= 0:
        raise ConfigError(f"step_size must be > 0, got {step_size}", field="step_size")
    delta = t - a
    dist = delta.norm(dim=-1, keepdim=True)  # [B, 1]
    unit = torch.where(dist > 0, delta / dist.clamp_min(1e-30), torch.zeros_like(delta))
    travel = step_size * torch.arange(n_steps, device=a.device, dtype=torch.float32)
    mask = travel[None, :] <= dist  # [B, S]
    x = a[:, None, :] + torch.minimum(travel[None, :], dist)[..., None] * unit[:, None, :]
    x = torch.where(mask[..., None], x, t[:, None, :])
    return (x, mask) if return_mask else x


def published_path(
    start: Float[Tensor, "batch d_model"],
    end: Float[Tensor, "batch d_model"],
    n_points: int = P1_RELATIVE_STEPS,
    step_size: float | None = None,
) -> tuple[Float[Tensor, "batch n_points d_model"], Int[Tensor, " batch"]]:
    """P1 paths exactly as the papers' code builds them (teren, branch ``explorations``:
    ``perturb_activation`` and ``perturb_activation_norm_step_size``), and each path's target step.

    ``step_size=None`` (relative): ``start (1 - t) + end t``, ``t = linspace(0, 1, n_points)``,
    target step ``n_points``. Otherwise (absolute): ``start + u t step_size`` with
    ``u = (end - start) / ||end - start||`` and ``t = linspace(0, n_points, n_points)`` (spacing
    ``n_points / (n_points - 1)`` steps, not clamped at ``end``); target step
    ``floor(||end - start|| / step_size)``, where the papers cut the curve for MS, AR and AP.
    """
    a, e = _pair(start, end, "end")
    _check_steps(n_points)
    n = a.shape[0]
    if step_size is None:
        t = torch.linspace(0, 1, n_points, device=a.device)[None, :, None]
        x = a[:, None, :] * (1 - t) + e[:, None, :] * t
        return x, torch.full((n,), n_points, dtype=torch.int64)
    if step_size <= 0:
        raise ConfigError(f"step_size must be > 0, got {step_size}", field="step_size")
    d = e - a
    norm = d.norm(dim=-1, keepdim=True)
    if (norm == 0).any():
        raise ConfigError("start and end coincide: the direction is undefined", field="end")
    u = d / norm
    t = torch.linspace(0, n_points, n_points, device=a.device)[None, :, None]
    x = a[:, None, :] + u[:, None, :] * t * step_size
    target = torch.floor(norm[:, 0] / step_size).to(torch.int64).cpu()
    return x, target


def ray_path(
    base: Float[Tensor, "batch d_model"],
    direction: Float[Tensor, "batch d_model"] | Float[Tensor, " d_model"],
    lengths: Float[Tensor, " n_steps"],
) -> Float[Tensor, "batch n_steps d_model"]:
    """P3: ``x_s = A + L_s d / ||d||`` for each length ``L_s`` (may start with 0).
    ``direction`` is one row per base or a single ``[d_model]`` vector shared by all."""
    if direction.ndim == 1:
        direction = direction.expand_as(base)
    a, d = _pair(base, direction, "direction")
    lengths = torch.as_tensor(lengths, dtype=torch.float32, device=a.device)
    if lengths.ndim != 1:
        raise ConfigError(f"expected 1-D lengths, got {tuple(lengths.shape)}", field="lengths")
    norm = d.norm(dim=-1, keepdim=True)
    if (norm == 0).any():
        raise ConfigError("zero-norm direction", field="direction")
    return a[:, None, :] + lengths[None, :, None] * (d / norm)[:, None, :]


def arc_path(
    base: Float[Tensor, "batch d_model"],
    target: Float[Tensor, "batch d_model"],
    mean: Float[Tensor, " d_model"] | Float[Tensor, "batch d_model"],
    n_steps: int = P1_RELATIVE_STEPS,
) -> Float[Tensor, "batch n_steps d_model"]:
    """P2 "arc" variant: interpolate linearly, then rescale each point's offset from ``mean`` so
    its distance to ``mean`` is ``(1 - alpha) ||A - mu|| + alpha ||B - mu||`` (constant for equal
    norms). Endpoints are exactly ``A`` and ``B``; a point landing on ``mu`` stays there."""
    a, b = _pair(base, target, "target")
    _check_steps(n_steps)
    mu = mean.float().to(a.device)
    if mu.ndim == 1:
        mu = mu.expand_as(a)
    if mu.shape != a.shape:
        raise ConfigError(f"shape {tuple(mean.shape)} does not match base", field="mean")
    alpha = torch.linspace(0, 1, n_steps, device=a.device)[None, :, None]
    offset = (a - mu)[:, None] + alpha * (b - a)[:, None]  # linear point minus mu
    r_a = (a - mu).norm(dim=-1)[:, None, None]
    r_b = (b - mu).norm(dim=-1)[:, None, None]
    radius = (1 - alpha) * r_a + alpha * r_b
    norm = offset.norm(dim=-1, keepdim=True)
    scale = torch.where(norm > 0, radius / norm.clamp_min(1e-30), torch.zeros_like(norm))
    x = mu[:, None, :] + offset * scale
    x[:, 0], x[:, -1] = a, b
    return x


def p3_length_grid() -> Float[Tensor, " 46"]:
    """The published P3 length grid ``[1, 3, 5, ..., 91]`` (GPT-2 small units)."""
    return torch.arange(1, 92, 2, dtype=torch.float32)


def scaled(lengths: Float[Tensor, " n_steps"], unit: float | Tensor) -> Float[Tensor, " n_steps"]:
    """Lengths in another unit (``scale_free`` protocols): ``lengths * unit``, float32."""
    unit = float(unit)
    if not unit > 0:
        raise ConfigError(f"unit must be > 0, got {unit}", field="unit")
    return torch.as_tensor(lengths, dtype=torch.float32) * unit
