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

U32 = 2.0**-24  # float32 unit roundoff
U64 = 2.0**-53  # float64 unit roundoff
D = 576  # SmolLM2-135M's d_model


def gamma(n: int, u: float = U32) -> float:
    """Higham's gamma_n = n u / (1 - n u): relative error bound of an n-term sum or dot."""
    return n * u / (1 - n * u)


def ad_error(model) -> float:
    """First-order relative float32 error of a Jacobian product through the engine's tail: each
    of the L blocks after the write point (blocks 1..29) perturbs its output by at most
    gamma_K relative, K = d_mlp the longest reduction (matvecs of d_model / d_mlp terms), and
    to first order these add: L gamma_K (~2.7e-3)."""
    return (model.cfg.n_layers - 1) * gamma(model.cfg.d_mlp)


def gram_bound(d: int) -> float:
    """|U U^T - I| for rows unit(fl32(Q E)), Q E orthonormal in float64: the cast rounds each
    entry by u, unit() divides by a float32 norm of d terms (gamma_{d+1}) and rounds (u), so
    each row is an orthonormal row perturbed by <= gamma_{d+3} relative (2 gamma_{d+3} on a
    Gram entry), the float32 Gram dot of d terms adds gamma_d, and float64 QR / eigh leave
    orthogonality within gamma_{d^2}(u64)."""
    return 2 * gamma(d + 3) + gamma(d) + gamma(d * d, U64)


def unit_norm_bound(d: int) -> float:
    """| ||unit(v)|| - 1 | for a float32 unit() of d entries, its norm taken in float64: the
    float32 norm of d terms errs by gamma_{d+1} (sum of squares and sqrt), the division by u
    per entry."""
    return gamma(d + 2)


@pytest.fixture(scope="module")
def track(tiny_track):
    return tiny_track


@pytest.fixture(scope="module")
def eng(track, smollm):
    return track.engine(smollm, progress=False)


@pytest.fixture(scope="module")
def eng64(track):
    """The track's engine on a float64 copy of the model: its products differ from the exact
    ones by float64 rounding (~2^29 below float32's) plus one rounding to float32 where
    ``jtj_matvec`` / ``full_jacobian`` cast their outputs, so comparisons there need no
    float32 tolerance."""
    from challenge.models import load_model

    lm = load_model("smollm2-135m", device="cpu")
    lm.model.to(torch.float64)
    return track.engine(lm, progress=False)


def _out(eng, t, p):
    with torch.no_grad():
        return eng.forward(t, p)


@pytest.mark.parametrize("metric", ["l2", "fisher"])
def test_matrix_free_products(track, eng, eng64, metric):
    """J v against central differences; J^T (J v) (Fisher-weighted) against plain autograd."""
    t, x = track.tokens("public")[:1], track.acts("public")[:1]
    V = torch.randn(1, 2, x.shape[1], generator=torch.Generator().manual_seed(0))
    jv, jtjv = jtj_matvec(eng, t, x, V, metric)
    jv64, jtjv64 = jtj_matvec(eng64, t, x, V, metric)
    key = "read" if metric == "l2" else "logits"
    model = eng64.model
    LK = (model.cfg.n_layers - 1) * model.cfg.d_mlp  # reductions along the tail, for float64

    def f(h):  # the float64 forward at x + h V (points formed in float64: no float32 step)
        return _out(eng64, t, x.double()[:, None] + h * V.double())[key]

    eps = 1e-2
    fd1 = (f(eps) - f(-eps)) / (2 * eps)
    fd2 = (f(2 * eps) - f(-2 * eps)) / (4 * eps)
    # Taylor: fd(h) = J v + h^2/6 f^(3) + O(h^4) and fd(2h) - fd(h) = h^2/2 f^(3) + O(h^4), so
    # the remainder is ||fd(2h) - fd(h)|| / 3 to leading order (x2 covers the O(h^4) rest); f's
    # float64 rounding (gamma_{LK}(u64) |f|) enters divided by h, and jv64 was rounded to
    # float32 once (u32 |jv|)
    taylor = float((fd2 - fd1).norm()) / 3
    fround = gamma(LK, U64) * float((f(eps).abs() + f(-eps).abs()).norm()) / (2 * eps)
    bound = 2 * taylor + fround + U32 * float(jv64.norm())
    assert float((fd1 - jv64.double()).norm()) <= bound
    # the float32 product is the float64 one within the tail's first-order float32 error
    err = ad_error(model)
    assert float((jv - jv64).norm()) <= err * float(jv64.norm())

    def autograd_grad(e, jv_):
        pts = x[:, None].expand(-1, 2, -1).clone().requires_grad_(True)  # [1, 2, d]
        out = e.forward(t, pts)[key]
        cot = jv_
        if metric == "fisher":  # as jtj_matvec forms it, from float32 p and jv
            p = torch.softmax(out.detach().float(), -1)
            cot = p * jv_ - p * (p * jv_).sum(-1, keepdim=True)
        (g,) = torch.autograd.grad((out * cot).sum(), pts)
        return g

    # float64: torch.func.vjp and autograd take the same cotangent (d sum(out * c) / d out = c
    # exactly) through the same float64 backward, each rounded to float32 once at the end
    # (u32 |g| each); the backward's float64 rounding is gamma_{LK}(u64) of the largest
    # component; for fisher, p from the jvp's primal may differ from the plain forward's by an
    # ulp after the float32 cast, moving g by u32 of its largest component
    g64 = autograd_grad(eng64, jv64)
    gmax = float(g64.abs().max())
    extra = U32 * gmax if metric == "fisher" else 0.0
    bound = 2 * U32 * g64.abs() + gamma(LK, U64) * gmax + extra
    assert ((jtjv64 - g64).abs() <= bound).all()
    # float32: two float32 evaluations of the same J^T c, each within the tail's first-order
    # float32 error of the exact one (the float64 one here)
    g = autograd_grad(eng, jv)
    assert float((jtjv - g).norm()) <= 2 * err * float(g.norm())
    assert float((jtjv - jtjv64).norm()) <= err * float(jtjv64.norm())
    assert ((jtjv * V).sum(-1) >= 0).all()  # positive semi-definite


@pytest.mark.slow
def test_full_jacobian_matches_matrix_free(track, eng, eng64):
    t, x = track.tokens("public")[:1], track.acts("public")[:1]
    V = torch.randn(1, 2, x.shape[1], generator=torch.Generator().manual_seed(0))
    # float64 model: reverse mode (full_jacobian) and forward mode (jtj_matvec) are each exact
    # up to float64 rounding and one cast to float32 (u32 per entry of J and of J v); the
    # float64 product V J^T adds gamma_d(u64):
    # |J v - V J^T| <= u32 |J v| + (2 u32 + gamma_d(u64)) |V| |J|^T
    J64 = full_jacobian(eng64, t[0], x[0]).double()
    jv64, _ = jtj_matvec(eng64, t, x, V)
    absprod = V[0].double().abs() @ J64.abs().T
    want64 = V[0].double() @ J64.T
    bound = U32 * jv64[0].double().abs() + (2 * U32 + gamma(x.shape[1], U64)) * absprod
    assert ((jv64[0].double() - want64).abs() <= bound).all()
    # float32: both modes are within the tail's first-order float32 error of the exact product
    J = full_jacobian(eng, t[0], x[0]).double()
    jv, _ = jtj_matvec(eng, t, x, V)
    want = V[0].double() @ J.T
    absprod = V[0].double().abs() @ J.abs().T
    bound = (2 * ad_error(eng.model) + gamma(x.shape[1], U64)) * absprod
    assert ((jv[0].double() - want).abs() <= bound).all()


def test_global_directions_are_orthonormal_eigenvectors(track, eng):
    pub_t, pub_a = track.tokens("public"), track.acts("public")
    j = subset(len(pub_a), 3, 0, "feature_finding.jacobian_rows")  # seed 0 + offset 1
    U, evals = global_jacobian_directions(
        eng, pub_t[j], pub_a[j], k=2, oversample=1, iters=1, metric="l2", progress=False
    )
    assert U.shape == (2, 576) and evals[0] >= evals[1] > 0
    assert ((U @ U.T - torch.eye(2)).abs() <= gram_bound(D)).all()
    _, y = jtj_matvec(eng, pub_t[j], pub_a[j], U[None].expand(3, -1, -1).contiguous())
    rq = (y.mean(0) * U).sum(-1)  # Rayleigh quotients of M = mean_p J_p^T J_p
    # Rayleigh-Ritz: U's rows are Ritz vectors Q e_i of T = Q^T M Q, so u_i^T M u_i is the Ritz
    # value exactly, not an approximation; what differs is rounding: M applied in float32 to Q
    # and to Q E (each within the tail's first-order error at the scale ||M|| = lambda_1; the
    # mean of 3, the dot of d terms and unit() add gamma_{d+6}), and evals' cast (u32)
    err = ad_error(eng.model) + gamma(D + 6)
    assert ((rq - evals).abs() <= 2 * err * float(evals[0]) + U32 * evals.abs()).all()


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
    # unit() in float32 (see unit_norm_bound); the norm here is taken in float64
    assert ((U.double().norm(dim=1) - 1).abs() <= unit_norm_bound(D)).all() and (S > 0).all()
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
    assert ((u.double().norm(dim=1) - 1).abs() <= unit_norm_bound(D)).all()  # float32 unit()
    rnd = isotropic(3, 576, 5)
    with torch.no_grad():
        base = eng.forward(t, x[:, None])["read"][:, 0]
        moved = eng.forward(t, (x + r * rnd)[:, None])["read"][:, 0]
    assert (val > (moved - base).norm(dim=1)).all()


def test_pca_cycle_and_max_cosine():
    g = torch.Generator().manual_seed(0)
    acts = torch.randn(300, 20, generator=g) * torch.linspace(5, 0.1, 20)
    P, var = pca_directions(acts, 3)
    d = acts.shape[1]
    # P: float64 SVD rows (orthonormal within gamma_{n d}(u64)) cast to float32 (u per entry,
    # 2u on a Gram entry), then a float32 Gram dot of d terms (gamma_d)
    pca_gram = 2 * U32 + U32**2 + gamma(d) + gamma(300 * d, U64)
    assert ((P @ P.T - torch.eye(3)).abs() <= pca_gram).all() and var[0] > var[1] > var[2]
    W = torch.randn(50, 20, generator=g)
    mc = max_abs_cosine(-3 * W[:5], W)
    # -3 W rounds by u per entry; each unit() row is within gamma_{d+2} of norm 1 (a float32
    # norm and a division); their float32 dot of d terms adds gamma_d
    assert ((mc[:, 0].double() - 1).abs() <= U32 + 2 * gamma(d + 2) + gamma(d)).all()
    assert mc[:, 1].long().tolist() == [0, 1, 2, 3, 4]
    c = cycle(P, 7, seed=0)
    # the signs are exact (+-1), so this is the float32 sum of squares of a row of P: that row
    # has norm 1 within u + gamma_{n d}(u64) (the cast), and the sum of d terms adds gamma_d
    sq = (c * P[torch.arange(7) % 3]).sum(1).abs().double()
    assert ((sq - 1).abs() <= pca_gram).all()


def test_run_writes_a_result_whose_headline_is_read_from_the_detail(tiny_track, smollm, tmp_path):
    from challenge.sae import SAEConfig, save_sae, train_sae
    from challenge.schemas import validate
    from challenge.studies import make_env
    from challenge.studies.feature_finding import FeatureFindingConfig, run

    sae, _ = train_sae(
        tiny_track.acts("public"), SAEConfig(n_latents=64, k=8, steps=20, batch=64), progress=False
    )
    cfg = FeatureFindingConfig(
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
        progress=False,
    )
    res = run(cfg, make_env(tiny_track, smollm), out=tmp_path)
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
    assert ((U @ U.T - torch.eye(2)).abs() <= gram_bound(D)).all()
