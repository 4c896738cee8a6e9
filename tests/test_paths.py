import pytest
import torch

from challenge import paths as p
from challenge.errors import ConfigError

U32 = 2.0**-24  # float32 unit roundoff


def gamma(n: int, u: float = U32) -> float:
    """Higham's gamma_n = n u / (1 - n u): relative error bound of an n-term sum or dot."""
    return n * u / (1 - n * u)


def pair(b=3, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, d, generator=g) * 5, torch.randn(b, d, generator=g) * 5


def test_linear_path_endpoints_and_shape():
    a, t = pair()
    x = p.linear_path(a, t, 100)
    assert x.shape == (3, 100, 16) and x.dtype == torch.float32
    assert torch.equal(x[:, 0], a) and torch.equal(x[:, -1], t)
    # float64 reference: linspace's alpha_50 = 1 - 49 fl(1/99) is within 3u of 50/99, then
    # t - a, the product and the sum each round by u
    a64, t64 = a.double(), t.double()
    ref = a64 + (50 / 99) * (t64 - a64)
    bound = U32 * ref.abs() + 6 * U32 * (t64 - a64).abs()
    assert ((x[:, 50].double() - ref).abs() <= bound).all()


def test_absolute_path_step_lengths_and_clamp():
    a, t = pair()
    dist = (t - a).norm(dim=1)
    x, mask = p.absolute_path(a, t, step_size=0.5, n_steps=101, return_mask=True)
    assert x.shape == (3, 101, 16) and mask.shape == (3, 101)
    assert torch.equal(x[:, 0], a)
    steps = (x[:, 1:] - x[:, :-1]).norm(dim=-1)
    d = a.shape[1]
    # x_t = fl(a + fl(c_t unit)), c_t = min(0.5 t, |T - A|): each point is within
    # e_t = gamma_2 (c_t + |x_t|) (L2) of a + c_t unit, and the computed unit's norm is within
    # gamma_{d+2} of 1 (a float32 norm and a division)
    c = torch.minimum(0.5 * torch.arange(101.0), dist[:, None]).double()  # [B, S]
    e = gamma(2) * (c + x.double().norm(dim=-1))
    for b in range(3):
        n_full = int(torch.floor(dist[b] / 0.5))  # steps t=1..n_full land before T
        # |x_{t+1} - x_t| = 0.5 |unit| up to e_t + e_{t+1}, the subtraction (u) and the norm's
        # own gamma_{d+1}
        bound = 0.5 * (gamma(d + 2) + gamma(d + 1) + U32) + e[b, :n_full] + e[b, 1 : n_full + 1]
        assert ((steps[b, :n_full].double() - 0.5).abs() <= bound).all()
        assert mask[b].sum() == n_full + 1
        assert torch.equal(x[b, n_full + 1 :], t[b].expand(101 - n_full - 1, -1))
        # points move along the straight segment toward T: x - a = c unit up to e_t (+ u from
        # the subtraction), which moves both sides by at most that (Cauchy-Schwarz); exactly,
        # both are c |unit| . (T - A) / |T - A| ~ c, and the dot, the norms and the division add
        # <= 2 gamma_{d+2} relative to c each
        y = x[b] - a[b]
        along = (y @ (t[b] - a[b])) / dist[b]
        bound = 2 * (e[b] + U32 * c[b]) + 4 * gamma(d + 2) * c[b]
        assert ((along.double() - y.norm(dim=-1).double()).abs() <= bound).all()


def test_absolute_path_never_reaching_target():
    a = torch.zeros(1, 4)
    t = torch.tensor([[100.0, 0, 0, 0]])
    x, mask = p.absolute_path(a, t, step_size=0.5, n_steps=11, return_mask=True)
    assert mask.all()
    # unit = (100, 0, 0, 0) / 100 = e_1 exactly, so 0 + 0.5 t * 1 is exact
    assert torch.equal(x[0, :, 0], torch.arange(11) * 0.5)


def test_ray_path():
    a, d = pair(2, 8)
    lengths = torch.tensor([0.0, 1.0, 3.0])
    x = p.ray_path(a, d, lengths)
    assert torch.equal(x[:, 0], a)
    # x = fl(a + fl(L unit)), |fl(unit)| = 1 within gamma_{d+2}; x - a recovers L unit within
    # gamma_2 (L + |x|) (L2), and its float32 norm adds gamma_{d+1} relative
    dist = (x - a[:, None]).norm(dim=-1).double()
    L, n = lengths.double(), a.shape[1]
    bound = (gamma(n + 2) + gamma(n + 1)) * L + gamma(3) * (L + x.double().norm(dim=-1))
    assert ((dist - L).abs() <= bound).all()
    assert p.ray_path(a, d[0], lengths).shape == (2, 3, 8)
    with pytest.raises(ConfigError, match="direction"):
        p.ray_path(a, torch.zeros(2, 8), lengths)


def test_arc_path_constant_distance_for_equal_norms():
    g = torch.Generator().manual_seed(1)
    mu = torch.randn(16, generator=g)
    u = torch.randn(2, 16, generator=g)
    u = u / u.norm(dim=1, keepdim=True) * 7
    a, b = mu + u[:1], mu + u[1:]
    x = p.arc_path(a, b, mu, 50)
    assert torch.equal(x[:, 0], a) and torch.equal(x[:, -1], b)

    def radius_error_bound(x, r):
        # x = fl(mu + fl(offset * fl(radius / |offset|))): the offset's norm (gamma_{d+1}), the
        # radius (a few roundings of r_a, r_b, themselves norms: gamma_{d+4}), the quotient and
        # the scaling (2u) give mu + r w with |w| = 1 within 2 gamma_{d+4} + 2u; then the sum
        # and x - mu round by u |x| and u |x - mu| entrywise (and so did the endpoints' a - mu,
        # b - mu that r_a, r_b come from), and the last norm adds gamma_{d+1}
        d = x.shape[-1]
        return r * (3 * gamma(d + 4) + 2 * U32) + 2 * gamma(2) * (x.double().norm(dim=-1) + r)

    r = (x - mu).norm(dim=-1).double()
    assert ((r - 7.0).abs() <= radius_error_bound(x, 7.0)).all()
    # unequal norms: radius interpolates linearly
    x2 = p.arc_path(a, mu + 2 * u[1:], mu, 11)
    want = torch.linspace(7, 14, 11, dtype=torch.float64)
    r2 = (x2 - mu).norm(dim=-1)[0].double()
    assert ((r2 - want).abs() <= radius_error_bound(x2[0], want)).all()


def test_length_grid_and_scaled():
    grid = p.p3_length_grid()
    assert grid[0] == 1 and grid[-1] == 91 and len(grid) == 46
    assert torch.equal(p.scaled(grid, 2.0), grid * 2)
    with pytest.raises(ConfigError, match="unit"):
        p.scaled(grid, 0)


def test_shape_errors():
    a, t = pair()
    with pytest.raises(ConfigError, match="target"):
        p.linear_path(a, t[:2])
