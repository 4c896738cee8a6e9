"""The radius probe's root-finders (``challenge.probes``): the default bisection is the board's,
bit for bit; ``RadiusSearch("illinois")`` finds the same radius to the bisection's own
precision with fewer engine rows (on an analytic stand-in for the engine, and on the tiny
track with the embedded model)."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from challenge.directions import ActivationStats, gaussian_like
from challenge.errors import ConfigError
from challenge.probes import (
    ProbeConfig,
    RadiusBracket,
    RadiusSearch,
    radius,
    radius_illinois,
    run_probes,
    unit_directions,
)
from challenge.scoring import ScoreConfig
from challenge.scoring.probing import make_slots

KL = 0.1
R_MIN, R_MAX = 0.02, 3.0
SPAN = math.log(R_MAX / R_MIN)


# ---------------------------------------------------------------- an analytic engine


class QuadraticEngine:
    """Stands in for ``PerturbationEngine.curves``: along ``u`` from point ``i`` (its id is the
    token), KL(r) = ``KL * (r^2 q_i(u))^(p_i / 2)`` with ``q_i(u) = sum_j (u_j / s_ij)^2``, so the
    root is ``r* = q_i(u)^(-1/2)`` whatever the log-log slope ``p_i``; points listed in ``nan``
    give NaN everywhere. Counts the rows (paths x steps) of every call."""

    def __init__(self, scales, powers, nan=()):
        self.cfg = SimpleNamespace(max_rows=1024)
        self.scales, self.powers, self.nan = scales, powers, set(nan)
        self.rows = self.calls = 0

    def root(self, dirs):
        return (dirs.double() ** 2 / self.scales[:, None, :] ** 2).sum(-1) ** -0.5

    def curves(self, tokens, paths, *, desc="", js=True, max_rows=None):
        B, S, _ = paths.shape
        self.rows += B * S
        self.calls += 1
        ids = tokens[:, 0]
        delta = (paths - paths[:, :1]).double()
        q = (delta**2 / self.scales[ids][:, None, :] ** 2).sum(-1)
        kl = KL * q ** (self.powers[ids][:, None] / 2)
        for b, i in enumerate(ids.tolist()):
            if i in self.nan:
                kl[b, 1:] = float("nan")
        return SimpleNamespace(kl=kl.numpy())


def quadratic_case(n=12, k=5, d=8, seed=0):
    """Points whose roots span the whole bracket (and beyond it on both sides), log-log slopes
    1, 2 and 4; point 0 is NaN everywhere."""
    g = torch.Generator().manual_seed(seed)
    level = torch.linspace(-5.0, 2.5, n, dtype=torch.float64)[torch.randperm(n, generator=g)]
    shape = torch.empty(n, d, dtype=torch.float64).uniform_(-0.7, 0.7, generator=g)
    scales = torch.exp(level[:, None] + shape)  # roots near e^level, direction by direction
    powers = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64).repeat(n)[:n]
    eng = QuadraticEngine(scales, powers, nan=(0,))
    dirs = unit_directions(n, k, d, g)
    points = torch.randn(n, d, generator=g)
    tokens = torch.arange(n)[:, None]
    return eng, tokens, points, dirs


def test_illinois_brackets_the_analytic_root_to_the_tolerance():
    eng, tok, pts, dirs = quadratic_case()
    tol = SPAN / 2**7
    br = radius_illinois(eng, tok, pts, dirs, R_MIN, R_MAX, KL, tol)
    root = eng.root(dirs).log().numpy()
    lo, hi = math.log(R_MIN), math.log(R_MAX)
    assert isinstance(br, RadiusBracket) and br.lo.shape == br.hi.shape == (12, 5)
    assert (br.hi - br.lo <= tol * (1 + 1e-9)).all() and (br.lo < br.hi).all()
    assert (br.lo >= lo).all() and (br.hi <= hi).all()
    inside = (root > lo) & (root < hi)
    inside[0] = False  # the NaN point
    assert inside.sum() > 20 and (root < lo).any() and (root > hi).any()
    # float32 trial points: the bracket's ends are radii to ~1e-7
    assert ((br.lo - 1e-6 <= root) & (root <= br.hi + 1e-6))[inside].all()
    # beyond the interval: the end's half-bracket, as bisection reports it
    above = root > hi
    above[0] = True  # NaN counts as below kl at every radius
    below = root < lo
    below[0] = False
    assert (br.hi[above] == hi).all() and (br.lo[below] == lo).all()
    assert np.array_equal(br.radius, np.exp((br.lo + br.hi) / 2))
    # the same answer as 7-round bisection, within both final half-widths
    bis = np.log(radius(eng, tok, pts, dirs, R_MIN, R_MAX, KL, 7))
    assert (np.abs(bis - np.log(br.radius)) <= tol / 2 + (br.hi - br.lo) / 2 + 1e-9).all()


def test_illinois_needs_fewer_rows_than_bisection_on_a_smooth_kl():
    eng, tok, pts, dirs = quadratic_case(n=40, k=6, d=16, seed=1)
    radius(eng, tok, pts, dirs, R_MIN, R_MAX, KL, 7)
    bisect_rows = eng.rows
    eng.rows = eng.calls = 0
    br = radius_illinois(eng, tok, pts, dirs, R_MIN, R_MAX, KL, SPAN / 2**7)
    assert eng.calls == br.calls <= 10
    assert eng.rows < 0.8 * bisect_rows, (eng.rows, bisect_rows)


def test_illinois_stops_at_the_iteration_cap_with_a_valid_bracket():
    eng, tok, pts, dirs = quadratic_case()
    one = radius_illinois(eng, tok, pts, dirs, R_MIN, R_MAX, KL, 1e-6, max_iter=1)
    assert one.calls == 1
    # the first call evaluates the midpoint of every bracket: half the span is left
    assert np.allclose(one.hi - one.lo, SPAN / 2)
    # a tolerance far below float32's resolution: the cap ends the search
    capped = radius_illinois(eng, tok, pts, dirs, R_MIN, R_MAX, KL, 1e-12, max_iter=12)
    assert capped.calls == 12 and (capped.lo < capped.hi).all()


# ---------------------------------------------------------------- the config


def test_radius_search_fields():
    """The root-finder is configured apart from ``ProbeConfig`` (whose fields are every record's
    and the board's identity): bisection by default, its tolerance the bisection's own width."""
    search, cfg = RadiusSearch(), ProbeConfig()
    assert search.method == "bisect" and search.tol is None and search.max_iter == 30
    assert search.log_tol(cfg) == math.log(cfg.r_max / cfg.r_min) / 2**cfg.bisect_steps
    # the board's config: 7 rounds on [0.02, 3]
    board = ScoreConfig().probes
    assert board.bisect_steps == 7
    assert search.log_tol(board) == pytest.approx(math.log(150) / 128)
    assert RadiusSearch(tol=0.01).log_tol(cfg) == 0.01
    assert not {"method", "tol", "max_iter"} & set(vars(cfg))  # records keep their layout
    bad = [
        ({"method": "newton"}, "method"),
        ({"tol": 0.0}, "tol"),
        ({"tol": -0.1}, "tol"),
        ({"tol": float("nan")}, "tol"),
        ({"tol": "0.1"}, "tol"),
        ({"max_iter": 0}, "max_iter"),
        ({"max_iter": 2.5}, "max_iter"),
        ({"max_iter": True}, "max_iter"),
    ]
    for kwargs, field in bad:
        with pytest.raises(ConfigError) as e:
            RadiusSearch(**kwargs)
        assert e.value.field == field, kwargs


# ---------------------------------------------------------------- the tiny track

PROBES = ProbeConfig(probes=("radius",), n_directions=4, bisect_steps=6)
N_REAL = N_GAUSS = 12


def _radius_before(engine, tokens, points, dirs, r_min, r_max, kl, steps):
    """``challenge.probes.radius`` as the committed board's records were made with (a copy)."""
    n, k, _ = dirs.shape
    lo = torch.full((n, k), math.log(r_min), dtype=torch.float64)
    hi = torch.full((n, k), math.log(r_max), dtype=torch.float64)
    for s in range(steps):
        mid = (lo + hi) / 2
        trial = points[:, None, :] + mid.exp().float()[..., None] * dirs
        paths = torch.cat([points[:, None, :], trial], dim=1)
        c = engine.curves(tokens, paths, desc=f"radius {s + 1}/{steps}", js=False)
        above = torch.from_numpy(c.kl[:, 1:] >= kl)
        hi = torch.where(above, mid, hi)
        lo = torch.where(above, lo, mid)
    return ((lo + hi) / 2).exp().numpy()


class Counting:
    """An engine whose ``curves`` calls are counted in rows (paths x steps)."""

    def __init__(self, engine):
        self.engine, self.cfg, self.rows, self.calls = engine, engine.cfg, 0, 0

    def curves(self, tokens, paths, **kw):
        self.rows += paths.shape[0] * paths.shape[1]
        self.calls += 1
        return self.engine.curves(tokens, paths, **kw)


@pytest.fixture(scope="module")
def tiny(smollm, tiny_track):
    """Real held-out rows and N(mu, Sigma) rows in their scorer slots, with both methods'
    features and rows."""
    real = tiny_track.acts("heldout")[tiny_track.reference_rows()][:N_REAL]
    stats = ActivationStats.fit(tiny_track.acts("public"))
    g = gaussian_like(stats, N_GAUSS, torch.Generator().manual_seed(3))
    points = torch.cat([real, g])
    n = len(points)
    slots = make_slots(tiny_track, n, ScoreConfig(probes=PROBES, contexts_per_row=1))
    units = tiny_track.units
    public = tiny_track.acts("public")
    args = (
        slots.tokens,
        points,
        slots.dirs[:, : PROBES.n_directions],
        PROBES.r_min * units["write_norm_median"],
        PROBES.r_max * units["write_norm_median"],
        PROBES.radius_kl,
    )
    out = SimpleNamespace(points=points, slots=slots, args=args, units=units)
    eng = Counting(tiny_track.engine(smollm, progress=False))
    out.default = run_probes(eng, points, slots, public, units, PROBES)
    out.bisect_rows, out.bisect_calls = eng.rows, eng.calls
    out.explicit = run_probes(eng, points, slots, public, units, PROBES, RadiusSearch("bisect"))
    out.before = _radius_before(eng.engine, *args, PROBES.bisect_steps)
    eng = Counting(tiny_track.engine(smollm, progress=False))
    out.bracket = radius_illinois(eng, *args, RadiusSearch().log_tol(PROBES), 30)
    out.illinois_rows, out.illinois_calls = eng.rows, eng.calls
    out.engine = eng.engine
    return out


def test_default_radius_features_are_the_boards_bit_for_bit(tiny):
    norm = tiny.units["write_norm_median"]
    lr = np.log(tiny.before / norm)
    want = {"radius.mean_log": lr.mean(1), "radius.min_log": lr.min(1), "radius.max_log": lr.max(1)}
    assert RadiusSearch().method == "bisect"
    assert sorted(tiny.default) == sorted(want)
    for key, v in want.items():
        assert np.array_equal(tiny.default[key], v), key
        assert np.array_equal(tiny.explicit[key], v), key
    assert tiny.bisect_calls == PROBES.bisect_steps


def test_illinois_agrees_with_bisection_within_both_brackets(tiny, smollm):
    """Each answer is the midpoint of a bracket that holds a crossing of ``radius_kl``, so where
    KL crosses it once along a direction the two differ by at most the sum of the half-widths;
    where they differ by more, both brackets are checked to hold a crossing (KL is then not
    monotone along that direction)."""
    steps, tol = PROBES.bisect_steps, RadiusSearch().log_tol(PROBES)
    w_bisect = math.log(PROBES.r_max / PROBES.r_min) / 2**steps
    br = tiny.bracket
    w = br.hi - br.lo
    assert (w <= tol * (1 + 1e-9)).all() and br.calls == tiny.illinois_calls
    assert tol == pytest.approx(w_bisect)
    err = np.abs(np.log(tiny.before) - np.log(br.radius))
    far = err > w_bisect / 2 + w / 2 + 1e-9
    assert far.mean() <= 0.05, err[far]
    # every Illinois bracket end that was evaluated is on its side of radius_kl, and so are the
    # bisection brackets of the directions where the two disagree
    tokens, points, dirs, r_min, r_max, kl = tiny.args
    lo_b = np.log(tiny.before) - w_bisect / 2
    ends = [br.lo, br.hi, np.where(far, lo_b, br.lo), np.where(far, lo_b + w_bisect, br.hi)]
    radii = torch.from_numpy(np.exp(np.stack(ends, axis=2))).float()  # [n, k, 4]
    trial = points[:, None, None, :] + radii[..., None] * dirs[:, :, None, :]
    n, k = w.shape
    paths = torch.cat([points[:, None, :], trial.reshape(n, 4 * k, -1)], dim=1)
    got = tiny.engine.curves(tokens, paths, js=False).kl[:, 1:].reshape(n, k, 4)
    slack = 1e-4  # another batch: float32 sums in another order
    lo_end = np.stack([ends[0] > math.log(r_min) + 1e-12, ends[2] > math.log(r_min) + 1e-12], -1)
    hi_end = np.stack([ends[1] < math.log(r_max) - 1e-12, ends[3] < math.log(r_max) - 1e-12], -1)
    assert (got[..., [0, 2]] < kl * (1 + slack))[lo_end].all()
    assert (got[..., [1, 3]] >= kl * (1 - slack))[hi_end].all()


def test_illinois_uses_fewer_engine_rows(tiny):
    assert tiny.illinois_rows < tiny.bisect_rows, (tiny.illinois_rows, tiny.bisect_rows)


def test_run_probes_with_illinois_reports_the_same_features(tiny, smollm, tiny_track):
    eng = tiny_track.engine(smollm, progress=False)
    public = tiny_track.acts("public")
    got = run_probes(
        eng, tiny.points, tiny.slots, public, tiny.units, PROBES, RadiusSearch("illinois")
    )
    lr = np.log(tiny.bracket.radius / tiny.units["write_norm_median"])
    assert sorted(got) == sorted(tiny.default)
    assert np.array_equal(got["radius.mean_log"], lr.mean(1))
    assert np.array_equal(got["radius.min_log"], lr.min(1))
    assert np.array_equal(got["radius.max_log"], lr.max(1))


# ---------------------------------------------------------------- joint probes
