import json

import numpy as np
import pytest
from scipy import stats

from challenge import metrics as m
from challenge.errors import ConfigError

N = 100


def step_curve(jump: int, n: int = N) -> np.ndarray:
    v = np.zeros(n)
    v[jump:] = 1.0
    return v


def sigmoid_curve(k: float = 10.0, n: int = N) -> np.ndarray:
    alpha = np.linspace(0, 1, n)
    return 1 / (1 + np.exp(-k * (alpha - 0.5)))


def test_step_function_known_answers():
    v = step_curve(40)
    assert m.max_slope_step(v).tolist() == [40]
    assert m.plateau_length(v, 0.5).tolist() == [40]
    # ratio at i=41 is (1 * 41 / 2) / 0.5 = 41, larger than anywhere else
    assert m.area_ratio_step(v).tolist() == [41]
    assert m.nonlinearity_step(v).tolist() == [40]


def test_vectorised_over_curves_and_1d():
    curves = np.stack([step_curve(j) for j in (10, 30, 70)])
    assert m.max_slope_step(curves).tolist() == [10, 30, 70]
    assert m.plateau_length(curves, 1.0).tolist() == [10, 30, 70]
    assert m.area_ratio_step(curves).tolist() == [11, 31, 71]
    assert m.max_slope_step(curves[0]).shape == (1,)


def test_straight_line():
    flat = np.linspace(0, 1, N)  # slope 1/99 < 0.02 once normalised to end at 1
    assert m.max_slope_step(flat).tolist() == [N - 1]
    assert m.max_slope_step(flat * 5, normalise=True).tolist() == [N - 1]
    assert m.max_slope_step(flat * 5).tolist() != [N - 1]  # unnormalised slope 5/99 > 0.02
    assert m.nonlinearity_step(flat * 7 + 3).tolist() == [N - 1]
    assert m.nonlinearity_step(flat, start=0).tolist() == [N - 1]
    assert m.plateau_length(flat, 2.0).tolist() == [N]  # censored


def test_threshold_is_strict():
    v = np.arange(N) * 0.5  # exact binary slopes
    assert m.max_slope_step(v, threshold=0.5).tolist() == [N - 1]
    assert m.max_slope_step(v, threshold=0.49).tolist() == [1]  # ties -> first slope


def test_sigmoid_max_slope_and_sharpness():
    v = sigmoid_curve(n=N)
    mid = (N - 1) / 2
    assert abs(int(m.max_slope_step(v, normalise=True)[0]) - mid) <= 1
    k, S = 10.0, 201
    d = sigmoid_curve(k, S)
    d = d - d[0]  # distance from alpha = 0
    analytic = (k / 4) / d[-1]  # max d'(alpha) / d(1)
    # discretisation: a forward difference on h = 1/(S-1) is within (h/2) max|d''| of d', and
    # max|d''| = k^2 max|s(1-s)(1-2s)| = k^2 / (6 sqrt 3) for the sigmoid s (float64 rounding is
    # ~1e-13, far below)
    h = 1 / (S - 1)
    assert abs(m.sharpness(d)[0] - analytic) <= (h / 2) * k**2 / (6 * np.sqrt(3)) / d[-1]
    # float64: linspace values, the division by d[-1] and the difference each round by about u
    # of numbers <= 1, so each normalised step is 0.1 within 5 u; times S - 1 = 10
    assert abs(m.sharpness(np.linspace(0, 3, 11))[0] - 1.0) <= 10 * 5 * 2.0**-53
    assert np.isnan(m.sharpness(np.zeros(5))[0])


def test_area_ratio_matches_trapezoid_loop():
    rng = np.random.default_rng(0)
    v = np.cumsum(rng.random(30))
    ratios = [v[i - 1] * i / 2 / np.trapezoid(v[:i]) for i in range(5, 30)]
    assert m.area_ratio_step(v)[0] == 5 + int(np.argmax(ratios))
    assert m.area_ratio_step(np.zeros(10)).tolist() == [9]


def test_nonlinearity_relative_deviation():
    v = np.arange(N, dtype=float) + 10
    v[60:] *= 1.25  # 25 % above the line from step 60
    assert m.nonlinearity_step(v).tolist() == [60]
    assert m.nonlinearity_step(v, tolerance=0.3).tolist() == [N - 1]


def test_registry_and_validation():
    assert set(m.CURVE_METRICS) == {
        "max_slope_step",
        "plateau_length",
        "nonlinearity_step",
        "area_ratio_step",
        "sharpness",
    }
    with pytest.raises(ConfigError, match="curves"):
        m.max_slope_step(np.array([0.0, np.nan, 1.0]))
    with pytest.raises(ConfigError):
        m.max_slope_step(np.zeros((2, 2, 2)))


def test_ks():
    rng = np.random.default_rng(1)
    a = rng.normal(size=300)
    assert m.ks_statistic(a, a) == 0.0
    assert m.ks_statistic(a, a + 100) == 1.0
    b = rng.normal(0.5, 1, size=200)
    # both are |i/300 - j/200| for the same counts: two divisions and a subtraction, <= 3 u64
    assert abs(m.ks_fast(a, b) - stats.ks_2samp(a, b).statistic) <= 3 * 2.0**-53
    res = m.ks_bootstrap(a, b, n_boot=200, seed=0)
    assert res["low"] <= res["stat"] <= res["high"]
    assert res == m.ks_bootstrap(a, b, n_boot=200, seed=0)


def test_ks_bootstrap_pinned():
    # the scorer's committed records depend on these draws bit for bit: the values the
    # rng.choice(a) / rng.choice(b) loop of default_rng(0) gave before challenge.bootstrap
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=300), rng.normal(0.5, 1, size=200)
    assert m.ks_bootstrap(a, b, n_boot=200, seed=0) == {
        "stat": 0.32666666666666666,
        "low": 0.26329166666666665,
        "high": 0.42170833333333335,
    }


def test_summarise_json_safe():
    s = m.summarise([1, 2, 3, 4, np.nan])
    assert s["n"] == 4 and s["mean"] == 2.5 and s["median"] == 2.5
    assert s["sd"] == np.std([1.0, 2, 3, 4])  # np.std of the same finite values: exact
    json.dumps(s, allow_nan=False)
    json.dumps(m.summarise([]), allow_nan=False)
