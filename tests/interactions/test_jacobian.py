"""Active-only Jacobian == dense autograd Jacobian on a real layer; the penalty sparsifies."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from challenge.interactions.config import InteractionsConfig  # noqa: E402
from challenge.interactions.data import cache_inputs, text_windows  # noqa: E402
from challenge.interactions.dictionaries import new_dictionary  # noqa: E402
from challenge.interactions.jacobian import (  # noqa: E402
    MLPWeights,
    active_jacobian,
    dense_jacobian,
    interaction_stats,
    restrict,
)
from challenge.interactions.trainer import train_layer  # noqa: E402

LAYER = 6
U32 = 2.0**-24  # float32 unit roundoff


def fp32_tol(model, ref: torch.Tensor) -> float:
    """The rule of tests/test_tail_gemma.py: two float32 paths of one function differ by at most
    K u max |ref|, K = the longest dot product in the path (here d_mlp = 1536; the other
    contractions, over d_model = 576, are shorter)."""
    c = model.cfg
    return max(c.d_model, c.d_mlp) * U32 * float(ref.detach().abs().max())


@pytest.fixture(scope="module")
def lm(smollm):
    torch.set_num_threads(1)
    return smollm


@pytest.fixture(scope="module")
def prompts(tiny_track):
    return tiny_track.spec.prompts


@pytest.fixture(scope="module")
def acts(lm, prompts):
    wins = text_windows(prompts, lm.tokenizer, 6, 96, seed=0)
    return cache_inputs(lm.model, wins, [LAYER])[LAYER]


def test_inputs_are_the_hook_after_the_first_position(lm, prompts, acts):
    wins = text_windows(prompts, lm.tokenizer, 6, 96, seed=0)
    assert wins.shape == (6, 96) and acts.shape == (6 * 95, 576)
    # an independent reference: the cached forward, 8 windows a batch as cache_inputs runs them
    _, cache = lm.model.run_with_cache(
        wins, names_filter=f"blocks.{LAYER}.ln2.hook_normalized", stop_at_layer=LAYER + 1
    )
    ref = cache[f"blocks.{LAYER}.ln2.hook_normalized"][:, 1:].reshape(-1, 576)
    assert torch.equal(acts, ref)


def test_mlp_weights_reproduce_model_mlp(lm, prompts):
    _, cache = lm.model.run_with_cache(
        text_windows(prompts, lm.tokenizer, 1, 32, seed=1),
        names_filter=lambda n: (
            n in (f"blocks.{LAYER}.ln2.hook_normalized", f"blocks.{LAYER}.hook_mlp_out")
        ),
        stop_at_layer=LAYER + 1,
    )
    x = cache[f"blocks.{LAYER}.ln2.hook_normalized"][0]
    y = cache[f"blocks.{LAYER}.hook_mlp_out"][0]
    got = MLPWeights.from_model(lm.model, LAYER)(x)
    assert (got - y).abs().max() <= fp32_tol(lm.model, y)


def test_active_jacobian_matches_dense_autograd(lm, acts):
    torch.manual_seed(0)
    mlp = MLPWeights.from_model(lm.model, LAYER, s_x=1.0, s_y=1.3)
    sae_in = new_dictionary(576, 384, 12, torch.Generator().manual_seed(0))
    sae_out = new_dictionary(576, 384, 12, torch.Generator().manual_seed(1))
    with torch.no_grad():
        sae_in.b_enc.add_(0.05 * torch.randn(384))
        sae_out.b_dec.copy_(0.1 * torch.randn(576))
    x = acts[:12]
    vals, idx = sae_in.encode_topk(x)
    jo = active_jacobian(sae_in, sae_out, mlp, vals, idx)
    Jd = dense_jacobian(sae_in, sae_out, mlp, sae_in.dense_codes(vals, idx))
    assert Jd.shape == (12, 384, 384)
    mask = (jo.vals_out > 0)[:, :, None] & (vals > 0)[:, None, :]
    Jr = restrict(Jd, jo.idx_out, idx) * mask
    assert jo.J.abs().max() > 1e-2  # non-trivial
    # closed form vs autograd: the same contractions (576, 1536, 576) in another order
    assert (jo.J - Jr).abs().max() <= fp32_tol(lm.model, Jr)
    # the dense Jacobian has no mass on inactive output latents
    dead = torch.ones(12, 384, dtype=torch.bool).scatter(1, jo.idx_out, False)
    assert Jd.abs().sum(-1)[dead].max() == 0
    # gradients flow into both dictionaries through the closed form
    jo.J.abs().sum().backward()
    assert sae_in.W_dec.grad is not None and sae_out.W_enc.grad is not None


def test_penalty_reduces_nonzero_interactions(lm, acts):
    cfg = InteractionsConfig(n_latents=256, k=8, batch_size=128, epochs=8, lr=3e-3, jac_tokens=0)
    stats = {}
    for lam in (0.0, 1.0):
        pair, _ = train_layer(lm.model, LAYER, acts, cfg, lam, seed=0)
        with torch.no_grad():
            x = acts / pair.mlp.s_x
            v, i = pair.sae_in.encode_topk(x)
            jo = active_jacobian(pair.sae_in, pair.sae_out, pair.mlp, v, i)
        stats[lam] = interaction_stats(jo.J, jo.vals_out, thresholds=(0.01, 0.05))
    assert stats[1.0]["nnz@0.05"] < 0.7 * stats[0.0]["nnz@0.05"], stats
    assert stats[1.0]["abs_mean"] < stats[0.0]["abs_mean"], stats
