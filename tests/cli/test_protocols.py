"""plateau protocol {p1,p2,p3} on the tiny track: JSON with headline, provenance and config,
the arrays and the plot; the sizes are each protocol's own config fields."""

import json

import numpy as np
import pytest

from challenge.sae import SAEConfig, save_sae, train_sae

PNG = b"\x89PNG\r\n\x1a\n"


def _written(tmp_path, name):
    doc = json.loads((tmp_path / f"{name}.json").read_text())
    assert (tmp_path / f"{name}.png").read_bytes()[:8] == PNG
    return doc, dict(np.load(tmp_path / f"{name}.npz"))


def test_p1(plateau, tiny_track_dir, tmp_path):
    out = plateau(
        "protocol", "p1", "--track", tiny_track_dir, "--n-curves", 4, "--n-steps", 12,
        "--scheme", "absolute", "--out", tmp_path,
    )  # fmt: skip
    doc, arrays = _written(tmp_path, "smollm2-135m-l1-tiny_p1_absolute_scale_free")
    assert f"wrote {tmp_path}" in out and '"plateau_length"' in out
    assert doc["kind"] == "p1" and doc["config"]["n_curves"] == 4 and doc["config"]["n_steps"] == 12
    assert set(doc["headline"]) == {"ms_l2", "ms_kl", "plateau_length", "nl_l2", "ar_l2"}
    assert doc["provenance"]["write_hook"] == "blocks.1.hook_resid_pre"
    assert doc["provenance"]["model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert doc["detail"]["resolved"]["units"] == "scale_free"
    assert doc["track"]["id"] == "smollm2-135m-l1-tiny"
    assert arrays["real_l2"].shape == (4, 13)  # absolute scheme: t = 0..n_steps


def test_p2(plateau, tiny_track_dir, tmp_path):
    plateau("protocol", "p2", "--track", tiny_track_dir, "--n-pairs", 3, "--n-steps", 6,
            "--out", tmp_path)  # fmt: skip
    doc, arrays = _written(tmp_path, "smollm2-135m-l1-tiny_p2")
    assert doc["config"]["n_pairs"] == 3 and set(doc["headline"]) == {"real", "random"}
    assert arrays["real_l2"].shape == (3, 6)


def test_p3_with_an_sae(plateau, tiny_track, tiny_track_dir, tmp_path):
    sae, _ = train_sae(
        tiny_track.acts("public"), SAEConfig(n_latents=64, k=4, steps=10, batch=64), progress=False
    )
    sae_dir = save_sae(sae, tmp_path / "sae")
    plateau("protocol", "p3", "--track", tiny_track_dir, "--n-base", 3,
            "--directions", "isotropic", "--sae", sae_dir, "--out", tmp_path)  # fmt: skip
    doc, arrays = _written(tmp_path, "smollm2-135m-l1-tiny_p3_scale_free")
    assert doc["config"]["n_base"] == 3
    kinds = set(doc["headline"]["length_to_kl_threshold"])
    assert {"isotropic", "sae_active", "sae_error"} <= kinds
    assert arrays["sae_active_kl"].shape[0] == 3


def test_unknown_track_is_a_clear_error(plateau, capsys):
    with pytest.raises(SystemExit) as e:
        plateau("protocol", "p1", "--track", "nope")
    assert e.value.code == 2
    assert "unknown track 'nope'" in capsys.readouterr().err


def test_a_bad_config_value_is_a_clear_error(plateau, tiny_track_dir, capsys):
    with pytest.raises(SystemExit) as e:
        plateau("protocol", "p2", "--track", tiny_track_dir, "--n-pairs", 0)
    assert e.value.code == 2
    assert "n_pairs" in capsys.readouterr().err
