"""Error-correction study (issue 33): the exponent fit on exact toys, and the study on the tiny
track with a small SAE trained inline."""

import json

import numpy as np
import pytest
from pydantic import TypeAdapter

from challenge.errors import ConfigError
from challenge.studies import make_env
from challenge.studies.error_correction import (
    FAMILIES,
    ErrorCorrectionConfig,
    ErrorCorrectionResult,
    eps_at,
    fit_exponent,
    local_slopes,
    lp_inverse_exponent,
    run,
)

EPS = np.logspace(-4, 0, 21)


def slope_bound(eps: np.ndarray, rel: float) -> float:
    """Worst-case error of a least-squares log-log slope when every response carries a relative
    error of at most ``rel``: each log moves by at most ``rel / (1 - rel)`` (|log(1 + d)|), and
    the slope ``sum xc y / sum xc^2`` by at most that times ``sum |xc| / sum xc^2``, plus the
    float64 arithmetic of the fit itself (a few ulp of the ~|log eps| sized terms)."""
    xc = np.log(eps) - np.log(eps).mean()
    dlog = rel / (1 - rel) + 64 * np.finfo(np.float64).eps * np.abs(np.log(eps)).max()
    return dlog * np.abs(xc).sum() / (xc * xc).sum()


@pytest.mark.parametrize("power", [2.0, 3.0])
def test_exact_power_law_gives_its_exponent(power):
    # float64 toy: the only errors are the rounding of c eps^p and of the logs
    r = 0.37 * EPS**power
    p, n = fit_exponent(EPS, r)
    assert n[0] == len(EPS)
    assert abs(p[0] - power) <= slope_bound(EPS, 4 * np.finfo(np.float64).eps)
    # the same toy stored in float32 (as the engine's KL is): relative rounding <= 2^-24
    p32, _ = fit_exponent(EPS, r.astype(np.float32))
    assert abs(p32[0] - power) <= slope_bound(EPS, 2.0**-24 + 4 * np.finfo(np.float64).eps)


def test_fit_window_drops_floor_and_saturation():
    kl = 2.0 * EPS**2
    noisy = np.where(EPS < 1e-3, 1e-7, kl)  # a noise plateau below the floor
    sat = np.minimum(noisy, 0.5)  # saturation above hi
    p, n = fit_exponent(EPS, sat, lo=1e-6, hi=0.5)
    # only the grid points with 1e-6 < 2 eps^2 < 0.5 and eps >= 1e-3 are used
    keep = (EPS >= 1e-3) & (kl < 0.5) & (kl > 1e-6)
    assert n[0] == keep.sum()
    assert abs(p[0] - 2.0) <= slope_bound(EPS[keep], 4 * np.finfo(np.float64).eps)
    # per-curve floors, and NaN where too few points remain
    two = np.stack([kl, kl])
    p2, n2 = fit_exponent(EPS, two, lo=np.array([0.0, 1.0]), hi=np.inf, min_points=3)
    assert np.isfinite(p2[0]) and np.isnan(p2[1]) and n2[1] == 1
    with pytest.raises(ConfigError):
        fit_exponent(EPS[:-1], kl)


def test_eps_at_threshold_and_local_slopes_are_exact_for_a_power_law():
    kl = (EPS**2)[None]
    # log-log interpolation of a power law is exact: KL = 1e-2 at eps = 0.1
    assert eps_at(EPS, kl, 1e-2)[0] == pytest.approx(0.1, rel=1e-12)
    assert np.isnan(eps_at(EPS, kl, 10.0)[0])
    assert np.allclose(local_slopes(EPS, kl), 2.0, rtol=0, atol=1e-12)


@pytest.mark.parametrize("p", [2.0, 3.0, 5.0])
def test_lp_exponent_recovers_the_norm_of_a_toy_response(p):
    # effect = || (c_a / e_a, c_b / e_b) ||_p with unequal pure thresholds and a non-orthogonal
    # pair: the mixture unit(a + b) at length L has c_a = c_b = L / |a + b|, so it reaches the
    # threshold at L = |a + b| / ||(1 / e_a, 1 / e_b)||_p
    e_a, e_b = np.array([1.0, 0.3, 2.0]), np.array([1.0, 0.5, 0.7])
    cos = np.array([0.0, 0.2, -0.3])
    s = np.sqrt(2 + 2 * cos)
    e_mix = s / (e_a**-p + e_b**-p) ** (1 / p)
    q = lp_inverse_exponent(e_a, e_b, e_mix, cos)
    # bisection to 2^-200 of a range of 24 in log q: float64 rounding of the inputs dominates
    assert np.allclose(q, 1 / p, rtol=1e-12, atol=0)


def test_quadratic_form_gives_lp_exponent_two():
    # KL = 1/2 eps^2 u^T G u with a, b eigenvectors of G (an exactly quadratic response):
    # the thresholds eps_u = sqrt(2 T / u^T G u) give q = 1/2 (p = 2) to float rounding
    g_a, g_b, T = 3.0, 0.4, 0.1
    e_a, e_b = np.sqrt(2 * T / g_a), np.sqrt(2 * T / g_b)
    e_mix = np.sqrt(2 * T / ((g_a + g_b) / 2))  # u = (a + b) / sqrt 2, a . b = 0
    q = lp_inverse_exponent(np.array([e_a]), np.array([e_b]), np.array([e_mix]), np.zeros(1))
    assert abs(q[0] - 0.5) < 1e-12
    # the mixture at its bound is p = infinity (q = 0); a missing threshold is NaN
    q = lp_inverse_exponent(np.ones(2), np.ones(2), np.array([np.sqrt(2), np.nan]), np.zeros(2))
    assert q[0] == 0.0 and np.isnan(q[1])


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"n_points": 1}, "n_points"),
        ({"eps_min": 0.1, "eps_max": 0.01}, "eps_max"),
        ({"noise_eps": (1.0,)}, "noise_eps"),
        ({"families": ("nope",)}, "families"),
        ({"kl_max": 0.0}, "kl_max"),
        ({"contrast": "person_adjective:sentiment"}, "contrasts"),
        ({"pairs": ("sensitive",)}, "pairs"),
        ({"lp_thresholds": (0.0,)}, "lp_thresholds"),
    ],
)
def test_config_refuses_bad_values(bad, field):
    with pytest.raises(ConfigError) as e:
        ErrorCorrectionConfig(**bad)
    assert e.value.field == field


@pytest.fixture(scope="module")
def sae_dir(tiny_track, tmp_path_factory):
    from challenge.sae import SAEConfig, save_sae, train_sae

    sae, _ = train_sae(
        tiny_track.acts("public"), SAEConfig(n_latents=128, k=8, steps=40, batch=64), progress=False
    )
    return save_sae(sae, tmp_path_factory.mktemp("ec") / "sae")


def small_cfg(sae_dir, **kw):
    return ErrorCorrectionConfig(
        **{
            "n_points": 3,
            "eps_min": 1e-3,
            "eps_max": 1.0,
            "n_eps": 7,
            "noise_eps": (0.0, 1e-7),
            "pairs": ("random", "sae_active", "contrastive"),
            "lp_thresholds": (0.1,),
            "min_fit_points": 3,
            "sae": str(sae_dir),
            "opt_steps": 1,
            "n_boot": 50,
            # sensitive (local Fisher power iteration) has its own, smaller test below
            "families": tuple(f for f in FAMILIES if f != "sensitive"),
        }
        | kw
    )


def test_run_on_tiny_track(tiny_track, smollm, sae_dir, tmp_path):
    cfg = small_cfg(sae_dir)
    res = run(cfg, make_env(tiny_track, smollm), out=tmp_path, draw=False)
    doc = json.loads(res.path.read_text())
    TypeAdapter(ErrorCorrectionResult).validate_python(doc | {"arrays": {}})
    fams = doc["detail"]["families"]
    pairs = [f for f in cfg.pairs if f in cfg.families]
    assert list(fams) == [*cfg.families, *(f + s for f in pairs for s in ("_b", "_mix"))]
    arr = np.load(tmp_path / "error_correction.npz")
    assert arr["eps"].shape == (cfg.n_eps,)
    for f in fams:
        kl, p = arr[f"{f}_kl"], arr[f"{f}_p"]
        assert kl.shape == (cfg.n_points, cfg.n_eps) and (kl >= 0).all()
        assert np.isfinite(p).all(), f  # every curve crosses the window on this grid
        # the reported median is the median of the saved per-point exponents
        assert fams[f]["p"][0] == float(np.median(p))
        lo, hi = fams[f]["p"][1:]
        assert lo <= fams[f]["p"][0] <= hi
    # the reference family's paired difference with itself is exactly 0
    assert fams["random"]["diff_vs_random"] == [0.0, 0.0, 0.0]
    # the floor sits above the noise probes' KL, which is tiny against the largest KL
    assert (arr["floor_kl"] >= cfg.floor_factor * arr["noise_kl"]).all()
    assert np.median(arr["noise_kl"]) < 1e-4 * np.median(arr["random_kl"][:, -1])
    # the pairs: cos(a, b) as saved, 1/p >= 0, the headline read from the detail
    assert list(doc["detail"]["pairs"]) == ["random", *(f for f in pairs if f != "random")]
    for f in pairs:
        d = doc["detail"]["pairs"][f]
        q = arr[f"{f}_pair_q"]
        assert q.shape == (cfg.n_points,) and (q[np.isfinite(q)] >= 0).all()
        assert d["cos_median"] == float(np.median(arr[f"{f}_pair_cos"]))
        assert res.headline.lp_inverse_exponent[f] == d["q"]
        assert d["p_lp"][0] is None or d["p_lp"][0] == pytest.approx(1 / d["q"][0], rel=1e-15)
    # the contrastive pair is one shared pair of directions: the same cosine at every point
    assert np.ptp(arr["contrastive_pair_cos"]) == 0
    assert res.headline.families["sae_active"].p == fams["sae_active"]["p"][0]


def test_run_is_deterministic_and_draws(tiny_track, smollm, sae_dir, tmp_path):
    cfg = small_cfg(sae_dir, families=("random", "pca", "sae_active"), pairs=("sae_active",))
    a = run(cfg, make_env(tiny_track, smollm), out=tmp_path / "a", draw=True)
    b = run(cfg, make_env(tiny_track, smollm), out=tmp_path / "b", draw=False)
    assert (tmp_path / "a" / "error_correction.png").exists()
    # a pair family brings its second direction and the mixture along
    assert list(a.detail["families"]) == [
        "random",
        "pca",
        "sae_active",
        "sae_active_b",
        "sae_active_mix",
    ]
    A, B = (np.load(tmp_path / d / "error_correction.npz") for d in "ab")
    assert set(A.files) == set(B.files)
    for k in A.files:
        assert np.array_equal(A[k], B[k], equal_nan=A[k].dtype.kind == "f"), k
    assert a.headline == b.headline


def test_sensitive_family(tiny_track, smollm, sae_dir, tmp_path):
    cfg = small_cfg(sae_dir, n_points=2, families=("sensitive",))
    res = run(cfg, make_env(tiny_track, smollm), out=tmp_path, draw=False)
    arr = np.load(tmp_path / "error_correction.npz")
    assert np.isfinite(arr["sensitive_p"]).all()
    # the top Fisher direction moves the output more at every length than a random one
    assert (arr["sensitive_kl"][:, 1:] > arr["random_kl"][:, 1:]).all()
    assert res.detail["directions"]["sensitive_sqrt_eigenvalue_median"] > 0
