"""Generators of the statistics tier: ``fit(stats, sae)`` on a statistics artifact
(``challenge.statistics``), ``sample(n, *, seed)``; they never receive the track or a real row.

The model-free baselines of ``baselines.generators``, ported to what the artifact holds:

| name | what | from the artifact |
|---|---|---|
| stats_gaussian | N(mu, Sigma) | ``mean``, ``cov`` |
| stats_isotropic | isotropic directions at norms drawn from the norm quantiles | ``norm_quantiles`` |
| stats_token_cluster | token drawn by frequency; N(m_t, (1 + 1/n_t) Sigma_w); "other" tokens N(mu, Sigma) | ``token_*``, ``mean``, ``cov`` |
| stats_sae_composition | decode of latent sets drawn from the latent statistics | latent statistics |
| stats_sae_baseline | P1 sae_baseline on drawn latent sets (each latent -> a sparsity neighbour) | latent statistics |
| stats_bag_of_features | P1 bag_of_features on drawn latent sets | latent statistics |
| stats_structured | P1 structured on drawn latent sets | latent statistics |
| stats_single_latent | one listed latent (by its firing count) at the mean latent-part norm | ``latent_counts``, ``latent_norm_mean`` |

Latent sets (:class:`LatentSets`): a token drawn as for stats_token_cluster; its L0 from the L0
histogram; latents drawn one at a time without replacement with weight ``w_j`` x (``eps`` + the
mean co-firing rate of ``j`` with the latents already drawn), ``w_j`` the token's firing rate
estimate (``token_profiles / latent_value_mean``) or, for "other" tokens, the latent's firing
frequency; each value drawn from the latent's value quantiles (inverse CDF, linear between the
published levels). The P1 compositions then transform these sets exactly as
``baselines.generators`` transforms a public row's (the same ``compose``).

Every draw comes from ``sample``'s ``seed`` (the latent sets of the ported compositions from the
stream ``statistics.base_codes``); ``fit`` is deterministic. ``access`` is ``("statistics",)`` or
``("statistics", "sae")``: the statistics tier's (``challenge.access``: ``generate`` fits them
on ``statistics_inputs(track)``, the published artifact and its SAE; their records go to the
board's ranked "statistics" section).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch
from jaxtyping import Float
from torch import Tensor

from baselines.generators import (
    BagOfFeatures,
    Codes,
    SAEBaseline,
    SingleLatent,
    Structured,
    _rows,
    decode_sparse,
    sparsity_neighbours,
)
from challenge import rng
from challenge.directions import as_generator, jittered_cholesky
from challenge.errors import ConfigError
from challenge.statistics import TrackStatistics


@runtime_checkable
class StatisticsGenerator(Protocol):
    """A generator of the statistics tier: fitted on the artifact and the SAE only."""

    name: str
    description: str
    uses: list[str]
    access: tuple[str, ...]

    def fit(self, stats: TrackStatistics, sae: Any) -> None: ...

    def sample(self, n: int, *, seed: int) -> Float[Tensor, "n d_model"]: ...


def inverse_cdf(u: Tensor, levels: Tensor, values: Tensor) -> Tensor:
    """Per row, the quantile function through ``(levels, values)`` ``[n, Q]`` (linear between
    levels, flat beyond the ends) at ``u`` ``[n]``."""
    levels, values, u = levels.double(), values.double(), u.double()
    Q = levels.shape[1]
    if Q == 1:
        return values[:, 0]
    u = torch.minimum(torch.maximum(u, levels[:, 0]), levels[:, -1])
    j = torch.searchsorted(levels.contiguous(), u[:, None].contiguous()).clamp(1, Q - 1)
    l0, l1 = levels.gather(1, j - 1)[:, 0], levels.gather(1, j)[:, 0]
    v0, v1 = values.gather(1, j - 1)[:, 0], values.gather(1, j)[:, 0]
    w = torch.where(l1 > l0, (u - l0) / (l1 - l0).clamp_min(1e-300), torch.zeros_like(u))
    return v0 + w * (v1 - v0)


def _need(stats: TrackStatistics, *names: str) -> None:
    missing = [n for n in names if n not in stats]
    if missing:
        raise ConfigError(f"the statistics artifact lacks {missing}", field="stats")


def draw_tokens(stats: TrackStatistics, n: int, g: torch.Generator) -> Tensor:
    """``n`` token indices into the listed tokens, drawn with their public frequency; -1 for
    the pooled "other" tokens."""
    counts = stats["token_counts"].double()
    other = stats.get("token_other_count")
    w = torch.cat([counts, other.double() if other is not None else counts.new_zeros(1)])
    t = torch.multinomial(w, n, replacement=True, generator=g)
    return torch.where(t < len(counts), t, torch.full_like(t, -1))


class _Moments:
    """Cholesky factors of the global and within-token covariances (float64 -> float32)."""

    def _chol(self, cov: Tensor) -> Tensor:
        return jittered_cholesky(cov.double())[0].float()


class StatsGaussian(_Moments):
    name, uses, access = "stats_gaussian", ["statistics_artifact"], ("statistics",)
    description = "multivariate normal with the artifact's mean and covariance of the public rows"

    def fit(self, stats: TrackStatistics, sae: Any = None) -> None:
        _need(stats, "mean", "cov")
        self.mean, self.chol = stats["mean"].float(), self._chol(stats["cov"])

    def sample(self, n: int, *, seed: int) -> Tensor:
        z = torch.randn(n, len(self.mean), generator=as_generator(seed))
        return self.mean + z @ self.chol.T


class StatsIsotropic:
    name, uses, access = "stats_isotropic", ["statistics_artifact"], ("statistics",)
    description = "isotropic Gaussian directions at norms drawn from the artifact's norm quantiles"

    def fit(self, stats: TrackStatistics, sae: Any = None) -> None:
        _need(stats, "norm_quantiles", "norm_levels")
        self.levels, self.values = stats["norm_levels"][None], stats["norm_quantiles"][None]
        self.d = stats.d_model

    def sample(self, n: int, *, seed: int) -> Tensor:
        g = as_generator(seed)
        x = torch.randn(n, self.d, generator=g)
        u = torch.rand(n, generator=g, dtype=torch.float64)
        r = inverse_cdf(u, self.levels.expand(n, -1), self.values.expand(n, -1)).float()
        return x / x.norm(dim=-1, keepdim=True) * r[:, None]


class StatsTokenCluster(_Moments):
    """token_cluster on aggregated moments: a token t drawn with its public frequency, then
    ``N(m_t, (1 + 1/n_t) Sigma_w)`` (``Sigma_w`` the pooled within-token covariance); a row of
    the pooled "other" tokens (no moments published) ``N(mu, Sigma)``."""

    name, uses, access = "stats_token_cluster", ["statistics_artifact"], ("statistics",)
    description = "token drawn by frequency, N(token mean, (1 + 1/n_t) pooled within-token covariance); other tokens N(mu, Sigma)"

    def fit(self, stats: TrackStatistics, sae: Any = None) -> None:
        _need(stats, "mean", "cov", "token_means", "token_counts", "token_within_cov")
        self.stats = stats
        self.means, self.counts = stats["token_means"].float(), stats["token_counts"].float()
        self.chol_w, self.chol = self._chol(stats["token_within_cov"]), self._chol(stats["cov"])
        self.mean = stats["mean"].float()

    def sample(self, n: int, *, seed: int) -> Tensor:
        g = as_generator(seed)
        t = draw_tokens(self.stats, n, g)
        z = torch.randn(n, len(self.mean), generator=g)
        listed = t >= 0
        tc = t.clamp_min(0)
        scale = (1.0 + 1.0 / self.counts[tc]).sqrt()[:, None]
        within = self.means[tc] + scale * (z @ self.chol_w.T)
        return torch.where(listed[:, None], within, self.mean + z @ self.chol.T)


class LatentSets:
    """Synthetic SAE codes drawn from the artifact's latent statistics (module docstring)."""

    def __init__(self, stats: TrackStatistics, sae: Any, cofiring: bool = True, eps: float = 0.05):
        _need(stats, "latent_ids", "latent_counts", "latent_value_mean", "l0_values")
        _need(stats, "latent_value_quantiles", "latent_value_levels", "token_counts")
        self.stats, self.n_latents, self.eps = stats, int(sae.n_latents), eps
        self.lat = stats["latent_ids"].long()
        if not len(self.lat):
            raise ConfigError("the artifact lists no latent", field="latent_ids")
        L = len(self.lat)
        self.freq = stats["latent_counts"].double() / stats.n_rows
        vmean = stats["latent_value_mean"].double().clamp_min(1e-12)
        prof = stats.get("token_profiles")
        T = len(stats["token_counts"])
        self.rate = (
            (prof.double() / vmean).clamp(0, 1)
            if prof is not None
            else self.freq.expand(T, L).clone()
        )
        self.l0_values, self.l0_counts = stats["l0_values"].long(), stats["l0_counts"].double()
        self.levels = stats["latent_value_levels"]
        self.values = stats["latent_value_quantiles"]
        self.cofire = None
        if cofiring and "cofiring_pairs" in stats and len(stats["cofiring_pairs"]):
            pos = torch.full((self.n_latents,), -1, dtype=torch.long)
            pos[self.lat] = torch.arange(L)
            p = pos[stats["cofiring_pairs"].long()]
            c = stats["cofiring_counts"].double()
            cnt = stats["latent_counts"].double()
            C = torch.zeros(L, L, dtype=torch.float64)
            C[p[:, 0], p[:, 1]] = c / cnt[p[:, 0]]  # P(j fires | i fires)
            C[p[:, 1], p[:, 0]] = c / cnt[p[:, 1]]
            self.cofire = C.float()

    def __call__(self, n: int, g: torch.Generator) -> Codes:
        tok = draw_tokens(self.stats, n, g)
        L = len(self.lat)
        base = torch.where(
            (tok >= 0)[:, None], self.rate[tok.clamp_min(0)], self.freq.expand(n, L)
        ).double()
        base = base + 1e-9 * self.freq  # every listed latent stays drawable
        l0 = self.l0_values[torch.multinomial(self.l0_counts, n, replacement=True, generator=g)]
        K = int(min(int(l0.max()), L))
        chosen = torch.full((n, K), -1, dtype=torch.long)
        taken = torch.zeros(n, L, dtype=torch.bool)
        affinity = torch.zeros(n, L, dtype=torch.float64)
        rows = torch.arange(n)
        for j in range(K):
            w = base if self.cofire is None or j == 0 else base * (self.eps + affinity / j)
            w = torch.where(taken, torch.zeros_like(w), w)
            pick = torch.multinomial(w, 1, generator=g)[:, 0]
            live = j < l0
            chosen[:, j] = torch.where(live, pick, chosen[:, j])
            taken[rows[live], pick[live]] = True
            if self.cofire is not None:
                affinity += self.cofire[pick].double()
        u = torch.rand(n, K, generator=g, dtype=torch.float64)
        idx = chosen.clamp_min(0).flatten()
        vals = inverse_cdf(u.flatten(), self.levels[idx], self.values[idx]).view(n, K).float()
        vals = torch.where(chosen >= 0, vals.clamp_min(1e-6), torch.zeros_like(vals))
        ids = torch.where(chosen >= 0, self.lat[chosen.clamp_min(0)], chosen)
        order = torch.argsort(-vals, dim=1, stable=True)
        return Codes(ids.gather(1, order), vals.gather(1, order))


class StatsSAEComposition:
    """The SAE decode of latent sets drawn from the artifact (:class:`LatentSets`)."""

    name, uses, access = (
        "stats_sae_composition",
        ["statistics_artifact", "sae"],
        ("statistics", "sae"),
    )
    description = "SAE decode of latent sets drawn from the artifact: token profile x co-firing, values from the latent quantiles"

    def fit(self, stats: TrackStatistics, sae: Any) -> None:
        self.sae, self.draw = sae, LatentSets(stats, sae)

    @torch.no_grad()
    def sample(self, n: int, *, seed: int) -> Tensor:
        c = self.draw(n, as_generator(seed))
        return decode_sparse(self.sae, c.ids, c.vals)


class _FromStatistics:
    """Fits a ``baselines.generators`` SAE composition on the artifact: its ``compose`` then
    starts from latent sets drawn per ``sample`` (stream ``statistics.base_codes``) where the
    original starts from public rows' codes."""

    uses, access = ["statistics_artifact", "sae"], ("statistics", "sae")

    @torch.no_grad()
    def fit(self, stats: TrackStatistics, sae: Any) -> None:
        self.sae, self.draw = sae, LatentSets(stats, sae)
        self.log_freq = sae.log_sparsity.float().cpu()
        self.alive = torch.nonzero(~sae.dead_mask().cpu()).flatten()
        W = sae.W_dec.detach().float()
        self.W_unit = W / W.norm(dim=1, keepdim=True).clamp_min(1e-12)
        if isinstance(self, Structured):
            self.neigh = sparsity_neighbours(self.log_freq, self.alive, self.n_anchor_candidates)
        elif isinstance(self, SAEBaseline):
            self.neigh = sparsity_neighbours(self.log_freq, self.alive, self.n_neighbours)

    def _base(self, n: int, g: torch.Generator) -> Tensor:
        return _rows(n, len(self.codes.ids), g)

    def compose(self, n: int, seed: int) -> dict[str, Tensor]:
        self.codes = self.draw(n, rng.generator(seed, "statistics.base_codes"))
        return super().compose(n, seed)


def _ported(cls: type) -> type:
    body = {
        "name": f"stats_{cls.name}",
        "description": f"{cls.name} on latent sets drawn from the statistics artifact: "
        + cls.description,
        "__doc__": f"{cls.__name__} starting from latent sets drawn from the artifact.",
    }
    return type(f"Stats{cls.__name__}", (_FromStatistics, cls), body)


StatsSAEBaseline = _ported(SAEBaseline)
StatsBagOfFeatures = _ported(BagOfFeatures)
StatsStructured = _ported(Structured)


class StatsSingleLatent(SingleLatent):
    """single_latent on the artifact: a listed latent drawn by its firing count (distinct while
    n <= the listed latents) at ``latent_norm_mean``, plus b_dec."""

    name, uses, access = (
        "stats_single_latent",
        ["statistics_artifact", "sae"],
        ("statistics", "sae"),
    )
    description = "one listed SAE latent (drawn by its firing count in the artifact) at the mean latent-part norm, plus b_dec"

    @torch.no_grad()
    def fit(self, stats: TrackStatistics, sae: Any) -> None:
        _need(stats, "latent_ids", "latent_counts", "latent_norm_mean")
        self.sae = sae
        self.alive = stats["latent_ids"].long()
        self.weights = stats["latent_counts"].double()
        self.scale = float(stats["latent_norm_mean"][0])
        W = sae.W_dec.detach().float()
        self.W_unit = W / W.norm(dim=1, keepdim=True).clamp_min(1e-12)
        if not len(self.alive):
            raise ConfigError("the artifact lists no latent", field="latent_ids")


STATISTICS_GENERATORS: dict[str, Callable[[], StatisticsGenerator]] = {
    g.name: g
    for g in (
        StatsGaussian,
        StatsIsotropic,
        StatsTokenCluster,
        StatsSAEComposition,
        StatsSAEBaseline,
        StatsBagOfFeatures,
        StatsStructured,
        StatsSingleLatent,
    )
}
"""The tier's baselines by name."""
