"""The perturbation engine: tail backend vs hook reference, chunking, metrics against step 0."""

import numpy as np
import pytest
import torch

from challenge.engine import (
    EngineConfig,
    PerturbationEngine,
    distribution_divergences,
    parse_resid_hook,
)
from challenge.errors import ConfigError


@pytest.fixture(scope="module")
def setup(smollm):
    torch.manual_seed(0)
    tokens = torch.randint(100, 30000, (6, 10))
    eng = PerturbationEngine(
        smollm.model, EngineConfig(write_hook="blocks.1.hook_resid_pre", progress=False)
    )
    acts = eng.clean(tokens)["write"]
    alpha = torch.linspace(0, 1, 12)[None, :, None]
    paths = acts[:, None] + alpha * (acts.roll(1, 0) - acts)[:, None]
    return eng, tokens, acts, paths


def test_tail_equals_reference_backend(smollm, setup):
    eng, tokens, _, paths = setup
    ref = PerturbationEngine(
        smollm.model,
        EngineConfig(write_hook="blocks.1.hook_resid_pre", backend="reference", progress=False),
    )
    assert eng.backend == "tail" and ref.backend == "reference"
    a, b = eng.curves(tokens, paths), ref.curves(tokens, paths)
    np.testing.assert_allclose(a.l2, b.l2, rtol=1e-4, atol=1e-2 * 1e-2 * b.l2.max())
    np.testing.assert_allclose(a.kl, b.kl, atol=1e-3)
    assert (a.top1_changed == b.top1_changed).mean() > 0.95


def test_curves_start_at_zero_and_respond(setup):
    eng, tokens, _, paths = setup
    c = eng.curves(tokens, paths)
    assert c.l2.shape == (6, 12)
    assert np.allclose(c.l2[:, 0], 0) and np.allclose(c.kl[:, 0], 0, atol=1e-6)
    assert (c.l2[:, -1] > 1).all() and (c.kl[:, -1] > 0.01).all()
    assert c.meta["write_hook"] == "blocks.1.hook_resid_pre"


def test_chunking_does_not_change_results(smollm, setup):
    _, tokens, _, paths = setup
    small = PerturbationEngine(
        smollm.model,
        EngineConfig(write_hook="blocks.1.hook_resid_pre", max_rows=12, progress=False),
    )
    big = PerturbationEngine(
        smollm.model,
        EngineConfig(write_hook="blocks.1.hook_resid_pre", max_rows=4096, progress=False),
    )
    np.testing.assert_allclose(
        small.curves(tokens, paths).l2, big.curves(tokens, paths).l2, rtol=1e-5, atol=1e-3
    )


def test_step_zero_of_a_real_path_is_the_clean_run(setup):
    eng, tokens, acts, _ = setup
    clean = eng.clean(tokens)
    out = eng.forward(tokens, acts[:, None])
    assert (out["read"][:, 0] - clean["read"]).abs().max() < 1e-2


def test_forward_is_differentiable(setup):
    eng, tokens, acts, _ = setup
    x = acts[:2, None].clone().requires_grad_(True)
    eng.forward(tokens[:2], x)["read"].norm().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_divergences_known_values():
    logits = torch.tensor([[[0.0, 0.0], [0.0, 0.0], [10.0, -10.0]]])
    d = distribution_divergences(logits)
    assert d["kl"][0, 1] == 0 and d["js"][0, 0] == 0
    # p0 = [1/2, 1/2], p ~ [1, 0], m = [3/4, 1/4]: JS = (KL(p0||m) + KL(p||m)) / 2
    m = np.array([0.75, 0.25])
    expected = 0.5 * (0.5 * np.log(0.5 / m).sum()) + 0.5 * np.log(1 / 0.75)
    assert abs(d["js"][0, 2].item() - expected) < 1e-4
    assert abs(d["kl"][0, 2].item() - (0.5 * np.log(0.5) + 0.5 * (np.log(0.5) + 20))) < 1e-3
    assert d["top1_changed"][0, 2] == (logits[0, 2].argmax() != logits[0, 0].argmax())


def test_bad_hooks_are_refused(smollm):
    with pytest.raises(ConfigError, match="write_hook"):
        PerturbationEngine(smollm.model, EngineConfig(write_hook="blocks.1.attn.hook_z"))
    with pytest.raises(ConfigError, match="read_hook"):
        PerturbationEngine(
            smollm.model,
            EngineConfig(
                write_hook="blocks.5.hook_resid_pre", read_hook="blocks.2.hook_resid_post"
            ),
        )
    assert parse_resid_hook("blocks.0.hook_resid_post", 12) == 1
