"""Study 2 (regions through layers) on the tiny track."""

import json

import numpy as np
import pytest

from challenge.schemas import validate
from challenge.studies import make_env
from challenge.studies.layers import LayersConfig, crossings, run


def test_crossings_on_known_curves():
    S = 11
    line = np.linspace(0, 1, S)
    step = (np.arange(S) >= 5).astype(float)
    two = (np.arange(S) >= 3) * 0.5 + (np.arange(S) >= 8) * 0.5
    top1 = np.zeros((3, S), dtype=int)
    top1[1, 5:] = 7  # one top-1 change
    top1[2, 3:8], top1[2, 8:] = 4, 9  # two
    c = crossings({"l2": np.stack([line, step, two]), "top1": top1}, steep_factor=3.0)
    assert c["steep"].tolist() == [0, 1, 2]
    assert c["top1"].tolist() == [0, 1, 2]
    assert c["crossings"].tolist() == [0, 1, 2]  # the flagged steps coincide


def test_run_selected_layers(tiny_track, smollm, tmp_path):
    cfg = LayersConfig(
        n_pairs=3,
        n_steps=9,
        layers=(0, 12, 29),
        n_stats=64,
    )
    res = run(cfg, make_env(tiny_track, smollm), out=tmp_path)
    validate(json.loads(res.path.read_text()), "layers_result")
    doc = res.detail
    assert [r["layer"] for r in doc["per_layer"]] == [0, 12, 29]
    assert [doc["engines"][str(L)]["write_hook"] for L in (0, 12, 29)] == [
        f"blocks.{L}.hook_resid_pre" for L in (0, 12, 29)
    ]
    arr = np.load(tmp_path / "layers.npz")
    sh = arr["real_sharpness_l2"]  # [layers, pairs]
    assert sh.shape == (3, 3)
    # max of the normalised increments is at least their mean 1 / (S - 1): sharpness >= 1
    assert (sh >= 1 - 1e-6).all()
    assert (arr["random_sharpness_l2"] >= 1 - 1e-6).all()
    med = doc["per_layer"][1]["real"]["sharpness_l2"]["median"]
    assert med == pytest.approx(float(np.median(sh[1])))
    assert isinstance(doc["verdict"], str) and (tmp_path / "layers.png").exists()
    # the headline is read from the detail
    assert res.headline.verdict == doc["verdict"]
    assert list(res.headline.per_layer_real_median) == [0, 12, 29]
    assert res.headline.per_layer_real_median[12].sharpness_l2 == med
    assert (
        res.headline.per_layer_real_median[29].crossings
        == (doc["per_layer"][2]["real"]["crossings"]["median"])
    )
