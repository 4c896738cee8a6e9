"""SAE training on real track activations and its evaluation."""

import pytest
import torch

from challenge.errors import ConfigError
from challenge.sae import SAEConfig, evaluate_sae, firing_log10, geometric_median, train_sae

from .conftest import CFG


def test_training_reduces_mse_and_explains_variance(trained, tiny_track):
    sae, stats = trained
    hist = stats["history"]
    assert hist[-1]["nmse"] < 0.25 * hist[0]["nmse"]
    ev = evaluate_sae(sae, tiny_track.acts("public"))
    # stated target: >= 0.9 of the variance of the (training) public split at L0 = k = 16
    assert ev["variance_explained"] >= 0.9
    assert 15.0 <= ev["l0"] <= 16.0  # TopK keeps k, minus the rare non-positive top values
    assert 0.0 <= ev["dead_fraction"] <= 1.0 and ev["n"] == len(tiny_track.acts("public"))
    # train_eval is evaluate_sae on acts.float() itself: the same computation, exactly equal
    assert stats["train_eval"]["variance_explained"] == ev["variance_explained"]
    # decoder rows are unit norm: W / fl(|W|) in float32, |fl(|W|) - |W|| <= (gamma_d / 2 + u)
    # |W| and the division adds u per entry (norm measured here in float64)
    assert sae.W_dec.shape == (CFG.n_latents, 576)
    d = sae.W_dec.shape[1]
    u = 2.0**-24
    tol = (d + 1) * u / (1 - (d + 1) * u) / 2 + 2 * u
    assert ((sae.W_dec.double().norm(dim=1) - 1).abs() <= tol).all()
    # firing frequencies were measured on the training set
    assert float(sae.log_sparsity.max()) <= 0.0 and float(sae.log_sparsity.min()) >= -10.0
    assert torch.equal(sae.log_sparsity, firing_log10(sae, tiny_track.acts("public")))


def test_relu_training(tiny_track):
    cfg = SAEConfig(
        kind="relu", n_latents=128, steps=100, batch=128, lr=2e-3, l1=1e-3, positions="last"
    )
    sae, stats = train_sae(tiny_track.acts("public"), cfg, progress=False)
    ev = evaluate_sae(sae, tiny_track.acts("public"))
    assert stats["history"][-1]["nmse"] < stats["history"][0]["nmse"]
    assert ev["variance_explained"] > 0.5 and 0 < ev["l0"] < 128


def test_training_is_deterministic(tiny_track):
    cfg = SAEConfig(n_latents=64, k=4, steps=20, batch=32, positions="last", seed=3)
    a, _ = train_sae(tiny_track.acts("public"), cfg, progress=False)
    b, _ = train_sae(tiny_track.acts("public"), cfg, progress=False)
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())


def test_refuses_too_few_rows():
    with pytest.raises(ConfigError, match="need activations"):
        train_sae(torch.zeros(1, 4), SAEConfig(n_latents=8, k=2), progress=False)


def test_geometric_median_resists_outliers():
    x = torch.cat([torch.zeros(20, 3), torch.full((3, 3), 100.0)])
    m = geometric_median(x)
    # the mean is pulled to 13; the geometric median stays near the 20 points at the origin
    assert float(x.mean(0)[0]) > 13.0 and float(m.norm()) < 1.0
