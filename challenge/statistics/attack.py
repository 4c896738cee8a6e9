"""Reconstruction attacks on a statistics artifact: try to place a row near a real row.

Each attack turns the artifact alone (and the track's SAE, which the tier also hands out) into
candidate rows ``[m, d_model]``; :func:`measure` gives each candidate's distance to its nearest
real row in units of the copy check's ``tau`` (``challenge.scoring.copycheck.calibrate`` on
every real row of the track). A candidate below 1 would pass as a near-copy of a real row.

| attack | candidates |
|---|---|
| ``token_means`` | the per-token means ``m_t`` |
| ``other_mean`` | the pooled "other" tokens' mean, derived: ``(N mu - sum_t n_t m_t) / n_other`` |
| ``global_eigen`` | ``mu + a sqrt(lambda_i) v_i``: top 32 eigenvectors of ``cov``, ``a`` in +-{0.5, 1, 2, 3} |
| ``token_eigen`` | ``m_t + a sqrt(lambda_i) v_i``: top 8 of ``token_within_cov``, ``a`` in +-{0.5, 1, 2} |
| ``token_signs`` | ``m_t +- s . sd_t sqrt((n_t - 1) / n_t)``: the per-coordinate deviation a row of a token with ``n_t`` rows has in RMS (for ``n_t = 2`` exactly each row's), signs ``s`` guessed by minimising the Mahalanobis norm under ``token_within_cov`` (spectral start, greedy flips) |
| ``profile_decode`` | ``b_dec + token_profiles W_dec``: the SAE decode of each token's mean code |
| ``profile_core`` | the decode of each token's L0 most frequent latents at their mean values |
| ``latent_medians`` | ``b_dec + q50_j W_dec[j]`` for every listed latent |

:func:`sign_oracle` is not an attack but a bound: ``token_signs`` with every sign taken from the
real row itself (what ``token_vars`` would give an attacker who guessed every sign; exact for
tokens with 2 rows).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from challenge.statistics.artifact import TrackStatistics

ATTACKS = (
    "token_means",
    "other_mean",
    "global_eigen",
    "token_eigen",
    "token_signs",
    "profile_decode",
    "profile_core",
    "latent_medians",
)


def _eigen_steps(center: Tensor, cov: Tensor, n_vec: int, steps: tuple[float, ...]) -> Tensor:
    """``center_t + a sqrt(lambda_i) v_i`` for the top ``n_vec`` eigenpairs and every ``a`` in
    ``+-steps``: ``[len(center) * n_vec * 2 len(steps), d]``."""
    lam, vec = torch.linalg.eigh(cov.double())
    lam, vec = lam.flip(0)[:n_vec].clamp_min(0), vec.flip(1)[:, :n_vec]
    a = torch.tensor([s * sign for s in steps for sign in (1, -1)], dtype=torch.float64)
    moves = (a[:, None, None] * (lam.sqrt()[None, :, None] * vec.T[None])).reshape(-1, cov.shape[0])
    return (center.double()[:, None, :] + moves[None]).reshape(-1, cov.shape[0])


def _deviation(stats: TrackStatistics) -> tuple[Tensor, Tensor]:
    """The RMS per-coordinate deviation of a token's row from its mean, ``sd_t sqrt((n_t-1)/n_t)``
    (``[T, d]``), and the listed tokens' counts."""
    n = stats["token_counts"].double()
    sd = stats["token_vars"].double().clamp_min(0).sqrt()
    return sd * ((n - 1).clamp_min(0) / n.clamp_min(1)).sqrt()[:, None], n


def guess_signs(dev: Tensor, precision: Tensor, chunk: int = 32, max_flips: int | None = None):
    """Per row of ``dev`` ``[T, d]``, the signs ``s`` in {-1, 1}^d minimising
    ``(s . dev)^T precision (s . dev)``: the sign vector of the smallest eigenvector of
    ``D P D``, then single flips that lower the objective (greedy, at most ``max_flips``)."""
    T, d = dev.shape
    out = torch.ones(T, d, dtype=torch.float64)
    P = precision.double()
    for i in range(0, T, chunk):
        D = dev[i : i + chunk].double()
        M = D[:, :, None] * P[None] * D[:, None, :]  # [c, d, d]
        _, vec = torch.linalg.eigh(M)
        s = torch.where(vec[:, :, 0] >= 0, 1.0, -1.0).double()
        g = torch.einsum("cij,cj->ci", M, s)
        diag = M.diagonal(dim1=1, dim2=2)
        rows = torch.arange(len(D))
        for _ in range(max_flips or d):
            delta = -4 * s * (g - diag * s)  # change of s^T M s when flipping each sign
            best = delta.argmin(1)
            gain = delta[rows, best]
            act = gain < -1e-12
            if not act.any():
                break
            old = s[rows, best]
            g = g - torch.where(act, 2 * old, 0.0)[:, None] * M[rows, :, best]
            s[rows[act], best[act]] = -old[act]
        out[i : i + chunk] = s
    return out


def _precision(cov: Tensor, floor: float = 1e-6) -> Tensor:
    lam, vec = torch.linalg.eigh(cov.double())
    lam = lam.clamp_min(floor * float(lam.max().clamp_min(1e-30)))
    return (vec / lam) @ vec.T


@torch.no_grad()
def candidates(stats: TrackStatistics, sae=None) -> dict[str, Tensor]:
    """Every attack's candidate rows (float64 ``[m, d]``; attacks that need a statistic the
    artifact lacks, or the SAE when ``sae`` is None, are left out)."""
    out: dict[str, Tensor] = {}
    mu = stats["mean"].double()
    means, n = stats["token_means"].double(), stats["token_counts"].double()
    out["token_means"] = means
    if "token_other_count" in stats:
        n_other = float(stats["token_other_count"][0])
        out["other_mean"] = ((stats.n_rows * mu - (n[:, None] * means).sum(0)) / n_other)[None]
    out["global_eigen"] = _eigen_steps(mu[None], stats["cov"], 32, (0.5, 1.0, 2.0, 3.0))
    if "token_within_cov" in stats and len(means):
        out["token_eigen"] = _eigen_steps(means, stats["token_within_cov"], 8, (0.5, 1.0, 2.0))
        if "token_vars" in stats:
            dev, n_t = _deviation(stats)
            multi = n_t >= 2  # a single row has no deviation: its candidate is its mean
            if multi.any():
                s = guess_signs(dev[multi], _precision(stats["token_within_cov"]))
                m, e = means[multi], s * dev[multi]
                out["token_signs"] = torch.cat([m + e, m - e])
    if sae is not None:
        W = sae.W_dec.detach().double()
        b = sae.b_dec.detach().double()
        lat = stats["latent_ids"].long()
        if "token_profiles" in stats and len(lat):
            prof = stats["token_profiles"].double()
            out["profile_decode"] = b + prof @ W[lat]
            vmean = stats["latent_value_mean"].double().clamp_min(1e-12)
            rate = prof / vmean
            l0 = stats["l0_values"].double()
            w = stats["l0_counts"].double()
            width = int(l0[torch.argmax(w)]) if len(l0) else (sae.k if sae.kind == "topk" else 1)
            top = rate.topk(min(max(width, 1), len(lat)), dim=1).indices
            out["profile_core"] = b + torch.einsum("tk,tkd->td", vmean[top], W[lat][top])
        if len(lat):
            q = stats["latent_value_quantiles"].double()
            med = q[:, q.shape[1] // 2]
            out["latent_medians"] = b + med[:, None] * W[lat]
    return {k: v for k, v in out.items() if len(v)}


def sign_oracle(stats: TrackStatistics, public: Tensor, last_tokens: Tensor) -> Tensor:
    """The bound on ``token_signs``: for every public row of a listed token,
    ``m_t + sign(x - m_t) . dev_t`` (uses the real rows: not an attack)."""
    if "token_vars" not in stats:
        return torch.zeros(0, stats.d_model, dtype=torch.float64)
    dev, _ = _deviation(stats)
    pos = {int(t): i for i, t in enumerate(stats["token_ids"])}
    idx = torch.tensor([pos.get(int(t), -1) for t in last_tokens])
    keep = idx >= 0
    m = stats["token_means"].double()[idx[keep]]
    return m + torch.sign(public.double()[keep] - m) * dev[idx[keep]]


def measure(
    cands: dict[str, Tensor],
    real: Tensor,
    tau: float,
    split_of: np.ndarray | None = None,
    p_close: float | None = None,
) -> dict[str, dict[str, Any]]:
    """Per attack: candidates, how many lie within ``tau`` of a real row (``within_tau``), of
    those how many have exactly one real row within ``tau`` (``singles``: they single a row
    out), and the distance of the nearest real row in units of ``tau`` (min, 1 % quantile,
    median); the nearest distance to each split's rows (``split_of``: the split of each real
    row) and where the within-tau candidates' nearest rows lie; with ``p_close`` (the copy
    check's ``Calibration.p_close``), ``allowed``: the most rows of a fresh real sample of that
    size within ``tau`` (``copycheck.allowed_close``), what an honest sampler may reach."""
    from challenge.neighbours import nearest
    from challenge.scoring.copycheck import allowed_close

    split_of = np.full(len(real), "real") if split_of is None else np.asarray(split_of)
    names = sorted(set(split_of.tolist()))
    out = {}
    for name, c in cands.items():
        per = torch.stack([nearest(c, real[torch.from_numpy(split_of == s)])[0] for s in names])
        dist, which = per.min(0)
        r = (dist / tau).numpy()
        close = torch.from_numpy(r < 1)
        hits = which.numpy()[r < 1]
        crowd = (torch.cdist(c[close].double(), real.double()) < tau).sum(1)
        out[name] = {
            "n": int(len(r)),
            "within_tau": int(close.sum()),
            "singles": int((crowd == 1).sum()),
            "min": float(r.min()),
            "q01": float(np.quantile(r, 0.01)),
            "median": float(np.median(r)),
            "min_by_split": {s: float(per[i].min() / tau) for i, s in enumerate(names)},
            "within_tau_by_split": {
                s: int((hits == i).sum()) for i, s in enumerate(names) if (hits == i).any()
            },
        }
        if p_close is not None:
            out[name]["allowed"] = allowed_close(len(r), p_close)
    return out
