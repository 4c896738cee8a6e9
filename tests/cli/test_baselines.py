"""train-sae, find-features and diagnose-submissions on the tiny track."""

import pytest

TINY = "smollm2-135m-l1-tiny"


def test_train_sae(plateau, printed, read_json, tiny_track_dir, tmp_path):
    out = plateau(
        "train-sae", tiny_track_dir, "--n-latents", 64, "--k", 4, "--steps", 10, "--batch", 64,
        "--positions", "last", "--results", tmp_path / "runs", "--out", tmp_path / "sae",
    )  # fmt: skip
    headline, path = printed(out)
    assert path == tmp_path / "runs" / f"{TINY}_topk-64-k4-last-10-s0.json"
    doc = read_json(path)
    assert doc["headline"] == headline and set(headline) == {"public", "heldout", "context"}
    for split in headline.values():  # 10 steps: held-out variance explained may still be < 0
        assert -1 < split["variance_explained"] <= 1 and 0 < split["l0"] <= 4
    assert doc["detail"]["sae"]["n_latents"] == 64 and doc["config"]["sae"]["steps"] == 10
    assert (tmp_path / "sae" / "cfg.json").exists()


def test_find_features(plateau, printed, read_json, tiny_track_dir, tiny_sae_dir, tmp_path):
    out = plateau(
        "find-features", tiny_track_dir, "--sae", tiny_sae_dir, "--n-base", 3, "--n-jac", 2,
        "--k", 2, "--oversample", 1, "--iters", 1, "--local-iters", 1, "--opt-steps", 1,
        "--opt-restarts", 1, "--metrics", "fisher", "--objectives", "kl", "--n-random", 8,
        "--no-progress", "--out", tmp_path, "--plot-to", tmp_path / "extra.png",
    )  # fmt: skip
    headline, path = printed(out)
    name = f"{TINY}_feature_finding"
    assert path == tmp_path / f"{name}.json"
    doc = read_json(path)
    assert doc["kind"] == "feature_finding" and doc["headline"] == headline
    assert doc["track"]["path"] == str(tiny_track_dir) and doc["config"]["n_base"] == 3
    assert headline["max_cos_median"]  # the SAE was used
    for f in (f"{name}.md", f"{name}.png", f"{name}.npz", "extra.png"):
        assert (tmp_path / f).exists(), f


@pytest.fixture(scope="module")
def submissions(smollm, tiny_track, tmp_path_factory):
    from baselines.generators import Gaussian, HeldoutReal
    from challenge.submission import generate

    root = tmp_path_factory.mktemp("subs")
    for g in (Gaussian(), HeldoutReal()):
        generate(g, tiny_track, smollm, out_root=root)
    return root / TINY


def test_diagnose_submissions(plateau, printed, read_json, tiny_track_dir, submissions, tmp_path):
    out = plateau(
        "diagnose-submissions", tiny_track_dir, "--submissions", submissions, "--out", tmp_path
    )
    headline, path = printed(out)
    assert path == tmp_path / f"{TINY}_placement.json"
    doc = read_json(path)
    assert doc["headline"] == headline and set(headline) == {"gaussian", "heldout_real"}
    assert headline["heldout_real"]["in_token_cluster"] > headline["gaussian"]["in_token_cluster"]
    assert "_reference" in doc["detail"]["placement"]


def test_train_sae_e2e(plateau, printed, read_json, tiny_track_dir, tmp_path):
    from challenge.sae import load_sae

    out = plateau(
        "train-sae", tiny_track_dir, "--kind", "e2e", "--n-latents", 32, "--k", 4, "--steps", 3,
        "--batch", 8, "--n-train", 16, "--eval-rows", 8, "--local-steps", 20,
        "--local-ks", 2,
        "--results", tmp_path / "runs", "--out", tmp_path / "sae",
    )  # fmt: skip
    headline, path = printed(out)
    assert path == tmp_path / "runs" / f"{TINY}_e2e-32-k4-last-3-b8-n16-ft20-s0.json"
    doc = read_json(path)
    assert doc["kind"] == "track_e2e_sae" and doc["headline"] == headline
    assert set(headline) == {"e2e", "local", "local_k2"}  # local SAEs at matched L0 and at k=2
    for sae in headline.values():
        assert set(sae) == {"heldout", "context"}
        for ev in sae.values():
            assert 0 < ev["l0"] <= 4 and ev["ce_increase"] >= 0
            assert ev["ce_increase_lo"] <= ev["ce_increase"] <= ev["ce_increase_hi"]
    assert headline["local_k2"]["heldout"]["l0"] <= 2
    assert doc["config"]["e2e"]["steps"] == 3 and doc["detail"]["train"]["n_train"] == 16
    assert doc["detail"]["saes"]["local"]["config"]["k"] == 4
    sae = load_sae(tmp_path / "sae")
    assert sae.kind == "topk" and sae.k == 4 and sae.meta["plateau"]["objective"] == "e2e"


def test_train_sae_refuses_flags_of_the_other_kind(plateau, tiny_track_dir, capsys):
    with pytest.raises(SystemExit):
        plateau("train-sae", tiny_track_dir, "--ds-coef", 0.5)
    assert "ds_coef" in capsys.readouterr().err
