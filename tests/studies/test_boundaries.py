"""Study 4 (MLP gate boundaries) on the tiny track."""

import json
from dataclasses import asdict

import numpy as np
import torch

from challenge.paths import linear_path
from challenge.schemas import validate
from challenge.studies import make_env
from challenge.studies.boundaries import BoundariesConfig, aligned_profile, flip_counts, run


def test_zero_length_path_crosses_nothing_real_path_does(tiny_track, smollm):
    eng = tiny_track.engine(smollm, progress=False)
    toks, acts = tiny_track.tokens("context")[:2], tiny_track.acts("context")[:3]
    still = acts[:2, None, :].expand(2, 5, -1).contiguous()
    c0 = flip_counts(eng, toks, still)
    assert c0["flips"].shape == (2, 4, smollm.cfg.n_layers - 1)
    assert (c0["flips"] == 0).all()
    c1 = flip_counts(eng, toks, linear_path(acts[:2], acts[1:3], 5))
    assert (c1["flips"].sum((1, 2)) > 0).all()


def test_aligned_profile():
    counts = np.array([[1.0, 1.0, 4.0, 1.0, 1.0]])  # mean 1.6; the rise into step 3 is index 2
    offs, prof = aligned_profile(counts, np.array([3]), 1)
    assert offs.tolist() == [-1, 0, 1]
    assert np.allclose(prof[0], [1 / 1.6, 4 / 1.6, 1 / 1.6])
    _, edge = aligned_profile(counts, np.array([1]), 1)
    assert np.isnan(edge[0, 0])


def test_run(tiny_track, smollm, tmp_path):
    cfg = BoundariesConfig(n_paths=3, n_steps=7, align=2)
    res = run(cfg, make_env(tiny_track, smollm), out=tmp_path)
    validate(json.loads(res.path.read_text()), "boundaries_result")
    assert res.path == tmp_path / "boundaries.json"
    for kind in ("real", "random"):
        k = res.detail["kinds"][kind]
        assert (np.load(tmp_path / "boundaries.npz")[f"{kind}_flips_total"].sum(1) > 0).all()
        assert k["corr_pooled"]["dkl"]["n"] == 3 * 6
        # the headline is read from the detail
        h = res.headline.kinds[kind]
        assert asdict(h.corr_pooled_dkl) == k["corr_pooled"]["dkl"]
        assert h.ratio_at_ms_kl == k["bunching_at_ms_kl"]["ratio_at_max_slope"]["median"]
        assert h.busiest_within_window == k["bunching_at_ms_kl"]["busiest_within_window"]
        assert h.within_path_spearman_dkl == k["corr_within_path_spearman"]["dkl"]["median"]
    arr = np.load(tmp_path / "boundaries.npz")
    assert arr["real_flips_total"].shape == (3, 6)
    assert torch.as_tensor(arr["real_flips_layer_sum"]).shape == (3, smollm.cfg.n_layers - 1)
