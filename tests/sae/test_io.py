"""SAELens' on-disk format (ours and SAELens' directories) and the hub releases."""

import json

import pytest
import torch
from safetensors.torch import save_file

from challenge.errors import ConfigError
from challenge.sae import hub_files, load_sae, save_sae


def test_save_load_round_trip(trained, tiny_track, tmp_path):
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
    x = tiny_track.acts("heldout")[:32]
    with torch.no_grad():
        assert torch.equal(back.encode(x), sae.encode(x))
        assert torch.equal(back(x), sae(x))  # the same weights through the same computation
    assert torch.equal(back.log_sparsity, sae.log_sparsity)
    # the same file into the latent-major layout of the sparse-interaction dictionaries
    lm = load_sae(d, latent_major=True)
    assert lm.W_enc.stride() == (1, 576) and torch.equal(lm.W_enc, back.W_enc)


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
        # SAELens' forward is our forward: the same weights, layout and operations, so exact
        f = torch.relu((x - w["b_dec"]) @ w["W_enc"] + w["b_enc"])
        assert torch.equal(sae.encode(x), f)
        assert torch.equal(sae(x), f @ w["W_dec"] + w["b_dec"])
    assert torch.equal(sae.log_sparsity, log)
    assert sae.dead_mask().nonzero().flatten().tolist() == [0, 1, 2]
    # 10 ** -2 in float64 (within a few ulp of 0.01), then rounded once to float32
    u32, u64 = 2.0**-24, 2.0**-53
    assert float(sae.firing_freq[0]) == 0.0
    assert abs(float(sae.firing_freq[5]) - 0.01) <= (u32 + 4 * u64) * 0.01


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
