"""Study 6 (do SAEs collapse plateaus?) on the tiny track with a small SAE trained inline."""

import json

import numpy as np
import pytest

from challenge import bootstrap
from challenge.errors import ConfigError
from challenge.schemas import validate
from challenge.studies import make_env
from challenge.studies.sae_collapse import Interval, SAECollapseConfig, run


def test_cluster_bootstrap_resamples_whole_clusters():
    groups = np.array([0, 0, 1, 1, 2, 2])
    x = np.array([1.0, 1.0, 5.0, 5.0, 9.0, 9.0])
    iv = Interval.of(bootstrap.bootstrap(np.mean, x, groups=groups, n_boot=200, seed=0))
    assert iv.value == 5.0 and iv.n == 6
    # every resample is a mean of three cluster means drawn from {1, 5, 9}
    assert 1.0 <= iv.lo <= iv.value <= iv.hi <= 9.0
    empty = Interval.of(bootstrap.bootstrap(np.mean, np.array([]), groups=np.array([])))
    assert empty.value is None and empty.n == 0


def test_run_with_the_same_sae_in_both_slots(tiny_track, smollm, tmp_path):
    from challenge.sae import SAEConfig, save_sae, train_sae

    sae, _ = train_sae(
        tiny_track.acts("public"), SAEConfig(n_latents=128, k=8, steps=40, batch=64), progress=False
    )
    d = save_sae(sae, tmp_path / "sae")
    cfg = SAECollapseConfig(
        e2e_sae=str(d), sae=str(d), n_paths=4, path_steps=5, n_contexts=6, n_near=1, n_far=1,
        pair_steps=3, n_boot=50,
    )  # fmt: skip
    res = run(cfg, make_env(tiny_track, smollm), out=tmp_path)
    validate(json.loads(res.path.read_text()), "sae_collapse_result")
    arr = np.load(tmp_path / "sae_collapse.npz")
    for src in ("path", "real"):
        # the same SAE in both slots: identical ratios, a paired difference of exactly 0
        assert np.array_equal(arr[f"{src}_ratio_e2e"], arr[f"{src}_ratio_local"], equal_nan=True)
        diff = res.headline.e2e_minus_local_within[src]
        assert diff.n == 0 or diff.value == 0.0
        n = res.detail[src]["n_pairs"]
        assert n["within"] + n["across"] == len(arr[f"{src}_distance"]) > 0
        assert (arr[f"{src}_distance"] > 0).all()
    # path pairs: (x_0, x_s) for s = 1..S-1 of each path, within before the first crossing
    assert len(arr["path_distance"]) <= 4 * (5 - 1)
    # real pairs: 6 contexts x 2 partners, less those whose path leaves and re-enters
    assert len(arr["real_distance"]) + res.detail["real"]["n_neither"] == 12
    assert (tmp_path / "sae_collapse.png").exists()


def test_config_errors():
    with pytest.raises(ConfigError, match="n_near"):
        SAECollapseConfig(n_near=0, n_far=0)
    with pytest.raises(ConfigError, match="path_steps"):
        SAECollapseConfig(path_steps=2)
