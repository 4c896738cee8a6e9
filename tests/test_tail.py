"""The fast tail runner equals TransformerLens' own forward with a hook."""

import torch

from challenge.tail import TailRunner, supports


def _reference(model, tokens, layer, x):
    def write(act, hook):
        act = act.clone()
        act[:, -1] = x
        return act

    store = {}
    logits = model.run_with_hooks(
        tokens,
        fwd_hooks=[
            (f"blocks.{layer}.hook_resid_pre", write),
            (
                f"blocks.{model.cfg.n_layers - 1}.hook_resid_post",
                lambda a, hook: store.update(r=a[:, -1]),
            ),
        ],
    )
    return store["r"], logits[:, -1]


def test_tail_matches_full_forward_on_smollm(smollm):
    model = smollm.model
    torch.manual_seed(0)
    tokens = torch.randint(100, 30000, (3, 10))
    layer = 5
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_resid_pre"))
    runner = TailRunner(model, layer)
    pc = runner.prefix(
        [cache[f"blocks.{i}.hook_resid_pre"] for i in range(layer, model.cfg.n_layers)]
    )
    x = cache[f"blocks.{layer}.hook_resid_pre"][:, -1] + 5 * torch.randn(3, 576)
    out = runner.run(x[:, None], pc, read_layers=(model.cfg.n_layers - 1,))
    ref_read, ref_logits = _reference(model, tokens, layer, x)
    read = out[f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"][:, 0]
    assert (read - ref_read).abs().max() / ref_read.abs().max() < 1e-4
    assert (out["logits"][:, 0] - ref_logits).abs().max() < 1e-2
    assert torch.equal(out["logits"][:, 0].argmax(-1), ref_logits.argmax(-1))


def test_tail_rows_share_one_prefix_cache(smollm):
    """Points for the same context in one [B, S] batch give the same result as one by one."""
    model = smollm.model
    tokens = torch.randint(100, 30000, (2, 8))
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_resid_pre"))
    runner = TailRunner(model, 2)
    pc = runner.prefix([cache[f"blocks.{i}.hook_resid_pre"] for i in range(2, 30)])
    x = torch.randn(2, 4, 576) * 10
    together = runner.run(x, pc)["logits"]
    alone = torch.stack([runner.run(x[:, s : s + 1], pc)["logits"][:, 0] for s in range(4)], dim=1)
    assert (together - alone).abs().max() < 1e-3


def test_supports_reports_reasons(smollm):
    ok, why = supports(smollm.model)
    assert ok and why == "ok"


def test_tail_matches_full_forward_on_gpt2_architecture():
    """LayerNorm with bias, learned positions, GELU MLP: the GPT-2 path (tiny random model)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from challenge.models import hooked_from_hf

    torch.manual_seed(0)
    hf = GPT2LMHeadModel(
        GPT2Config(n_layer=4, n_embd=64, n_head=4, vocab_size=500, n_positions=32)
    ).eval()
    model = hooked_from_hf(hf, device="cpu")
    tokens = torch.randint(0, 500, (3, 10))
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_resid_pre"))
    runner = TailRunner(model, 1)
    pc = runner.prefix([cache[f"blocks.{i}.hook_resid_pre"] for i in range(1, 4)])
    x = cache["blocks.1.hook_resid_pre"][:, -1] + torch.randn(3, 64)
    out = runner.run(x[:, None], pc, read_layers=(3,))
    ref_read, ref_logits = _reference(model, tokens, 1, x)
    assert (out["blocks.3.hook_resid_post"][:, 0] - ref_read).abs().max() < 1e-4
    assert (out["logits"][:, 0] - ref_logits).abs().max() < 1e-4


def test_prefix_from_write_point_equals_prefix_from_tl_cache(smollm):
    """The runner's own causal prefix pass gives the keys/values TransformerLens computes."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from challenge.models import hooked_from_hf

    torch.manual_seed(1)
    gpt2 = hooked_from_hf(
        GPT2LMHeadModel(GPT2Config(n_layer=3, n_embd=64, n_head=4, vocab_size=300)).eval(),
        device="cpu",
    )
    for model, start, vocab in ((smollm.model, 4, 30000), (gpt2, 1, 300)):
        tokens = torch.randint(0, vocab, (2, 9))
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_resid_pre"))
        runner = TailRunner(model, start)
        a = runner.prefix(
            [cache[f"blocks.{i}.hook_resid_pre"] for i in range(start, model.cfg.n_layers)]
        )
        b = runner.prefix_from_write(cache[f"blocks.{start}.hook_resid_pre"])
        for ka, kb in zip(a.keys + a.values, b.keys + b.values, strict=True):
            assert (ka - kb).abs().max() <= 1e-4 * ka.abs().max()
