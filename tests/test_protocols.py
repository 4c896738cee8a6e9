"""Protocols on the tiny real track: configs, units, paths, features, typed results and files."""

import json

import numpy as np
import pytest
import torch

from challenge import protocols as P
from challenge.directions import ActivationStats, cov_random_mixture, isotropic
from challenge.errors import ConfigError
from challenge.results import load_result
from challenge.schemas import validate

U32 = float(np.finfo(np.float32).eps) / 2  # unit roundoff of float32
U64 = float(np.finfo(np.float64).eps) / 2


def gamma(n: int, u: float = U32) -> float:
    """Higham's gamma_n = n u / (1 - n u): the relative error bound of an n-term sum or dot."""
    return n * u / (1 - n * u)


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: P.P1Config(units="furlongs"), "units"),
        (lambda: P.P1Config(scheme="spiral"), "scheme"),
        (lambda: P.P1Config(n_curves=0), "n_curves"),
        (lambda: P.P1Config(n_steps=9), "n_steps"),  # NL fits 10 points
        (lambda: P.P1Config(scheme="absolute", n_steps=8), "n_steps"),
        (lambda: P.P1Config(abs_step=-0.5), "abs_step"),
        (lambda: P.P1Config(plateau_distance=float("nan")), "plateau_distance"),
        (lambda: P.P1Config(seed=1.5), "seed"),
        (lambda: P.P2Config(variant="zigzag"), "variant"),
        (lambda: P.P2Config(n_pairs=0), "n_pairs"),
        (lambda: P.P2Config(control="yes"), "control"),
        (lambda: P.P3Config(directions=("telepathy",)), "directions"),
        (lambda: P.P3Config(directions=()), "directions"),
        (lambda: P.P3Config(directions=("isotropic", "isotropic")), "directions"),
        (lambda: P.P3Config(kl_threshold=0.0), "kl_threshold"),
        (lambda: P.P3Config(n_base=0), "n_base"),
    ],
)
def test_configs_refuse_bad_values(make, field):
    with pytest.raises(ConfigError, match=f"field {field}"):
        make()


def test_shortest_p1_paths_are_accepted():
    assert P.P1Config(n_steps=10).n_steps == 10
    assert P.P1Config(scheme="absolute", n_steps=9).n_steps == 9  # t = 0..9: 10 points


def test_units_resolution(tiny_track):
    gpt2 = P.resolve_p1(P.P1Config(units="gpt2"), tiny_track.units)
    assert (gpt2["abs_step"], gpt2["plateau_distance"], gpt2["slope_threshold"]) == (
        0.5,
        20.0,
        0.02,
    )
    sf = P.resolve_p1(P.P1Config(units="scale_free"), tiny_track.units)
    # one computation on both sides: exact
    assert sf["abs_step"] == tiny_track.units["write_distance_median"] / 100
    assert sf["plateau_distance"] == 0.2 * tiny_track.units["read_distance_median"]
    grid = P.p3_lengths(P.P3Config(units="gpt2"), tiny_track.units)
    assert grid[0] == 0 and grid[1] == 1 and grid[-1] == 91 and len(grid) == 47


def test_p1_relative_curves_features_and_headline(smollm, tiny_track):
    eng = tiny_track.engine(smollm, progress=False)
    res = P.run_p1(tiny_track, eng, P.P1Config(n_curves=6, n_steps=20))
    assert isinstance(res, P.P1Result) and res.kind == "p1" and res.detail["n_curves"] == 6
    a = res.arrays
    assert a["real_l2"].shape == (6, 20) and a["random_kl"].shape == (6, 20)
    assert (a["real_l2"][:, 0] == 0).all()  # step 0 is the base itself: exactly 0
    assert (a["real_l2"][:, -1] > 0).all()
    for k in ("ms_l2", "ms_kl", "plateau_length", "nl_l2", "ar_l2"):
        feat = res.detail["features"][k]
        assert 0 <= feat["ks"] <= 1
        assert a[f"real_feat_{k}"].shape == (6,)
        head = getattr(res.headline, k)  # what the CLI prints: real mean, random mean, KS
        assert (head.real, head.random, head.ks) == (
            feat["ref"]["mean"],
            feat["other"]["mean"],
            feat["ks"],
        )
        assert head.real == float(np.asarray(a[f"real_feat_{k}"], np.float64).mean())
    assert res.track.id == tiny_track.spec.track_id and len(res.track.manifest_sha256) == 64


def test_p1_absolute_scheme_steps_are_fixed_length(tiny_track):
    r = P.resolve_p1(P.P1Config(scheme="absolute"), tiny_track.units)
    a, t = tiny_track.acts("context")[:3], tiny_track.acts("heldout")[:3]
    paths = P.p1_paths(a, t, P.P1Config(scheme="absolute", n_steps=10), r)
    assert torch.equal(paths[:, 0], a)  # a + 0 * unit is a, exactly
    step = (paths[:, 1] - paths[:, 0]).norm(dim=-1).double()
    # x_1 = fl(a + s unit), unit = fl(delta / fl(||delta||)): ||unit|| is 1 within gamma_d + u;
    # the addition rounds each coordinate by u |x_1| and the subtraction x_1 - a by u |x_1 - a|
    # (so by at most u (||a|| + s) in norm); the final norm adds gamma_d. In all:
    s, d = r["abs_step"], a.shape[1]
    bound = s * (2 * gamma(d) + 3 * U32) + U32 * (a.norm(dim=-1).double() + s)
    assert ((step - s).abs() <= bound).all()


def _sharpness_floor(curves: np.ndarray) -> np.ndarray:
    """Sharpness is max(diff(c / c[-1])) * (S - 1) >= 1 in exact arithmetic (the S - 1 diffs of
    a curve from 0 to 1 telescope to 1). In float64 the diffs of the normalised curve n
    (n[0] = 0 and n[-1] = c[-1] / c[-1] = 1 exactly) are rounded by u |diff| each and the product
    by u, so the computed value is >= 1 - u (sum |diff(n)| + 1)."""
    c = curves.astype(np.float64)
    tv = np.abs(np.diff(c / c[:, -1:], axis=1)).sum(axis=1)
    return 1 - U64 * (tv + 1)


def test_p2_and_p3_runners(smollm, tiny_track):
    eng = tiny_track.engine(smollm, progress=False)
    res = P.run_p2(tiny_track, eng, P.P2Config(n_pairs=5, n_steps=11))
    sharp = res.arrays["real_sharpness_l2"]
    assert sharp.shape == (5,) and (sharp >= _sharpness_floor(res.arrays["real_l2"])).all()
    assert res.headline.random is not None and "random" in res.detail["sharpness"]
    assert res.headline.real.sharpness_l2 == res.detail["sharpness"]["real"]["sharpness_l2"]
    res = P.run_p3(tiny_track, eng, P.P3Config(n_base=4, directions=("isotropic", "cov_mixture")))
    assert set(res.detail["directions"]) == {"isotropic", "cov_mixture"}
    kl = res.arrays["isotropic_kl"]
    assert kl.shape == (4, 47) and (kl[:, 0] == 0).all()  # length 0 is the base: exactly 0
    assert np.median(kl[:, -1]) > np.median(kl[:, 5])  # longer perturbations move the output more
    assert res.headline.length_to_kl_threshold == {
        k: v["length_to_kl_threshold"] for k, v in res.detail["directions"].items()
    }


def test_p3_direction_kinds_draw_from_the_published_seeds(tiny_track):
    """Kind i draws from seed + 1000 i (the ``p3.direction`` stream), as every published run."""
    pub = tiny_track.acts("public")
    stats = ActivationStats.fit(pub)
    dirs = P.p3_directions(("isotropic", "cov_mixture"), pub, stats, 5, seed=3)
    assert torch.equal(dirs["isotropic"], isotropic(5, pub.shape[1], 3))
    assert torch.equal(dirs["cov_mixture"], cov_random_mixture(stats, 5, 1003))


def test_run_protocol_writes_result_files_that_match_their_schema(smollm, tiny_track, tmp_path):
    cfgs = (
        P.P1Config(n_curves=3, n_steps=10),
        P.P2Config(n_pairs=2, n_steps=5, control=False),
        P.P3Config(n_base=2, directions=("isotropic",)),
    )
    for cfg in cfgs:
        res = P.run_protocol(tiny_track, smollm, cfg, out=tmp_path)
        name = P.default_name(tiny_track.spec.track_id, cfg)
        assert res.path == tmp_path / f"{name}.json"
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        doc, arrays = load_result(res.path)
        assert doc == json.loads(json.dumps(res.to_json()))
        validate(doc, f"{res.kind}_result")
        assert doc["provenance"]["model"] and doc["provenance"]["write_hook"]
        assert set(arrays) == set(res.arrays)
        for k, v in arrays.items():
            assert np.array_equal(v, res.arrays[k])
        if res.kind == "p2":
            assert doc["headline"]["random"] is None  # no control run
    assert set(doc["headline"]["length_to_kl_threshold"]) == {"isotropic"}
    with pytest.raises(ConfigError, match="field sae"):
        P.run_protocol(tiny_track, smollm, cfgs[0], sae="some/sae", out=tmp_path)


def test_feature_contrasts_have_paired_bootstrap_intervals():
    g = np.random.default_rng(0)
    a = g.normal(size=300)
    # curve i of both samples shares its context: a constant paired shift has no spread
    f = P.compare_features({"x": a}, {"x": a + 1.0}, n_boot=200)["x"]
    assert f["diff"] == pytest.approx(-1.0, abs=1e-12)
    assert f["diff_ci"] == pytest.approx([-1.0, -1.0], abs=1e-12)
    assert 0 <= f["ks_ci"][0] <= f["ks_ci"][1] <= 1
    # NaN curves (cut too short) are left out; the same seed gives the same intervals
    b = g.normal(0.5, size=300)
    b[:10] = np.nan
    one = P.compare_features({"x": a}, {"x": b}, seed=3)["x"]
    assert one == P.compare_features({"x": a}, {"x": b}, seed=3)["x"]
    assert one["other"]["n"] == 290 and one["diff_ci"][0] < one["diff"] < one["diff_ci"][1] < 0
