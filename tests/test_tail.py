"""The fast tail runner equals TransformerLens' own forward with a hook.

Tolerances are the rule of ``tests/test_tail_gemma.py``: both paths compute the same function
in a different order, each compared number is at its last step one float32 dot product of
length <= K = max(d_model, d_mlp, n_heads d_head) (error <= K u sum |a_i b_i|), and the errors
of the sub-layers add about in quadrature, so max |tail - ref| <= K u max |ref|.
"""

import torch

from challenge.tail import TailRunner, supports

U32 = 2.0**-24  # float32 unit roundoff


def gamma(model) -> float:
    """K u, the worst-case relative error of the longest float32 dot product in the path."""
    c = model.cfg
    return max(c.d_model, c.d_mlp, c.n_heads * c.d_head) * U32


def assert_close_to(model, got, ref):
    assert (got - ref).abs().max() <= gamma(model) * ref.abs().max()


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
    assert_close_to(model, read, ref_read)
    assert_close_to(model, out["logits"][:, 0], ref_logits)
    # the argmax agrees because every top-2 margin exceeds twice the logit bound
    top2 = ref_logits.topk(2, dim=-1).values
    assert ((top2[:, 0] - top2[:, 1]) > 2 * gamma(model) * ref_logits.abs().max()).all()
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
    assert_close_to(model, together, alone)  # batching changes only the order of rounding


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
    assert_close_to(model, out["blocks.3.hook_resid_post"][:, 0], ref_read)
    assert_close_to(model, out["logits"][:, 0], ref_logits)


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
            assert_close_to(model, kb, ka)
