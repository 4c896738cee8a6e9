"""The loader: embedded SmolLM2 agrees with Hugging Face; GPT-2 conversion path on a tiny model."""

import pytest
import torch

from challenge.models import (
    ModelSpec,
    embedded_gguf_path,
    hooked_config_from_hf,
    hooked_from_hf,
    load_model,
)

U32 = 2.0**-24  # float32 unit roundoff


def gamma(cfg) -> float:
    """K u, the worst-case relative error of the longest float32 dot product in the forward
    (K = max(d_model, d_mlp, n_heads d_head)); see tests/test_tail_gemma.py for the rule."""
    return max(cfg.d_model, cfg.d_mlp, cfg.n_heads * cfg.d_head) * U32


def test_embedded_logits_match_hf(smollm):
    from transformers import AutoModelForCausalLM

    g = embedded_gguf_path()
    hf = AutoModelForCausalLM.from_pretrained(
        str(g.parent), gguf_file=g.name, dtype=torch.float32
    ).eval()
    toks = smollm.tokenizer(
        ["Once upon a time, there was a little", "The capital of France is"],
        return_tensors="pt",
        padding=True,
    ).input_ids
    with torch.no_grad():
        ref = hf(toks).logits
        ours = smollm.model(toks)
    # two implementations of one function, float32 rounding in a different order
    eps = gamma(smollm.model.cfg) * ref.abs().max()
    assert (ours - ref).abs().max() <= eps
    # the argmax agrees because every top-2 margin exceeds twice the logit bound
    top2 = ref.topk(2, dim=-1).values
    assert ((top2[..., 0] - top2[..., 1]) > 2 * eps).all()
    assert torch.equal(ours.argmax(-1), ref.argmax(-1))


def test_embedded_model_is_raw_fp32_and_described(smollm):
    cfg = smollm.cfg
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_key_value_heads) == (30, 576, 9, 3)
    assert next(smollm.model.parameters()).dtype == torch.float32
    # raw weights: RMSNorm weights are not folded into the next matrices
    assert not torch.allclose(smollm.model.blocks[0].ln1.w, torch.ones(576))
    assert smollm.provenance["weights_sha256"] and smollm.provenance["model"].startswith(
        "HuggingFaceTB/"
    )


def test_a_second_load_reads_the_cache_without_dequantising(smollm, monkeypatch):
    """Once cached, a load never goes back to the GGUF (dequantising is the slow part; its
    speed is a benchmark's business, not a test's)."""
    import transformers

    from challenge.models import cache_root

    def refuse(*a, **k):
        raise AssertionError("the cached model was dequantised again")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
    weights = cache_root() / "models" / "smollm2-135m" / "model.safetensors"
    before = weights.stat().st_mtime_ns
    lm = load_model(ModelSpec("smollm2-135m"), device="cpu")
    assert weights.stat().st_mtime_ns == before
    assert torch.equal(lm.model.blocks[3].mlp.W_in, smollm.model.blocks[3].mlp.W_in)


def test_tiny_gpt2_goes_through_the_gpt2_conversion_path():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    hf = GPT2LMHeadModel(
        GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=300, n_positions=32)
    ).eval()
    cfg = hooked_config_from_hf(hf.config)
    assert cfg.original_architecture == "GPT2LMHeadModel" and cfg.normalization_type == "LN"
    model = hooked_from_hf(hf, device="cpu")
    toks = torch.randint(0, 300, (3, 12))
    with torch.no_grad():
        ref = torch.log_softmax(hf(toks).logits, -1)
        ours = torch.log_softmax(model(toks), -1)
        ref64 = torch.log_softmax(hf.double()(toks).logits, -1)
        ours64 = torch.log_softmax(hooked_from_hf(hf, device="cpu")(toks), -1)
    assert ours64.dtype == torch.float64
    # float32: the rule above, relative to the largest |log-probability|
    assert (ours - ref).abs().max() <= gamma(cfg) * ref.abs().max()
    # float64: the conversion computes the same function, so the two agree more closely than
    # float32 rounding alone moves the reference (a wrong weight would not shrink with precision)
    fp32_error = (ref.double() - ref64).abs().max()
    assert fp32_error > 0
    assert (ours64 - ref64).abs().max() <= fp32_error


def test_unsupported_architecture_is_refused():
    class Cfg:
        model_type = "mamba"

    with pytest.raises(ValueError, match="mamba"):
        hooked_config_from_hf(Cfg())
