"""SAE: training on real track activations, SAELens on-disk format, evaluation, P3 direction sets."""

import json

import pytest
import torch
from safetensors.torch import save_file

from challenge.errors import ConfigError
from challenge.sae import (
    SAE,
    SAEConfig,
    evaluate_sae,
    hub_files,
    load_sae,
    sae_direction_sets,
    save_sae,
    train_sae,
)

CFG = SAEConfig(n_latents=512, k=16, steps=300, batch=128, lr=2e-3, positions="last")


@pytest.fixture(scope="module")
def track(smollm, tmp_path_factory):
    """The tiny registered track (256 / 128 / 64 rows), built for this module."""
    from challenge.track import build_track, get_spec, load_track

    d = tmp_path_factory.mktemp("sae_track") / "tiny"
    return load_track(build_track(get_spec("smollm2-135m-l1-tiny"), d, lm=smollm))


@pytest.fixture(scope="module")
def trained(track):
    return train_sae(track.acts("public"), CFG, progress=False)


def test_training_reduces_mse_and_explains_variance(trained, track):
    sae, stats = trained
    hist = stats["history"]
    assert hist[-1]["nmse"] < 0.25 * hist[0]["nmse"]
    ev = evaluate_sae(sae, track.acts("public"))
    # stated target: >= 0.9 of the variance of the (training) public split at L0 = k = 16
    assert ev["variance_explained"] >= 0.9
    assert 15.0 <= ev["l0"] <= 16.0  # TopK keeps k, minus the rare non-positive top values
    assert 0.0 <= ev["dead_fraction"] <= 1.0 and ev["n"] == len(track.acts("public"))
    assert stats["train_eval"]["variance_explained"] == pytest.approx(ev["variance_explained"])
    # decoder rows are unit norm; firing frequencies were measured on the training set
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(CFG.n_latents), atol=1e-4)
    assert float(sae.log_sparsity.max()) <= 0.0 and float(sae.log_sparsity.min()) >= -10.0


def test_relu_training(track):
    cfg = SAEConfig(
        kind="relu", n_latents=128, steps=100, batch=128, lr=2e-3, l1=1e-3, positions="last"
    )
    sae, stats = train_sae(track.acts("public"), cfg, progress=False)
    ev = evaluate_sae(sae, track.acts("public"))
    assert stats["history"][-1]["nmse"] < stats["history"][0]["nmse"]
    assert ev["variance_explained"] > 0.5 and 0 < ev["l0"] < 128


def test_save_load_round_trip(trained, track, tmp_path):
    sae, _ = trained
    d = save_sae(sae, tmp_path / "sae", {"hook_name": "blocks.1.hook_resid_pre"})
    assert {p.name for p in d.iterdir()} == {
        "cfg.json",
        "sae_weights.safetensors",
        "sparsity.safetensors",
    }
    cfg = json.loads((d / "cfg.json").read_text())
    assert cfg["d_in"] == 576 and cfg["d_sae"] == 512 and cfg["activation_fn_kwargs"] == {"k": 16}
    assert cfg["architecture"] == "topk" and cfg["plateau"]["config"]["n_latents"] == 512
    back = load_sae(d)
    x = track.acts("heldout")[:32]
    with torch.no_grad():
        assert torch.equal(back.encode(x), sae.encode(x))
        assert torch.allclose(back(x), sae(x))
    assert torch.equal(back.log_sparsity, sae.log_sparsity)


def _saelens_dir(path, d=12, n=40, arch="standard", seed=0):
    """A directory exactly as SAELens writes it (its key names and cfg fields)."""
    g = torch.Generator().manual_seed(seed)
    w = {
        "W_enc": torch.randn(d, n, generator=g),
        "b_enc": torch.randn(n, generator=g) * 0.1,
        "W_dec": torch.randn(n, d, generator=g),
        "b_dec": torch.randn(d, generator=g),
    }
    path.mkdir()
    save_file(w, str(path / "sae_weights.safetensors"))
    log = torch.full((n,), -2.0)
    log[:3] = -10.0  # never fired: SAELens' floor log10(0 + 1e-10)
    save_file({"sparsity": log}, str(path / "sparsity.safetensors"))
    cfg = {
        "d_in": d,
        "d_sae": n,
        "dtype": "float32",
        "device": "cpu",
        "model_name": "gpt2-small",
        "hook_name": "blocks.1.hook_resid_pre",
        "hook_layer": 1,
        "hook_head_index": None,
        "activation_fn_str": "relu" if arch == "standard" else "topk",
        "apply_b_dec_to_input": True,
        "finetuning_scaling_factor": False,
        "context_size": 128,
        "dataset_path": "Skylion007/openwebtext",
        "normalize_activations": "none",
        "architecture": arch,
    }
    if arch == "topk":
        cfg["activation_fn_kwargs"] = {"k": 5}
    (path / "cfg.json").write_text(json.dumps(cfg))
    return w, log


def test_loads_saelens_standard_directory(tmp_path):
    w, log = _saelens_dir(tmp_path / "jb")
    sae = load_sae(tmp_path / "jb")
    assert sae.kind == "relu" and sae.W_dec.shape == (40, 12) and sae.W_enc.shape == (12, 40)
    x = torch.randn(7, 12)
    with torch.no_grad():
        f = torch.relu((x - w["b_dec"]) @ w["W_enc"] + w["b_enc"])
        assert torch.allclose(sae.encode(x), f, atol=1e-5)
        assert torch.allclose(sae(x), f @ w["W_dec"] + w["b_dec"], atol=1e-4)
    assert torch.equal(sae.log_sparsity, log)
    assert sae.dead_mask().nonzero().flatten().tolist() == [0, 1, 2]
    assert float(sae.firing_freq[0]) == 0.0 and float(sae.firing_freq[5]) == pytest.approx(0.01)


def test_loads_saelens_topk_directory_and_refuses_bad_ones(tmp_path):
    w, _ = _saelens_dir(tmp_path / "tk", arch="topk")
    sae = load_sae(tmp_path / "tk")
    with torch.no_grad():
        f = sae.encode(torch.randn(9, 12))
    assert sae.kind == "topk" and sae.k == 5 and int((f > 0).sum(1).max()) <= 5
    cfg = json.loads((tmp_path / "tk" / "cfg.json").read_text())
    cfg["normalize_activations"] = "expected_average_only_in"
    (tmp_path / "tk" / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="normalize_activations"):
        load_sae(tmp_path / "tk")
    with pytest.raises(ConfigError, match="does not exist"):
        load_sae(tmp_path / "nowhere")


def test_hub_path_exists_and_fails_clearly_offline(monkeypatch):
    repo, files = hub_files("gpt2-small-res-jb", "blocks.1.hook_resid_pre")
    assert repo == "jbloom/GPT2-Small-SAEs-Reformatted"
    assert files == [
        "blocks.1.hook_resid_pre/cfg.json",
        "blocks.1.hook_resid_pre/sae_weights.safetensors",
        "blocks.1.hook_resid_pre/sparsity.safetensors",
    ]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="HF_HUB_OFFLINE|unreachable"):
        load_sae("saelens:gpt2-small-res-jb/blocks.1.hook_resid_pre")
    with pytest.raises(ConfigError, match="unknown SAE release"):
        load_sae("saelens:nope/blocks.1.hook_resid_pre")


def test_direction_sets_use_run_p3_bases(trained, track):
    from challenge.protocols import _sample

    sae, _ = trained
    sae = SAE(sae.d_in, sae.n_latents, "topk", sae.k)  # copy with some latents marked dead
    sae.load_state_dict(trained[0].state_dict())
    sae.log_sparsity[:50] = -10.0
    sets = sae_direction_sets(sae, track, n_base=20, seed=3)
    assert set(sets) == {"sae_active", "sae_inactive_alive", "sae_dead", "sae_error"}
    x = track.acts("context")[_sample(len(track.acts("context")), 20, 3)]
    with torch.no_grad():
        f = sae.encode(x)
        err = sae(x) - x
    assert torch.allclose(sets["sae_error"], err / err.norm(dim=1, keepdim=True), atol=1e-5)
    W = sae.W_dec.detach()
    for name, d in sets.items():
        assert d.shape == (20, 576) and torch.allclose(d.norm(dim=1), torch.ones(20), atol=1e-5)
        if name == "sae_error":
            continue
        ids = (d @ W.T).argmax(1)  # unit rows: the chosen latent has cosine 1
        assert torch.allclose((d * W[ids]).sum(1), torch.ones(20), atol=1e-4)
        active = f[torch.arange(20), ids] > 0
        if name == "sae_active":
            assert active.all()
        else:
            assert not active.any()
            dead = sae.dead_mask()[ids]
            assert dead.all() if name == "sae_dead" else not dead.any()
    no_dead = trained[0]
    no_dead.log_sparsity.clamp_(min=-5.0)
    assert "sae_dead" not in sae_direction_sets(no_dead, track, n_base=5, seed=0)
