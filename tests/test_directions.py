import numpy as np
import pytest
import torch

from challenge import directions as dr
from challenge.errors import ConfigError

D = 4
U32 = 2.0**-24  # float32 unit roundoff
U64 = 2.0**-53


def gamma(n: int, u: float = U32) -> float:
    """Higham's gamma_n = n u / (1 - n u): relative error bound of an n-term sum or dot."""
    return n * u / (1 - n * u)


@pytest.fixture(scope="module")
def stats():
    g = torch.Generator().manual_seed(0)
    mix = torch.randn(D, D, generator=g)
    acts = torch.randn(5000, D, generator=g) @ mix + torch.arange(D, dtype=torch.float32)
    return dr.ActivationStats.fit(acts), acts


def test_fit_and_roundtrip(stats):
    s, acts = stats
    x = acts.double().numpy()
    N = len(x)
    # mean: fit's float64 mean and this float64 reference are each within gamma_N(u64) mean|x|
    # of the exact mean (any summation order), then fit rounds once to float32
    ref = x.mean(0)
    bound = U32 * np.abs(ref) + 2 * gamma(N, U64) * np.abs(x).mean(0)
    assert (np.abs(s.mean.double().numpy() - ref) <= bound).all()
    # chol chol^T = cov: chol and cov are float64 results rounded once to float32 (u each), the
    # float64 factorisation is backward stable (gamma_{D+1}(u64) |L||L^T|), and the float32
    # product of D terms adds gamma_D |chol||chol^T|; no jitter was needed here
    assert s.jitter == 0.0
    absprod = s.chol.abs().double() @ s.chol.abs().double().T
    bound = (gamma(D) + 3 * U32 + gamma(D + 1, U64)) * absprod + U32 * s.cov.abs().double()
    assert ((s.chol @ s.chol.T).double() - s.cov.double()).abs().le(bound).all()
    # median norm (torch's median is the lower middle value): float64 norms of D entries are
    # within gamma_{D+1}(u64) relative of the exact ones on both sides, and an order statistic
    # moves by at most the largest perturbation of its inputs
    norms = np.sort(np.sqrt((x * x).sum(1)))
    ref = norms[(N - 1) // 2]
    assert abs(s.median_norm - ref) <= 2 * gamma(D + 1, U64) * norms[-1]
    back = dr.ActivationStats.from_dict(s.to_dict())
    assert torch.equal(back.cov, s.cov) and back.median_norm == s.median_norm and back.n == 5000


def test_fit_singular_covariance_gets_jitter():
    acts = torch.randn(50, 3, generator=torch.Generator().manual_seed(0))
    acts = torch.cat([acts, acts[:, :1]], dim=1)  # rank 3 in d = 4
    s = dr.ActivationStats.fit(acts)
    assert torch.isfinite(s.chol).all()


def test_gaussian_like_matches_stats(stats):
    s, _ = stats
    x = dr.gaussian_like(s, 20000, seed=1)
    assert x.shape == (20000, D) and x.dtype == torch.float32
    scale = s.cov.diagonal().sqrt()
    # statistical: with n = 20000 the standard error of a mean coordinate over its sd is
    # n^-1/2 = 0.0071 and that of a covariance entry over s_i s_j is <= (2/n)^1/2 = 0.01 (Gaussian
    # fourth moments), so 0.05 is >= 5 standard errors: P(any of 4 + 10 fails) < 14 * 6e-7.
    # float32 rounding of the samples (~1e-6 relative) is far below.
    assert ((x.mean(0) - s.mean).abs() / scale).max() < 0.05
    rel = (torch.cov(x.T) - s.cov).abs() / (scale[:, None] * scale[None, :])
    assert rel.max() < 0.05
    assert torch.equal(x, dr.gaussian_like(s, 20000, seed=1))
    assert not torch.equal(x, dr.gaussian_like(s, 20000, seed=2))


def test_cov_random_mixture(stats):
    s, _ = stats
    v = dr.cov_random_mixture(s, 20000, seed=3)
    scale = s.cov.diagonal().sqrt()
    # statistical, as in test_gaussian_like_matches_stats: v has covariance 2 (Sigma + 0.01 I)
    # (Sigma_ii > 0.01 here), so the standard errors below are <= 0.01 (1 + 0.01 / Sigma_ii)
    # and 0.05 is still > 4.9 of them: P(any of 14 fails) < 1e-5
    assert (s.cov.diagonal() > 1).all()
    assert ((v.mean(0)).abs() / scale).max() < 0.05
    expected = 2 * (s.cov + 0.01 * torch.eye(D))
    rel = (torch.cov(v.T) - expected).abs() / (2 * scale[:, None] * scale[None, :])
    assert rel.max() < 0.05
    assert torch.equal(v, dr.cov_random_mixture(s, 20000, seed=3))


def test_isotropic_and_real_mixture(stats):
    _, acts = stats
    v = dr.isotropic(10, 32, seed=0)
    # v = z / fl(|z|): the float32 norm of 32 terms errs by <= gamma_33 relative, the division
    # by u per entry, and the norm of v by gamma_33 again
    assert ((v.norm(dim=1).double() - 1).abs() <= 2 * gamma(32 + 3)).all()
    assert torch.equal(v, dr.isotropic(10, 32, seed=0))
    small = acts[:3]
    m = dr.real_mixture(small, 200, seed=0)
    assert (m.norm(dim=1) > 0).all()  # i != j always
    diffs = {tuple(r) for r in (small[:, None] - small[None]).reshape(-1, D).tolist()}
    assert all(tuple(r) in diffs for r in m.tolist())
    assert torch.equal(dr.toward(small, acts[3:6]), acts[3:6] - small)


def test_sae_directions_and_latent_classes():
    W = torch.tensor([[3.0, 4.0], [0.0, 2.0], [1.0, 0.0]])
    # every step is exact or correctly rounded as the literals are: |(3, 4)| = sqrt(25) = 5,
    # 3/5 and 4/5 round to fl(0.6), fl(0.8); |(0, 2)| = 2
    assert torch.equal(
        dr.sae_decoder_directions(W, torch.tensor([0, 1])), torch.tensor([[0.6, 0.8], [0, 1.0]])
    )
    acts = torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 2.0]])
    freq = torch.tensor([1e-2, 1e-3, 1e-12, 0.0])
    c = dr.classify_latents(acts, freq)
    assert c["active"][0].nonzero().flatten().tolist() == [0]
    assert c["inactive_alive"][0].nonzero().flatten().tolist() == [1]
    assert c["dead"][0].nonzero().flatten().tolist() == [2, 3]
    assert c["dead"][1].nonzero().flatten().tolist() == [2]  # active beats dead
    assert (c["active"].int() + c["inactive_alive"].int() + c["dead"].int() == 1).all()
    c2 = dr.classify_latents(acts, freq, freq_threshold=5e-3)
    assert c2["dead"][0].nonzero().flatten().tolist() == [1, 2, 3]
    pick = dr.pick_latent_per_class(c, seed=0)
    assert pick["active"].tolist() == [0, 3]
    assert pick["dead"][0].item() in (2, 3) and pick["inactive_alive"][1].item() in (0, 1)
    none = dr.pick_latent_per_class(dr.classify_latents(acts, torch.ones(4)), seed=0)
    assert none["dead"].tolist() == [-1, -1]


def test_user_vectors():
    assert dr.user_vectors([1.0, 2.0]).shape == (1, 2)
    with pytest.raises(ConfigError, match="field my_dirs"):
        dr.user_vectors([[1.0, 2.0], [0.0, 0.0]], field="my_dirs")
    with pytest.raises(ConfigError, match="d_model"):
        dr.user_vectors([1.0, 2.0], d_model=3)
    with pytest.raises(ConfigError):
        dr.user_vectors([[float("nan"), 1.0]])
