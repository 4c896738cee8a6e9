"""Study 3 (steering) on the tiny track."""

import json

import numpy as np
import torch

from challenge.schemas import validate
from challenge.studies import make_env
from challenge.studies.steering import KINDS, SteeringConfig, run, steering_vector


def test_steering_vector_is_difference_of_means():
    acts = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [0.0, 6.0]])
    cls = np.array(["a", "a", "b", "b"])
    # means (0+2)/2, (0+0)/2, (4+6)/2 and their differences are exact in float32
    assert torch.equal(steering_vector(acts, cls, "a", "b"), torch.tensor([-1.0, 5.0]))


def test_run_zero_coefficient_is_no_change(tiny_track, smollm, tmp_path):
    cfg = SteeringConfig(
        contrasts=("person_adjective:sentiment:negative:positive",),
        n_bases=4,
        n_steps=5,
    )
    res = run(cfg, make_env(tiny_track, smollm), out=tmp_path)
    validate(json.loads(res.path.read_text()), "steering_result")
    con = res.detail["contrasts"][0]
    arr = np.load(tmp_path / "steering.npz")
    assert arr["c0_coefs"][0] == 0.0
    # the study computes lengths = coefs * |v| as one float32 product of the same two numbers
    # (torch and NumPy both round the Python-float |v| to float32 first): exactly equal
    lengths = arr["c0_coefs"] * np.float32(con["steering_vector_norm"])
    assert lengths.dtype == np.float32 and np.array_equal(arr["c0_lengths"], lengths)
    for kind in KINDS:
        # step 0 is measured against itself: l2 = |read_0 - read_0| and KL from D = log p_0 -
        # log p_0 = 0 (one batched log_softmax, engine.distribution_divergences): exactly 0
        assert (arr[f"c0_{kind}_l2"][:, 0] == 0).all()
        assert (arr[f"c0_{kind}_kl"][:, 0] == 0).all()
        assert (arr[f"c0_{kind}_l2"][:, -1] > 0).all()  # and a real response further out
    # every direction was probed at the same lengths: the end points are equally far
    assert con["max_length"] > 0 and con["n_bases"] == 4
    # the headline is read from the detail
    h = res.headline.contrasts[cfg.contrasts[0]]
    assert list(h) == list(KINDS)
    for kind in KINDS:
        d = con["directions"][kind]
        assert h[kind].kl_end == d["kl_end"]["median"]
        assert h[kind].js_target_end == d["js_target_end"]["median"]
        assert h[kind].concentration == d["concentration"]["median"]
