"""End-to-end SAE training on the tiny track: its KL objective falls, the saved directory loads
in the suite's SAELens reader with identical outputs, and a stopped run resumes to the same
weights as an uninterrupted one."""

import json

import pytest
import torch

from challenge.errors import ConfigError
from challenge.sae import kind_from_cfg, load_sae, save_sae
from challenge.sae.e2e import (
    E2EConfig,
    ds_layers,
    e2e_objective,
    init_e2e,
    tail_data,
    train_e2e,
)

ROWS = 48  # public prompts of the tiny track used for training
CFG = E2EConfig(n_latents=64, k=8, init="random", steps=12, batch=16, lr=3e-3, checkpoint_every=4)


@pytest.fixture(scope="module")
def engine(tiny_track, smollm):
    return tiny_track.engine(smollm, progress=False)


@pytest.fixture(scope="module")
def data(engine, tiny_track):
    layers = ds_layers(engine.start, engine.model.cfg.n_layers, 8)
    return tail_data(engine, tiny_track.tokens("public")[:ROWS], layers, chunk=32, progress=False)


@pytest.fixture(scope="module")
def trained(engine, data):
    return train_e2e(engine, data, CFG, progress=False)


def test_kl_objective_falls(trained, engine, data):
    sae0, scale, _ = init_e2e(data.acts, CFG)
    sae, stats = trained
    j = {}
    for name, (s, sc) in {"init": (sae0, scale), "trained": (sae, 1.0)}.items():
        # the same objective evaluated with two row groupings: their difference is the fp32
        # rounding of the whole path (tail runner, log-softmax, the KL sums) for this SAE
        a = e2e_objective(s, engine, data, scale=sc, batch=ROWS).double().mean()
        b = e2e_objective(s, engine, data, scale=sc, batch=7).double().mean()
        j[name] = (float(a), abs(float(a - b)))
    margin = j["init"][1] + j["trained"][1]
    assert j["init"][0] - j["trained"][0] > margin, (j, margin)
    assert j["trained"][0] >= 0.0
    assert stats["n_train"] == ROWS and len(stats["history"]) == 3  # steps 0, 10 and the last
    assert all(h["l0"] <= CFG.k for h in stats["history"])


def test_saved_directory_loads_with_identical_outputs(trained, engine, data, tmp_path):
    sae, _ = trained
    d = save_sae(sae, tmp_path / "e2e", {"hook_name": "blocks.1.hook_resid_pre"})
    cfg = json.loads((d / "cfg.json").read_text())
    assert kind_from_cfg(cfg, "cfg.json") == ("topk", CFG.k)
    assert cfg["d_sae"] == CFG.n_latents and cfg["plateau"]["objective"] == "e2e"
    loaded = load_sae(d)
    for name in ("W_enc", "b_enc", "W_dec", "b_dec", "log_sparsity"):
        assert torch.equal(getattr(loaded, name), getattr(sae, name)), name
    with torch.no_grad():
        assert torch.equal(loaded(data.acts), sae(data.acts))
    assert torch.equal(e2e_objective(loaded, engine, data), e2e_objective(sae, engine, data))


def test_stopped_run_resumes_to_the_same_weights(engine, data, tmp_path):
    cfg = E2EConfig(n_latents=32, k=4, init="random", steps=4, batch=8, checkpoint_every=2, seed=5)
    straight, st_a = train_e2e(engine, data, cfg, progress=False)
    assert train_e2e(engine, data, cfg, checkpoint_dir=tmp_path, stop_at=2, progress=False) is None
    assert (tmp_path / "checkpoint.pt").exists()
    resumed, st_b = train_e2e(engine, data, cfg, checkpoint_dir=tmp_path, progress=False)
    for k, v in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[k], v), k
    assert st_a["history"] == st_b["history"]
    other = E2EConfig(
        n_latents=32, k=4, init="random", steps=4, batch=8, checkpoint_every=2, seed=6
    )
    with pytest.raises(ConfigError, match="another config"):
        train_e2e(engine, data, other, checkpoint_dir=tmp_path, progress=False)


def test_e2e_ds_adds_the_downstream_terms(engine, data):
    cfg = E2EConfig(
        kind="e2e+ds", n_latents=32, k=4, init="random", steps=1, batch=8, ds_every=8, ds_coef=0.5
    )
    _, stats = train_e2e(engine, data, cfg, progress=False)
    assert stats["ds_layers"] == [8, 16, 24, 29]  # blocks 1..29 after write point 1: every 8th
    h = stats["history"][0]
    assert h["ds"] > 0
    want = torch.tensor(h["kl"]) + cfg.ds_coef * torch.tensor(h["ds"])  # float32, as trained
    assert abs(h["loss"] - float(want)) <= 2 * torch.finfo(torch.float32).eps * abs(float(want))


def test_config_errors():
    with pytest.raises(ConfigError, match="kind"):
        E2EConfig(kind="topk")
    with pytest.raises(ConfigError, match="exceeds"):
        E2EConfig(n_latents=8, k=16)
    assert ds_layers(1, 30, 4) == (4, 8, 12, 16, 20, 24, 28, 29)
