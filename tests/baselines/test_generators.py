"""Baseline generators: the interface, determinism, and each published recipe's defining property."""

import pytest
import torch

from baselines.generators import (
    GENERATORS,
    BagOfFeatures,
    SAEBaseline,
    SAEReconstruction,
    SingleLatent,
    Structured,
    TokenCluster,
    decode_sparse,
    sparsity_neighbours,
)
from challenge.sae import SAEConfig, train_sae
from challenge.submission import Generator

N = 48
REQUIRED = {
    "isotropic",
    "gaussian",
    "sae_reconstruction",
    "sae_baseline",
    "bag_of_features",
    "structured",
    "single_latent",
    "interpolation",
    "heldout_real",
}
SAE_GENS = ("sae_reconstruction", "sae_baseline", "bag_of_features", "structured", "single_latent")


@pytest.fixture(scope="module")
def track(smollm, tmp_path_factory):
    from challenge.track import build_track, get_spec, load_track

    d = tmp_path_factory.mktemp("gen_track") / "tiny"
    return load_track(build_track(get_spec("smollm2-135m-l1-tiny"), d, lm=smollm))


@pytest.fixture(scope="module")
def sae(track):
    """A small SAE whose firing frequencies are replaced by distinct values (no ties), with 20
    dead latents, so that the sparsity-nearest sets are unambiguous."""
    cfg = SAEConfig(n_latents=384, k=12, steps=150, batch=128, lr=2e-3, positions="last")
    s, _ = train_sae(track.acts("public"), cfg, progress=False)
    g = torch.Generator().manual_seed(0)
    log = -0.5 - 4.0 * torch.rand(384, generator=g)
    log[torch.randperm(384, generator=g)[:20]] = -10.0
    s.log_sparsity.copy_(log)
    return s


def _make(name, sae):
    cls = GENERATORS[name]
    return cls(sae=sae) if name in SAE_GENS else cls()


@pytest.fixture(scope="module")
def fitted(track, smollm, sae):
    out = {}
    for name in GENERATORS:
        g = _make(name, sae)
        g.fit(track, smollm)
        out[name] = g
    return out


def test_registry_has_every_baseline_and_a_new_one():
    assert REQUIRED <= set(GENERATORS) and len(set(GENERATORS) - REQUIRED) >= 1
    assert "heldout_activations" in GENERATORS["heldout_real"]().uses


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_interface_shape_dtype_determinism(fitted, track, name):
    g = fitted[name]
    assert isinstance(g, Generator) and g.name == name and g.description and g.uses
    a, b, c = g.sample(N, seed=1), g.sample(N, seed=1), g.sample(N, seed=2)
    assert a.shape == (N, track.d_model) and a.dtype == torch.float32
    assert torch.isfinite(a).all() and not a.requires_grad
    assert torch.equal(a, b) and not torch.equal(a, c)


def _brute_nearest(log, alive, j, k):
    cand = alive[alive != j]
    d = (log[cand] - log[j]).abs()
    return set(cand[torch.argsort(d)[:k]].tolist())


def test_sparsity_neighbours_match_brute_force(sae):
    log = sae.log_sparsity
    alive = torch.nonzero(~sae.dead_mask()).flatten()
    nb = sparsity_neighbours(log, alive, 10)
    for j in range(0, 384, 7):
        assert set(nb[j].tolist()) == _brute_nearest(log, alive, j, 10)


def test_reconstruction_is_sae_of_public_rows(fitted, track, sae):
    g: SAEReconstruction = fitted["sae_reconstruction"]
    c = g.compose(N, seed=0)
    with torch.no_grad():
        want = sae(track.acts("public")[c["base"]])
    assert torch.allclose(g.sample(N, seed=0), want, atol=1e-4)


def test_bag_of_features_keeps_count_and_values(fitted, sae):
    g: BagOfFeatures = fitted["bag_of_features"]
    c = g.compose(N, seed=0)
    assert torch.equal((c["ids"] >= 0).sum(1), (c["orig"] >= 0).sum(1))
    assert torch.equal(c["vals"], g.codes.vals[c["base"]])
    dead = sae.dead_mask()
    for row in c["ids"]:
        row = row[row >= 0]
        assert len(set(row.tolist())) == len(row) and not dead[row].any()
    assert not torch.equal(c["ids"], c["orig"])


def test_baseline_swaps_within_ten_sparsity_nearest(fitted, sae):
    g: SAEBaseline = fitted["sae_baseline"]
    c = g.compose(N, seed=0)
    alive = torch.nonzero(~sae.dead_mask()).flatten()
    assert torch.equal(c["vals"], g.codes.vals[c["base"]])
    for orig, new in zip(c["orig"][:12], c["ids"][:12], strict=True):
        for o, n in zip(orig.tolist(), new.tolist(), strict=True):
            if o < 0:
                assert n < 0
                continue
            assert n in _brute_nearest(sae.log_sparsity, alive, o, 10)


def test_structured_anchor_and_cosine_matching(fitted, sae):
    g: Structured = fitted["structured"]
    c = g.compose(N, seed=0)
    W = g.W_unit
    alive = torch.nonzero(~sae.dead_mask()).flatten()
    for b in range(10):
        t, anchor = int(c["top"][b]), int(c["anchor"][b])
        assert t == int(c["orig"][b, 0])  # the base's top latent (largest value)
        cands = torch.tensor(sorted(_brute_nearest(sae.log_sparsity, alive, t, 100)))
        err = ((W[cands] @ W[t]) - 0.42).abs()
        assert anchor == int(cands[err.argmin()])
        assert int(c["ids"][b, 0]) == anchor  # cos(t, t) = 1 is matched by the anchor itself
        ids = c["ids"][b][c["ids"][b] >= 0]
        assert len(set(ids.tolist())) == len(ids)
        # the second latent: the unused alive latent whose cosine with c best matches cos(t, f)
        f1 = int(c["orig"][b, 1])
        want = float(W[t] @ W[f1])
        rest = alive[alive != anchor]
        best = rest[((W[rest] @ W[anchor]) - want).abs().argmin()]
        assert int(c["ids"][b, 1]) == int(best)
    assert torch.equal(c["vals"], g.codes.vals[c["base"]])


def test_single_latent_is_one_scaled_decoder_row(fitted, sae):
    g: SingleLatent = fitted["single_latent"]
    x = g.sample(N, seed=0)
    assert len(torch.unique(x, dim=0)) == N  # distinct latents: no duplicate rows
    lat = x - sae.b_dec.detach()
    assert torch.allclose(lat.norm(dim=1), torch.full((N,), g.scale), rtol=1e-4)
    cos = (lat / lat.norm(dim=1, keepdim=True)) @ g.W_unit.T
    best = cos.max(1)
    assert torch.allclose(best.values, torch.ones(N), atol=1e-4)
    assert not sae.dead_mask()[best.indices].any()
    assert g.scale == pytest.approx(
        float(
            (decode_sparse(sae, g.codes.ids, g.codes.vals) - sae.b_dec.detach()).norm(dim=1).mean()
        ),
        rel=1e-4,
    )


def test_interpolation_and_oracle(fitted, track):
    x = fitted["heldout_real"].sample(N, seed=0)
    held = track.acts("heldout")
    assert ((x[:, None] - held[None]).abs().amax(-1).amin(1) == 0).all()  # exact copies
    y = fitted["interpolation"].sample(N, seed=0)
    pub = track.acts("public")
    assert ((y[:, None] - pub[None]).norm(dim=-1).amin(1) > 1e-2).all()  # never a copy


def test_token_cluster_samples_around_token_means(track, smollm):
    g = TokenCluster(shrink=1e-10)
    g.fit(track, smollm)
    x = g.sample(N, seed=0)
    assert ((x[:, None] - g.means[None]).norm(dim=-1).amin(1) < 1e-3).all()  # onto the means
    tok = track.tokens("public")[:, -1]
    t0 = int(torch.mode(tok).values)
    rows = track.acts("public")[tok == t0]
    i = int((torch.unique(tok) == t0).nonzero())
    assert torch.allclose(g.means[i], rows.mean(0), atol=1e-4)


def test_spliced_prompts_are_new_prompts_the_model_writes(fitted, track):
    g = fitted["spliced_prompts"]
    n = 300  # more than the tiny public split: contexts repeat, splices must not
    p = g.prompts(n, seed=0)
    pub = track.tokens("public")
    assert len(torch.unique(p, dim=0)) == n
    ctx_match = (p[:, None, :-1] == pub[None, :, :-1]).all(-1)  # [n, N]
    assert ctx_match.any(1).all()  # every context is a public prompt's context...
    same_last = p[:, None, -1] == pub[None, :, -1]
    assert not (ctx_match & same_last).any()  # ...followed by a different last token
    x = g.sample(8, seed=0)
    want = g.engine.clean(g.prompts(8, seed=0), read=False)["write"]
    assert torch.allclose(x, want)
    u = fitted["unigram_prompts"].prompts(50, seed=0)
    assert torch.isin(u, pub.flatten()).all()


def test_sae_generator_trains_a_missing_sae_inside_its_no_grad_fit(track, monkeypatch, tmp_path):
    """On a fresh machine (empty cache) the first SAE generator trains the track's SAE; its fit
    runs under no_grad, which training must not inherit (this broke `plateau main` once)."""
    monkeypatch.setenv("PLATEAU_CACHE", str(tmp_path))
    cfg = SAEConfig(kind="topk", n_latents=64, k=4, steps=20, batch=64, positions="last")
    g = SAEReconstruction(sae_cfg=cfg)
    with torch.no_grad():
        g.fit(track, None)
    assert list(tmp_path.glob("saes/*/*/*/sae_weights.safetensors"))  # trained and cached
    assert g.sample(8, seed=0).shape == (8, track.d_model)
