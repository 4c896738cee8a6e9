"""The SAE module: config validation, SAELens' encode / decode math, sparse TopK codes."""

import pytest
import torch

from challenge.errors import ConfigError
from challenge.sae import SAE, SAEConfig


def _random_sae(kind: str, d: int = 12, n: int = 40, k: int = 5, seed: int = 0) -> SAE:
    g = torch.Generator().manual_seed(seed)
    sae = SAE(d, n, kind, k)
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return sae


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("kind", "jumprelu"),
        ("positions", "some"),
        ("n_latents", 0),
        ("k", 0),
        ("steps", 0),
        ("batch", 0),
        ("dead_after", 0),
        ("l1", -1.0),
        ("aux_k", -1),
        ("aux_coef", -0.1),
        ("lr", 0.0),
    ],
)
def test_config_refuses_bad_values(field, value):
    with pytest.raises(ConfigError) as e:
        SAEConfig(**{field: value})
    assert e.value.field == field


def test_config_name():
    assert SAEConfig().name() == "topk-4096-k32-all-1000-s0"
    assert (
        SAEConfig(kind="relu", l1=1e-3, positions="last").name() == "relu-4096-l10.001-last-1000-s0"
    )


def test_unknown_kind_refused():
    with pytest.raises(ConfigError, match="unknown SAE kind"):
        SAE(4, 8, "gated")


def test_encode_decode_math():
    x = torch.randn(7, 12, generator=torch.Generator().manual_seed(1))
    for kind in ("relu", "topk", "jumprelu"):
        sae = _random_sae(kind)
        with torch.no_grad():
            pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
            assert torch.equal(sae.pre_acts(x), pre)
            if kind == "relu":
                f = torch.relu(pre)
            elif kind == "jumprelu":
                f = pre * (pre > sae.threshold)
            else:
                top = pre.topk(5, dim=-1)
                f = torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))
                assert int((f > 0).sum(1).max()) <= 5
            assert torch.equal(sae.encode(x), f)
            assert torch.equal(sae(x), f @ sae.W_dec + sae.b_dec)


def test_sparse_topk_codes_match_dense_path():
    sae = _random_sae("topk", d=16, n=64, k=6)
    x = torch.randn(9, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        vals, idx = sae.encode_topk(x)
        assert vals.shape == idx.shape == (9, 6) and bool((vals >= 0).all())
        dense = sae.dense_codes(vals, idx)
        assert torch.equal(dense, sae.encode(x))
        # the same k + 1 terms (k codes times decoder rows, plus b_dec) summed in another order
        # (zeros add exactly): each sum is within k * eps * sum|terms| of the exact value
        mag = torch.einsum("bk,bkd->bd", vals, sae.W_dec[idx].abs()) + sae.b_dec.abs()
        tol = 2 * 6 * torch.finfo(torch.float32).eps * mag
        assert ((sae.decode_topk(vals, idx) - sae.decode(dense)).abs() <= tol).all()
        assert ((sae.forward_topk(x) - sae(x)).abs() <= tol).all()
    with pytest.raises(ConfigError, match="topk"):
        _random_sae("relu").encode_topk(x[:, :12])


def test_dead_mask_and_firing_freq():
    sae = SAE(4, 5, "topk", 2)
    sae.log_sparsity.copy_(torch.tensor([-10.0, -2.0, 0.0, -10.0, -1.0]))
    assert sae.dead_mask().tolist() == [True, False, False, True, False]
    torch.testing.assert_close(sae.firing_freq, torch.tensor([0.0, 0.01, 1.0, 0.0, 0.1]))


def test_normalise_decoder():
    sae = _random_sae("topk")
    sae.normalise_decoder()
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(40))


def test_latent_major_layout_same_values():
    sae = _random_sae("topk", d=12, n=40)
    lm = SAE(12, 40, "topk", 5, latent_major=True)
    lm.load_state_dict(sae.state_dict())
    assert lm.W_enc.shape == (12, 40) and lm.W_enc.stride() == (1, 12)
    assert sae.W_enc.stride() == (40, 1) and torch.equal(lm.W_enc, sae.W_enc)
    x = torch.randn(5, 12, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        # the same 12-term dot products, possibly summed in another order by BLAS
        terms = (x - sae.b_dec).abs() @ sae.W_enc.abs() + sae.b_enc.abs()
        tol = 2 * 12 * torch.finfo(torch.float32).eps * terms
        assert ((lm.pre_acts(x) - sae.pre_acts(x)).abs() <= tol).all()
