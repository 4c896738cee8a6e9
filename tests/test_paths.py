import pytest
import torch

from challenge import paths as p
from challenge.errors import ConfigError


def pair(b=3, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, d, generator=g) * 5, torch.randn(b, d, generator=g) * 5


def test_linear_path_endpoints_and_shape():
    a, t = pair()
    x = p.linear_path(a, t, 100)
    assert x.shape == (3, 100, 16) and x.dtype == torch.float32
    assert torch.equal(x[:, 0], a) and torch.equal(x[:, -1], t)
    torch.testing.assert_close(x[:, 50], a + (50 / 99) * (t - a))


def test_absolute_path_step_lengths_and_clamp():
    a, t = pair()
    dist = (t - a).norm(dim=1)
    x, mask = p.absolute_path(a, t, step_size=0.5, n_steps=101, return_mask=True)
    assert x.shape == (3, 101, 16) and mask.shape == (3, 101)
    assert torch.equal(x[:, 0], a)
    steps = (x[:, 1:] - x[:, :-1]).norm(dim=-1)
    for b in range(3):
        n_full = int(torch.floor(dist[b] / 0.5))  # steps t=1..n_full land before T
        torch.testing.assert_close(steps[b, :n_full], torch.full((n_full,), 0.5), atol=1e-4, rtol=0)
        assert mask[b].sum() == n_full + 1
        assert torch.equal(x[b, n_full + 1 :], t[b].expand(101 - n_full - 1, -1))
        # points move along the straight segment toward T
        along = ((x[b] - a[b]) @ (t[b] - a[b])) / dist[b]
        torch.testing.assert_close(along, (x[b] - a[b]).norm(dim=-1), atol=1e-3, rtol=0)


def test_absolute_path_never_reaching_target():
    a = torch.zeros(1, 4)
    t = torch.tensor([[100.0, 0, 0, 0]])
    x, mask = p.absolute_path(a, t, step_size=0.5, n_steps=11, return_mask=True)
    assert mask.all()
    torch.testing.assert_close(x[0, :, 0], torch.arange(11) * 0.5)


def test_ray_path():
    a, d = pair(2, 8)
    lengths = torch.tensor([0.0, 1.0, 3.0])
    x = p.ray_path(a, d, lengths)
    assert torch.equal(x[:, 0], a)
    torch.testing.assert_close((x - a[:, None]).norm(dim=-1), lengths.expand(2, 3))
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
    torch.testing.assert_close((x - mu).norm(dim=-1), torch.full((1, 50), 7.0))
    # unequal norms: radius interpolates linearly
    x2 = p.arc_path(a, mu + 2 * u[1:], mu, 11)
    torch.testing.assert_close((x2 - mu).norm(dim=-1)[0], torch.linspace(7, 14, 11))


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
