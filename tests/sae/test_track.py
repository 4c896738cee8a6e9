"""The SAE of a track: its training data, the cache, and P3's SAE direction sets."""

import pytest
import torch

from challenge.errors import ConfigError
from challenge.rng import subset
from challenge.sae import (
    SAE,
    SAEConfig,
    sae_direction_sets,
    track_sae,
    track_sae_dir,
    track_training_acts,
)


def test_training_acts_are_the_write_hook_after_the_first_position(tiny_track, smollm):
    assert torch.equal(track_training_acts(tiny_track, "last"), tiny_track.acts("public"))
    acts = track_training_acts(tiny_track, "all", smollm)
    toks = tiny_track.tokens("public")
    # an independent reference: one cached forward over the same single batch of 256 prompts
    _, cache = smollm.model.run_with_cache(
        toks, names_filter="blocks.1.hook_resid_pre", stop_at_layer=2
    )
    ref = cache["blocks.1.hook_resid_pre"][:, 1:].reshape(-1, 576)
    assert acts.shape == (len(toks) * (toks.shape[1] - 1), 576) and acts.dtype == torch.float32
    assert torch.equal(acts, ref)
    # the last position of each prompt is the track's stored activation (same computation)
    assert torch.equal(acts.view(len(toks), -1, 576)[:, -1], tiny_track.acts("public"))
    with pytest.raises(ConfigError, match="positions"):
        track_training_acts(tiny_track, "first")


def test_track_sae_trains_once_then_loads(tiny_track, smollm, tmp_path, monkeypatch):
    monkeypatch.setenv("PLATEAU_CACHE", str(tmp_path))
    cfg = SAEConfig(n_latents=64, k=4, steps=20, batch=64, positions="all")
    with pytest.raises(ConfigError, match="no SAE at"):
        track_sae(tiny_track, cfg, lm=smollm, train=False)
    sae = track_sae(tiny_track, cfg, lm=smollm, progress=False)
    d = track_sae_dir(tiny_track, cfg)
    assert d.is_relative_to(tmp_path) and (d / "sae_weights.safetensors").exists()
    plateau = sae.meta["plateau"]
    assert plateau["track"] == {"id": "smollm2-135m-l1-tiny", "version": "1.0.0"}
    assert {"public_eval", "heldout_eval", "train_eval"} <= set(plateau["stats"])
    assert sae.meta["cfg"]["hook_name"] == "blocks.1.hook_resid_pre"
    again = track_sae(tiny_track, cfg, train=False)
    assert all(torch.equal(again.state_dict()[k], v) for k, v in sae.state_dict().items())


def test_direction_sets_use_run_p3_bases(trained, tiny_track):
    track = tiny_track
    sae = SAE(trained[0].d_in, trained[0].n_latents, "topk", trained[0].k)  # a copy, with
    sae.load_state_dict(trained[0].state_dict())  # some latents marked dead
    sae.log_sparsity[:50] = -10.0
    sets = sae_direction_sets(sae, track, n_base=20, seed=3)
    assert set(sets) == {"sae_active", "sae_inactive_alive", "sae_dead", "sae_error"}
    x = track.acts("context")[subset(len(track.acts("context")), 20, 3, "p3.contexts")]
    with torch.no_grad():
        f = sae.encode(x)
        err = sae(x) - x
    # the same computation as sae_direction_sets (decode(encode(x)) - x, over its norm): exact
    assert torch.equal(sets["sae_error"], err / err.norm(dim=1, keepdim=True))
    W = sae.W_dec.detach()
    # r / fl(|r|) in float32 has norm 1 within gamma_{d+1} / 2 + 2u (the norm: gamma_d / 2 + u,
    # the division: u), measured here in float64
    u, D = 2.0**-24, 576
    g = (D + 1) * u / (1 - (D + 1) * u)
    for name, d in sets.items():
        assert d.shape == (20, 576)
        assert ((d.double().norm(dim=1) - 1).abs() <= g / 2 + 2 * u).all()
        if name == "sae_error":
            continue
        ids = (d @ W.T).argmax(1)  # unit rows: the chosen latent has cosine 1
        assert torch.equal(d, W[ids] / W[ids].norm(dim=1, keepdim=True))  # one computation
        # W's rows are unit within g / 2 + 2u (normalise_decoder), d = W / fl(|W|) adds
        # g / 2 + 2u again, and the float32 dot of D non-negative terms gamma_D <= g
        assert ((d * W[ids]).sum(1).double() - 1).abs().le(2 * g + 4 * u).all()
        active = f[torch.arange(20), ids] > 0
        if name == "sae_active":
            assert active.all()
        else:
            assert not active.any()
            dead = sae.dead_mask()[ids]
            assert dead.all() if name == "sae_dead" else not dead.any()
    no_dead = SAE(sae.d_in, sae.n_latents, "topk", sae.k)
    no_dead.load_state_dict(trained[0].state_dict())
    no_dead.log_sparsity.clamp_(min=-5.0)
    assert "sae_dead" not in sae_direction_sets(no_dead, track, n_base=5, seed=0)


def test_an_sae_published_with_the_track_is_used_on_another_machine(
    tiny_track_dir, trained, smollm, tmp_path, monkeypatch
):
    """Publish the tiny track with a trained SAE, download it into a fresh cache ("another
    machine"): the track's SAE is the published one, bit for bit, with no training; a generator
    that used it names its checksum in submission.json."""
    import baselines.generators as G
    from challenge.sae.io import save_sae
    from challenge.store import download, publish, sae_checksum
    from challenge.submission import generate, read_submission
    from challenge.track import load_track

    sae, _ = trained
    src = save_sae(
        sae, tmp_path / "made" / SAEConfig().name(), {"hook_name": "blocks.1.hook_resid_pre"}
    )
    publish(tiny_track_dir, str(tmp_path / "reg"), saes=[src])
    monkeypatch.setenv("PLATEAU_CACHE", str(tmp_path / "elsewhere"))
    got = download(str(tmp_path / "reg"), track_id="smollm2-135m-l1-tiny", version="1.0.0")
    track = load_track(got)
    assert track_sae_dir(track) == got / "saes" / src.name
    monkeypatch.setattr("challenge.sae.track.train_sae", lambda *a, **k: pytest.fail("trained"))
    loaded = track_sae(track, train=False)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in sae.state_dict().items())
    folder = generate(G.SAEReconstruction(), track, smollm, n=8, out_root=tmp_path / "subs")
    meta, _ = read_submission(folder)
    assert meta["sae"] == {"name": src.name, "sha256": sae_checksum(src)}
