"""The perturbation engine: tail backend vs hook reference, chunking, metrics against step 0."""

import numpy as np
import pytest
import torch

from challenge.activations import capture
from challenge.divergence import distribution_divergences, divergence_block
from challenge.engine import Curves, EngineConfig, PerturbationEngine
from challenge.errors import ConfigError
from challenge.hooks import parse_resid


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


@pytest.fixture(scope="module")
def smollm64():
    """A second copy of the model in float64: two float64 computations of the same function
    differ only by float64 rounding, ~2^29 times below float32's, so comparing them there
    separates an algorithmic difference from rounding with no tolerance to choose."""
    from challenge.models import load_model

    lm = load_model("smollm2-135m", device="cpu")
    lm.model.to(torch.float64)
    return lm.model


def _engines(model, **kw):
    make = lambda backend: PerturbationEngine(  # noqa: E731
        model,
        EngineConfig(write_hook="blocks.1.hook_resid_pre", backend=backend, progress=False, **kw),
    )
    return make("tail"), make("reference")


def test_tail_equals_reference_backend(smollm, smollm64, setup):
    """The tail backend computes what the hooked full forward computes: in float64 the two
    agree more closely than float32 rounding alone moves the reference (a wrong layer,
    position, cache entry or norm would not shrink with the precision)."""
    _, tokens, _, paths = setup
    t32, r32 = _engines(smollm.model)
    t64, r64 = _engines(smollm64)
    assert t32.backend == t64.backend == "tail" and r32.backend == r64.backend == "reference"
    with torch.no_grad():
        o32, o64 = r32.forward(tokens, paths), r64.forward(tokens, paths)
        tail64 = t64.forward(tokens, paths)
    for k in ("read", "logits"):
        fp32_error = (o32[k].double() - o64[k]).abs().max()
        assert fp32_error > 0  # float32 rounding is visible, so the bound below is not vacuous
        assert (tail64[k] - o64[k]).abs().max() <= fp32_error, k
    # float32 curves: rounding may flip the top-1 token only where the two best logits are
    # within float32 noise of each other, which is rare
    a, b = t32.curves(tokens, paths), r32.curves(tokens, paths)
    assert (a.top1_changed == b.top1_changed).mean() > 0.95


def test_curves_start_at_zero_and_respond(setup):
    eng, tokens, _, paths = setup
    c = eng.curves(tokens, paths)
    assert c.l2.shape == (6, 12)
    # step 0 is measured against itself (one computation): exactly 0
    assert (c.l2[:, 0] == 0).all() and (c.kl[:, 0] == 0).all() and (c.js[:, 0] == 0).all()
    assert (c.l2[:, -1] > 1).all() and (c.kl[:, -1] > 0.01).all()
    assert c.meta["write_hook"] == "blocks.1.hook_resid_pre"


def test_chunking_does_not_change_results(smollm, smollm64, setup):
    """Rows are independent: chunking changes only which rows share a forward call, and so only
    the order of rounding (float32 results move by ~1e-3 in L2). In float64 that reordering
    moves the curves less than float32 rounding itself does."""
    _, tokens, _, paths = setup

    def curves(model, max_rows):
        cfg = EngineConfig(write_hook="blocks.1.hook_resid_pre", max_rows=max_rows, progress=False)
        return PerturbationEngine(model, cfg).curves(tokens, paths)

    small64, big64, big32 = curves(smollm64, 12), curves(smollm64, 4096), curves(smollm.model, 4096)
    assert (small64.top1_changed == big64.top1_changed).all()
    for k in Curves.METRICS:
        fp32_error = np.abs(big32[k].astype(np.float64) - big64[k]).max()
        assert np.abs(small64[k].astype(np.float64) - big64[k]).max() <= fp32_error, k


def test_step_zero_of_a_real_path_is_the_clean_run(smollm64, setup):
    """Writing a prompt's own activation back reproduces the clean run (float64, as above)."""
    eng, tokens, acts, _ = setup
    t64, _ = _engines(smollm64)
    hooks = [t64._write_name(), t64.read_hook]
    clean32 = capture(eng.model, tokens, hooks, float32=False)
    clean64 = capture(smollm64, tokens, hooks, float32=False)
    with torch.no_grad():
        out = t64.forward(tokens, clean64[hooks[0]][:, None])
    fp32_error = (clean32[hooks[1]].double() - clean64[hooks[1]]).abs().max()
    assert 0 < fp32_error
    assert (out["read"][:, 0] - clean64[hooks[1]]).abs().max() <= fp32_error
    # and the engine's clean run is the one capture
    clean = eng.clean(tokens)
    assert torch.equal(clean["write"], acts) and torch.equal(clean["read"], clean32[hooks[1]])


def test_forward_is_differentiable(setup):
    eng, tokens, acts, _ = setup
    x = acts[:2, None].clone().requires_grad_(True)
    eng.forward(tokens[:2], x)["read"].norm().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_divergences_known_values():
    logits = torch.tensor([[[0.0, 0.0], [0.0, 0.0], [10.0, -10.0]]])
    d = distribution_divergences(logits)
    assert d["kl"][0, 1] == 0 and d["js"][0, 0] == 0
    # Tolerance: every quantity along the way (logits, log-probabilities, D = log p - log p_0)
    # has magnitude <= M = 20, and each float32 operation errs by at most u |value|; the longest
    # chain has fewer than 16 operations (log_softmax 4, D 1, the log-mix 3, products, sums and
    # halvings 8), so the computed value is within 16 u M of the exact one. The closed forms
    # below take p = [1, 0] instead of softmax([10, -10]) = [1 - e, e], e = 2.1e-9, which moves
    # KL by log(1 + e) < e and JS by < e (|log e| + |log 1/4| + 2) < 50 e.
    u = float(np.finfo(np.float32).eps) / 2
    e = float(np.exp(-20.0) / (1 + np.exp(-20.0)))
    fp32 = 16 * u * 20.0
    # p0 = [1/2, 1/2], p ~ [1, 0], m = [3/4, 1/4]: JS = (KL(p0||m) + KL(p||m)) / 2
    m = np.array([0.75, 0.25])
    expected = 0.5 * (0.5 * np.log(0.5 / m).sum()) + 0.5 * np.log(1 / 0.75)
    assert abs(d["js"][0, 2].item() - expected) <= fp32 + 50 * e
    kl = 0.5 * np.log(0.5) + 0.5 * (np.log(0.5) + 20)
    assert abs(d["kl"][0, 2].item() - kl) <= fp32 + e
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
    assert parse_resid("blocks.0.hook_resid_post", 12) == 1


def test_divergence_blocks_shrink_for_large_vocabularies_without_changing_values():
    assert divergence_block(49152) == 128  # SmolLM2: unchanged
    assert divergence_block(262144) == 16  # Gemma 3: 16 x 262k floats = 16 MB per pass
    assert divergence_block(100000) == 32 and divergence_block(10**8) == 1
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(1, 40, 262144, generator=g)
    small, big = distribution_divergences(logits), distribution_divergences(logits, block=128)
    # Each step's values are row-wise computations; only the blocking of the reductions may
    # differ. Bound: a float32 sum of V terms errs by <= V u sum|terms| in the worst case; the
    # terms here are p0 |D| (KL, CE) and their JS analogues, each <= p0 (|D| + 1).
    u = float(np.finfo(np.float32).eps) / 2
    lp = torch.log_softmax(logits[0].double(), -1)
    scale = (lp[0].exp() * ((lp - lp[0]).abs() + 1)).sum(-1).float()
    bound = 262144 * u * scale
    for k in ("kl", "ce", "js"):
        assert ((small[k][0] - big[k][0]).abs() <= bound).all(), k
    assert torch.equal(small["top1_changed"], big["top1_changed"])
