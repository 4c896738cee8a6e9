"""P1 with the papers' own definitions: their paths, cuts and features, on the tiny track."""

import numpy as np
import pytest
import torch

from challenge import metrics as M
from challenge import protocols as P
from challenge.errors import ConfigError
from challenge.paths import published_path

U32 = 2.0**-24  # float32 unit roundoff


def test_relative_path_is_their_convex_combination():
    a, e = torch.randn(3, 8), torch.randn(3, 8)
    x, cut = published_path(a, e, n_points=100)
    assert x.shape == (3, 100, 8) and cut.tolist() == [100, 100, 100]
    assert torch.equal(x[:, 0], a) and torch.equal(x[:, -1], e)  # (1 - 0) a + 0 e, 0 a + 1 e
    t = np.linspace(0, 1, 100)[None, :, None]
    a64, e64 = a.double().numpy()[:, None], e.double().numpy()[:, None]
    want = a64 * (1 - t) + e64 * t
    # t rounded to float32 (u), two products and a sum: |err| <= 4 u (|a| + |e|)
    bound = 4 * U32 * (np.abs(a64) + np.abs(e64))
    assert (np.abs(x.double().numpy() - want) <= bound).all()


def test_absolute_path_spacing_no_clamp_and_target_step():
    a = torch.zeros(1, 2)
    e = torch.tensor([[3.0, 4.2]])  # ||e - a|| = 5.1614...: floor(5.16 / 0.5) = 10
    x, cut = published_path(a, e, n_points=100, step_size=0.5)
    assert cut.tolist() == [10]
    u = np.array([3.0, 4.2]) / np.hypot(3.0, 4.2)
    t = np.linspace(0, 100, 100)  # spacing 100 / 99, not 1
    want = u[None, :] * t[:, None] * 0.5
    assert np.abs(x[0].double().numpy() - want).max() <= 8 * U32 * 50  # |x| <= 50
    assert np.linalg.norm(x[0, -1].double().numpy()) > 49  # walks on past e (no clamp)
    with pytest.raises(ConfigError, match="field end"):
        published_path(a, a, n_points=100, step_size=0.5)


def test_config_needs_eleven_points_for_their_nl():
    with pytest.raises(ConfigError, match="field n_steps"):
        P.P1Config(definitions="published", n_steps=10)
    with pytest.raises(ConfigError, match="field definitions"):
        P.P1Config(definitions="papers")


def test_scale_free_rescales_the_l2_slope_threshold_not_the_kl_one(tiny_track):
    r = P.resolve_p1(P.P1Config(definitions="published"), tiny_track.units)
    assert r["slope_threshold"] == 0.02 * r["plateau_distance"] / 20.0
    assert r["slope_threshold"] != 0.02  # the tiny track's read-out is not GPT-2's
    assert r["slope_threshold_kl"] == 0.02  # nats: the same unit on every model
    g = P.resolve_p1(P.P1Config(definitions="published", units="gpt2"), tiny_track.units)
    assert (g["slope_threshold"], g["plateau_distance"], g["abs_step"]) == (0.02, 20.0, 0.5)
    assert g["slope_threshold_kl"] == 0.02


@pytest.mark.parametrize(
    ("scheme", "units"), [("absolute", "gpt2"), ("relative", "gpt2"), ("relative", "scale_free")]
)
def test_published_run_features_are_their_functions_of_the_curves(
    tiny_track, smollm, scheme, units
):
    cfg = P.P1Config(scheme=scheme, units=units, definitions="published", n_curves=5, n_steps=30)
    eng = tiny_track.engine(smollm, progress=False)
    res = P.run_p1(tiny_track, eng, cfg)
    r = res.detail["resolved"]
    th_l2, d_ap = r["slope_threshold"], r["plateau_distance"]
    A = res.arrays
    for g in ("real", "random"):
        cut, ap_cut = A[f"{g}_target_step"], A[f"{g}_ap_target_step"]
        if scheme == "relative":
            assert (cut == 30).all() and (ap_cut == 30).all()
        assert (A[f"{g}_l2"][:, 0] == 0).all() and (A[f"{g}_ap_l2"][:, 0] == 0).all()
        for i in range(5):
            c = min(int(cut[i]), 30)
            if c < 7:
                assert np.isnan(A[f"{g}_feat_ms_l2"][i])
                continue
            l2, kl = A[f"{g}_l2"][i, :c], A[f"{g}_kl"][i, :c]
            assert A[f"{g}_feat_ms_l2"][i] == M.max_slope_step_published(l2, th_l2)[0]
            # the KL threshold is 0.02 nats in every unit system
            assert A[f"{g}_feat_ms_kl"][i] == M.max_slope_step_published(kl, 0.02)[0]
            assert A[f"{g}_feat_ar_l2"][i] == M.area_ratio_step_published(l2)[0]
        ap = M.plateau_length_published(A[f"{g}_ap_l2"], ap_cut, threshold=d_ap)
        assert np.array_equal(A[f"{g}_feat_plateau_length"], ap)
        nl = M.nonlinearity_step_published(A[f"{g}_l2"])
        assert np.array_equal(A[f"{g}_feat_nl_l2"], nl)
    assert res.detail["resolved"]["definitions"] == "published"
    assert set(res.detail["n_short"]) == {"real", "random"}
    assert P.default_name("t", cfg) == f"t_p1_{scheme}_{units}_published"
