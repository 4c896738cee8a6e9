"""Protocols on the tiny real track: units, paths, features, and the runners' outputs."""

import numpy as np
import pytest
import torch

from challenge import protocols as P
from challenge.errors import ConfigError


def test_units_resolution(tiny_track):
    gpt2 = P.resolve_p1(P.P1Config(units="gpt2"), tiny_track.units)
    assert (gpt2["abs_step"], gpt2["plateau_distance"], gpt2["slope_threshold"]) == (
        0.5,
        20.0,
        0.02,
    )
    sf = P.resolve_p1(P.P1Config(units="scale_free"), tiny_track.units)
    assert sf["abs_step"] == pytest.approx(tiny_track.units["write_distance_median"] / 100)
    assert sf["plateau_distance"] == pytest.approx(0.2 * tiny_track.units["read_distance_median"])
    with pytest.raises(ConfigError, match="units"):
        P.resolve_p1(P.P1Config(units="furlongs"), tiny_track.units)
    grid = P.p3_lengths(P.P3Config(units="gpt2"), tiny_track.units)
    assert grid[0] == 0 and grid[1] == 1 and grid[-1] == 91 and len(grid) == 47


def test_p1_relative_curves_and_features(smollm, tiny_track):
    eng = tiny_track.engine(smollm, progress=False)
    cfg = P.P1Config(n_curves=6, n_steps=20)
    doc, arrays = P.run_p1(tiny_track, eng, cfg)
    assert arrays["real_l2"].shape == (6, 20) and arrays["random_kl"].shape == (6, 20)
    assert np.allclose(arrays["real_l2"][:, 0], 0)
    assert (arrays["real_l2"][:, -1] > 0).all()
    for k in ("ms_l2", "ms_kl", "plateau_length", "nl_l2", "ar_l2"):
        assert 0 <= doc["features"][k]["ks"] <= 1
        assert arrays[f"real_feat_{k}"].shape == (6,)


def test_p1_absolute_scheme_steps_are_fixed_length(tiny_track):
    r = P.resolve_p1(P.P1Config(scheme="absolute"), tiny_track.units)
    a, t = tiny_track.acts("context")[:3], tiny_track.acts("heldout")[:3]
    paths = P.p1_paths(a, t, P.P1Config(scheme="absolute", n_steps=10), r)
    step = (paths[:, 1] - paths[:, 0]).norm(dim=-1)
    assert torch.allclose(step, torch.full_like(step, r["abs_step"]), rtol=1e-4)


def test_p2_and_p3_runners(smollm, tiny_track):
    eng = tiny_track.engine(smollm, progress=False)
    doc, arrays = P.run_p2(tiny_track, eng, P.P2Config(n_pairs=5, n_steps=11))
    assert (
        arrays["real_sharpness_l2"].shape == (5,)
        and (arrays["real_sharpness_l2"] >= 1 - 1e-6).all()
    )
    assert "random" in doc["sharpness"]
    doc, arrays = P.run_p3(
        tiny_track, eng, P.P3Config(n_base=4, directions=("isotropic", "cov_mixture"))
    )
    assert set(doc["directions"]) == {"isotropic", "cov_mixture"}
    kl = arrays["isotropic_kl"]
    assert kl.shape == (4, 47) and np.allclose(kl[:, 0], 0, atol=1e-6)
    assert np.median(kl[:, -1]) > np.median(kl[:, 5])  # longer perturbations move the output more
