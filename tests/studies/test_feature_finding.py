"""Feature finding: matrix-free Jacobian products, and sensitive directions beat random ones."""

import json

import numpy as np
import pytest
import torch

from challenge.directions import isotropic
from challenge.protocols import P3Config, p3_lengths, p3_probe
from challenge.rng import subset
from challenge.studies.feature_finding import cycle, max_abs_cosine, pca_directions
from challenge.studies.sensitive_directions import (
    full_jacobian,
    global_jacobian_directions,
    jtj_matvec,
    local_jacobian_directions,
    optimised_directions,
)


@pytest.fixture(scope="module")
def track(tiny_track):
    return tiny_track


@pytest.fixture(scope="module")
def eng(track, smollm):
    return track.engine(smollm, progress=False)


def _out(eng, t, p):
    with torch.no_grad():
        return eng.forward(t, p)


@pytest.mark.parametrize("metric", ["l2", "fisher"])
def test_matrix_free_products(track, eng, metric):
    """J v against central differences; J^T (J v) (Fisher-weighted) against plain autograd."""
    t, x = track.tokens("public")[:1], track.acts("public")[:1]
    V = torch.randn(1, 2, x.shape[1], generator=torch.Generator().manual_seed(0))
    jv, jtjv = jtj_matvec(eng, t, x, V, metric)
    key = "read" if metric == "l2" else "logits"
    eps = 1e-2
    fd = (_out(eng, t, x[:, None] + eps * V)[key] - _out(eng, t, x[:, None] - eps * V)[key]) / (
        2 * eps
    )
    assert float((fd - jv).norm() / jv.norm()) < 5e-3
    pts = x[:, None].expand(-1, 2, -1).clone().requires_grad_(True)  # [1, 2, d]
    out = eng.forward(t, pts)[key]
    cot = jv
    if metric == "fisher":
        p = torch.softmax(out.detach(), -1)
        cot = p * jv - p * (p * jv).sum(-1, keepdim=True)
    (g,) = torch.autograd.grad((out * cot).sum(), pts)
    assert torch.allclose(jtjv, g, rtol=1e-4, atol=1e-5 * float(g.abs().max()))
    assert ((jtjv * V).sum(-1) >= 0).all()  # positive semi-definite


@pytest.mark.slow
def test_full_jacobian_matches_matrix_free(track, eng):
    t, x = track.tokens("public")[:1], track.acts("public")[:1]
    J = full_jacobian(eng, t[0], x[0]).double()
    V = torch.randn(1, 2, x.shape[1], generator=torch.Generator().manual_seed(0))
    jv, _ = jtj_matvec(eng, t, x, V)
    want = V[0].double() @ J.T
    assert torch.allclose(jv[0].double(), want, rtol=1e-3, atol=1e-3 * float(want.abs().max()))


def test_global_directions_are_orthonormal_eigenvectors(track, eng):
    pub_t, pub_a = track.tokens("public"), track.acts("public")
    j = subset(len(pub_a), 3, 0, "feature_finding.jacobian_rows")  # seed 0 + offset 1
    U, evals = global_jacobian_directions(
        eng, pub_t[j], pub_a[j], k=2, oversample=1, iters=1, metric="l2", progress=False
    )
    assert U.shape == (2, 576) and evals[0] >= evals[1] > 0
    assert torch.allclose(U @ U.T, torch.eye(2), atol=1e-4)
    _, y = jtj_matvec(eng, pub_t[j], pub_a[j], U[None].expand(3, -1, -1).contiguous())
    rq = (y.mean(0) * U).sum(-1)  # Rayleigh quotients of M = mean_p J_p^T J_p
    assert torch.allclose(rq, evals, rtol=0.05)


@pytest.mark.parametrize(
    "metric,curve", [("fisher", "kl"), pytest.param("l2", "l2", marks=pytest.mark.slow)]
)
def test_jacobian_top_direction_is_more_sensitive_than_isotropic(track, eng, metric, curve):
    """On real context activations, each base's top Jacobian direction (KL via the Fisher
    metric, or read-out L2) moves the output more than isotropic directions, at every small
    length of the P3 grid."""
    ctx_t, ctx_a = track.tokens("context"), track.acts("context")
    idx = subset(len(ctx_a), 6, 0, "p3.contexts")
    U, S = local_jacobian_directions(
        eng, ctx_t[idx], ctx_a[idx], iters=3, block=2, metric=metric, progress=False
    )
    assert torch.allclose(U.norm(dim=1), torch.ones(6), atol=1e-5) and (S > 0).all()
    lengths = p3_lengths(P3Config(), track.units)[:16:3]  # small lengths: the linear regime
    dirs = {"jac": U, "iso": isotropic(6, 576, 0)}
    curves, _ = p3_probe(eng, ctx_t[idx], ctx_a[idx], dirs, lengths)
    jac = np.median(curves["jac"][curve], 0)[1:]
    iso = np.median(curves["iso"][curve], 0)[1:]
    assert (jac > 3 * iso).all()


def test_optimised_direction_beats_random_at_its_radius(track, eng):
    t, x = track.tokens("context")[:3], track.acts("context")[:3]
    r = 0.1 * track.units["write_norm_median"]
    u, val = optimised_directions(eng, t, x, r, "l2", steps=6, restarts=2, progress=False)
    assert torch.allclose(u.norm(dim=1), torch.ones(3), atol=1e-5)
    rnd = isotropic(3, 576, 5)
    with torch.no_grad():
        base = eng.forward(t, x[:, None])["read"][:, 0]
        moved = eng.forward(t, (x + r * rnd)[:, None])["read"][:, 0]
    assert (val > (moved - base).norm(dim=1)).all()


def test_pca_cycle_and_max_cosine():
    g = torch.Generator().manual_seed(0)
    acts = torch.randn(300, 20, generator=g) * torch.linspace(5, 0.1, 20)
    P, var = pca_directions(acts, 3)
    assert torch.allclose(P @ P.T, torch.eye(3), atol=1e-5) and var[0] > var[1] > var[2]
    W = torch.randn(50, 20, generator=g)
    mc = max_abs_cosine(-3 * W[:5], W)
    assert torch.allclose(mc[:, 0], torch.ones(5), atol=1e-5)
    assert mc[:, 1].long().tolist() == [0, 1, 2, 3, 4]
    c = cycle(P, 7, seed=0)
    assert torch.allclose((c * P[torch.arange(7) % 3]).sum(1).abs(), torch.ones(7), atol=1e-5)


def test_run_writes_a_result_whose_headline_is_read_from_the_detail(tiny_track, smollm, tmp_path):
    from challenge.sae import SAEConfig, save_sae, train_sae
    from challenge.schemas import validate
    from challenge.studies import make_env
    from challenge.studies.feature_finding import FeatureFindingConfig, run

    sae, _ = train_sae(
        tiny_track.acts("public"), SAEConfig(n_latents=64, k=8, steps=20, batch=64), progress=False
    )
    cfg = FeatureFindingConfig(
        track=str(tiny_track.path),
        sae=str(save_sae(sae, tmp_path / "sae")),
        n_base=3,
        n_jac=2,
        k=2,
        oversample=1,
        iters=1,
        local_iters=1,
        opt_steps=1,
        opt_restarts=1,
        metrics=("fisher",),
        objectives=("kl",),
        n_random=8,
        out=tmp_path,
        progress=False,
    )
    res = run(cfg, env=make_env(tiny_track, smollm))
    name = f"{tiny_track.spec.track_id}_feature_finding"
    assert res.path == tmp_path / f"{name}.json" and res.kind == "feature_finding"
    for ext in ("npz", "png", "md"):
        assert (tmp_path / f"{name}.{ext}").stat().st_size > 0
    doc = json.loads(res.path.read_text())
    validate(doc, "feature_finding_result")
    d = res.detail
    assert d["n_base"] == 3 and set(res.headline.agreement) == set(d["agreement"])
    for kind, s in d["sensitivity"].items():
        assert res.headline.length_to_kl_threshold_rel[kind] == s["length_to_kl_threshold_rel"]
        assert res.headline.top1_changed_at_max[kind] == s["top1_changed_at_max"]
        assert len(s["median_kl"]) == len(d["lengths"])
    assert {"jacobian_fisher_global_top1", "jacobian_fisher_local", "optimised_kl"} <= set(
        d["sensitivity"]
    )
    assert res.headline.max_cos_median["pca"] == d["alignment"]["pca"]["max_cos_median"]
    U = torch.as_tensor(np.load(tmp_path / f"{name}.npz")["dir_jacobian_fisher_global"])
    assert torch.allclose(U @ U.T, torch.eye(2), atol=1e-4)
