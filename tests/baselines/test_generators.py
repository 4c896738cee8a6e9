"""Baseline generators: the interface, determinism, and each published recipe's defining property."""

import numpy as np
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
    _rows,
    decode_sparse,
    sparsity_neighbours,
)
from challenge.directions import as_generator
from challenge.sae import SAEConfig, train_sae
from challenge.submission import Generator

N = 48
U32 = float(np.finfo(np.float32).eps) / 2  # unit roundoff
U64 = float(np.finfo(np.float64).eps) / 2


def gamma(n: int, u: float = U32) -> float:
    """Higham's gamma_n = n u / (1 - n u): relative error bound of an n-term sum or dot."""
    return n * u / (1 - n * u)


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
SAE_GENS += tuple(f"e2e_{n}" for n in SAE_GENS)  # the same recipes on an e2e SAE (here: given)


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
    with torch.no_grad():  # the public split in one batch, as the generator encodes it
        f = sae.encode(track.acts("public"))[c["base"]]
    live = c["ids"] >= 0
    vals = torch.where(live, c["vals"], torch.zeros_like(c["vals"]))
    dense = torch.zeros_like(f).scatter(1, c["ids"].clamp_min(0), vals)
    assert torch.equal(dense, f)  # the codes are exactly the SAE's codes of the base rows
    x = g.sample(N, seed=0).double()
    with torch.no_grad():
        want = sae.decode(f).double()
    # both sides sum the same terms v_j W_dec[j] (j active) and b_dec in float32: decode_sparse
    # K + 1 terms, the dense decode n_latents + 1 (inactive terms are exact zeros); each sum is
    # within gamma_{n-1} sum |terms| of the exact one
    terms = vals.double()[:, :, None] * sae.W_dec.detach().double()[c["ids"].clamp_min(0)]
    mag = terms.abs().sum(1) + sae.b_dec.detach().double().abs()
    bound = (gamma(c["ids"].shape[1] + 1) + gamma(sae.n_latents + 1)) * mag
    assert ((x - want).abs() <= bound).all()


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
    b = sae.b_dec.detach()
    lat = x - b
    # x = fl(b + fl(s w)) with ||w|| = 1 within gamma_d + u (w = W / fl(||W||)); removing b
    # again rounds once more: |lat_i - s w_i| <= u (3 s |w_i| + |b_i|) to first order, so
    # ||lat|| is s within s (gamma_d + u) + u (3 s + ||b||), and its own norm adds gamma_d
    s, d = g.scale, x.shape[1]
    off = U32 * (3 * s + float(b.norm()))
    bound = s * (2 * gamma(d) + U32) + off
    assert ((lat.norm(dim=1).double() - s).abs() <= bound).all()
    cos = (lat / lat.norm(dim=1, keepdim=True)) @ g.W_unit.T
    best = cos.max(1)
    # the cosine with its own row: the direction is off by at most off / s (first order), the
    # two unit norms by gamma_d + u each and the dot rounds by gamma_d
    assert ((best.values.double() - 1).abs() <= 3 * gamma(d) + 2 * U32 + off / s).all()
    assert not sae.dead_mask()[best.indices].any()
    # the same computation as in fit: exact
    assert g.scale == float((decode_sparse(sae, g.codes.ids, g.codes.vals) - b).norm(dim=1).mean())


def test_interpolation_and_oracle(fitted, track):
    x = fitted["heldout_real"].sample(N, seed=0)
    held = track.acts("heldout")
    assert ((x[:, None] - held[None]).abs().amax(-1).amin(1) == 0).all()  # exact copies
    y = fitted["interpolation"].sample(N, seed=0)
    pub = track.acts("public")
    # never a copy: farther from every public row than the rounding of the mixture itself
    # ((1 - a) x_i + a x_j rounds each coordinate by at most 2 u max|x|)
    copy = 2 * U32 * float(pub.abs().max()) * pub.shape[1] ** 0.5
    assert ((y[:, None] - pub[None]).norm(dim=-1).amin(1) > copy).all()


def test_token_cluster_samples_around_token_means(track, smollm):
    g = TokenCluster(shrink=1e-10)
    g.fit(track, smollm)
    x = g.sample(N, seed=0)
    # x - m_t = sqrt(1 + 1/n_t) z C^T with C the (shrunk) Cholesky factor and z ~ N(0, I_d):
    # ||x - m_t|| <= sqrt(2) sigma_max(C) ||z||, and ||z||^2 ~ chi^2_d stays below d + 10 sd
    # (sd = sqrt(2 d); exceeded with probability < 1e-15); float32 adds u ||m_t|| per term
    d = x.shape[1]
    z_max = (d + 10 * (2 * d) ** 0.5) ** 0.5
    radius = 2**0.5 * float(torch.linalg.matrix_norm(g.chol.double(), ord=2)) * z_max
    radius += 2 * U32 * float(g.means.norm(dim=1).max())
    assert ((x[:, None] - g.means[None]).norm(dim=-1).amin(1) <= radius).all()  # onto the means
    tok = track.tokens("public")[:, -1]
    t0 = int(torch.mode(tok).values)
    rows = track.acts("public")[tok == t0].double()
    i = int((torch.unique(tok) == t0).nonzero())
    # the mean in float64 (any summation order: within gamma_n of the exact), then one float32
    # rounding
    want = rows.mean(0)
    bound = U32 * want.abs() + 2 * gamma(len(rows), U64) * rows.abs().mean(0)
    assert ((g.means[i].double() - want).abs() <= bound).all()


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
    assert torch.equal(x, want)  # the same clean run
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


def test_the_library_does_not_import_the_baselines():
    """Generators reach the library as arguments (the CLI passes ``GENERATORS`` in)."""
    from pathlib import Path

    import challenge

    root = Path(challenge.__file__).parent
    for p in root.rglob("*.py"):
        if "cli" in p.relative_to(root).parts:
            continue
        for line in p.read_text().splitlines():
            code = line.split("#")[0]
            assert not code.lstrip().startswith(("import baselines", "from baselines")), p


def test_noisy_copy_is_a_public_row_moved_by_a_tenth_of_its_norm(fitted, track):
    """The copier's bar (docs/integrity.md): each row is a distinct public row plus noise of
    exactly 10 % of its norm, drawn from the public covariance (so mostly in the directions real
    rows vary along)."""
    g = fitted["noisy_copy"]
    x = g.sample(N, seed=0).double()
    pub = track.acts("public").double()
    src = _rows(N, len(pub), as_generator(0))  # the generator's own draw of source rows
    assert len(set(src.tolist())) == N  # without replacement
    e = x - pub[src]
    ratio = e.norm(dim=1) / pub[src].norm(dim=1)
    # x = fl32(x64 + e64): the stored row errs by <= u |x| per coordinate (u = 2^-24)
    tol = U32 * x.norm(dim=1) / pub[src].norm(dim=1) * 2
    assert ((ratio - 0.10).abs() <= tol).all()
    # the noise lies in the high-variance directions: its mean projection on the top-10
    # principal directions of the public rows exceeds an isotropic direction's by far
    pc = torch.linalg.svd(pub - pub.mean(0), full_matrices=False).Vh[:10]
    share = ((e @ pc.T).norm(dim=1) / e.norm(dim=1)) ** 2
    assert share.mean() > 5 * 10 / track.d_model
    assert getattr(GENERATORS["noisy_copy"], "reference", False)  # not ranked
