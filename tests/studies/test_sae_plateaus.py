"""Study 5 (SAEs and plateaus) on the tiny track, with a small SAE trained inline."""

import json

import numpy as np
import pytest

from challenge.schemas import validate
from challenge.studies import make_env
from challenge.studies.sae_plateaus import SAEPlateausConfig, edge_distance, run


def test_edge_distance_interpolates_and_censors():
    lengths = np.array([0.0, 1.0, 2.0, 3.0])
    kl = np.array([[0.0, 0.05, 0.15, 0.3], [0.0, 0.01, 0.02, 0.03], [0.2, 0.3, 0.4, 0.5]])
    r, cens = edge_distance(kl, lengths, 0.1)
    assert r[0] == pytest.approx(1.5)
    assert r[1] == 3.0 and cens.tolist() == [False, True, False]
    assert r[2] == 0.0


def test_run_with_inline_sae(tiny_track, smollm, tmp_path):
    from challenge.sae import SAEConfig, save_sae, train_sae

    sae, _ = train_sae(
        tiny_track.acts("public"), SAEConfig(n_latents=128, k=8, steps=40, batch=64), progress=False
    )
    sae_dir = save_sae(sae, tmp_path / "sae")
    cfg = SAEPlateausConfig(
        sae=str(sae_dir),
        e2e_sae=str(sae_dir),  # the end-to-end slot takes any SAELens-format directory
        n_recon=3,
        recon_steps=5,
        n_paths=2,
        path_steps=7,
        n_points=2,
        n_dirs=2,
        ray_steps=6,
        n_p3=2,
    )
    res = run(cfg, make_env(tiny_track, smollm), out=tmp_path)
    validate(json.loads(res.path.read_text()), "sae_plateaus_result")
    doc = res.detail
    a = doc["A_reconstruction_step"]
    assert set(a) == {"sae", "e2e"}
    assert a["sae"]["recon_distance"]["median"] > 0
    # the same SAE in both slots gives the same answers
    assert a["sae"]["sae"]["kl_end"] == a["e2e"]["e2e"]["kl_end"]
    b = doc["B_plateau_consistency"]["sae"]
    assert 0.0 <= b["top1_agreement"] <= 1.0
    c = doc["C_centre_vs_edge"]
    for kind in ("real", "sae", "gaussian"):
        cen = c[kind]["centredness"]
        assert cen["n"] == 0 or 0.0 <= cen["median"] <= 1.0
    arr = np.load(tmp_path / "sae_plateaus.npz")
    assert arr["C_real_edge"].shape == (2, 2, 2)
    assert (arr["C_real_edge"] <= c["max_length"] + 1e-4).all()
    # the headline is read from the detail
    h = res.headline
    assert h.kl_end_ratio_to_controls["sae"] == a["sae"]["kl_end_ratio_to_controls"]
    assert set(h.top1_agreement_near_boundary) == {"sae", "e2e"}
    assert h.top1_agreement_on_plateau["sae"] == b["top1_agreement_on_plateau"]
    assert set(h.centredness_median) == {"real", "sae", "e2e", "gaussian"}
    assert h.centredness_median["real"] == c["real"]["centredness"]["median"]
    assert h.anchoring_median == c["anchoring"]["anchoring_all"]["median"]
    # C, paired: the same SAE in both slots gives the same shift toward the chord's centre
    cm = h.centredness_minus_real
    assert set(cm) == {"sae", "e2e"} and cm["sae"] == cm["e2e"]
    assert cm["sae"].n == 0 or -1.0 <= cm["sae"].value <= 1.0
    # D: P3 along each slot's decoder directions and isotropic ones, from the same bases
    p3 = h.p3_length_to_kl_threshold
    assert set(p3) == {"isotropic", "sae:active", "sae:inactive_alive", "e2e:active",
                       "e2e:inactive_alive"}  # fmt: skip
    assert p3["sae:active"] == p3["e2e:active"]
    assert np.array_equal(arr["D_sae:active_kl"], arr["D_e2e:active_kl"])
    assert arr["D_isotropic_kl"].shape == (2, len(arr["D_lengths"]))
