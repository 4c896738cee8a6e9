"""Joint probes (``challenge.joint_probes``) and the attack constructions
(``challenge.constructions``): the board's probe config and features are unchanged by them; each
joint probe's features on the tiny track; the Fisher power iteration on an analytic stand-in;
the glued and quantile-matched constructions on planted data."""

import json
import math
from dataclasses import asdict
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from challenge.constructions import block_correlations, glue_probes, quantile_match
from challenge.directions import ActivationStats, gaussian_like
from challenge.errors import ConfigError
from challenge.joint_probes import (
    JOINT_PROBES,
    JointProbes,
    fisher_top,
    joint_features,
    sae_directions,
)
from challenge.neighbours import nearest
from challenge.probes import ProbeConfig, radius, run_probes
from challenge.sae.model import SAE
from challenge.scoring import ScoreConfig
from challenge.scoring.probing import make_slots

BOARD_PROBE_JSON = {
    "probes": ["radius", "p2", "p2dir"],
    "n_directions": 6,
    "radius_kl": 0.1,
    "r_min": 0.02,
    "r_max": 3.0,
    "bisect_steps": 7,
    "ap_points": 100,
    "ap_chunk": 25,
    "p1_steps": 30,
    "p2_steps": 21,
}


def test_the_boards_probe_config_serialises_as_before():
    """The joint probes' options live in ``JointProbes``: ``ProbeConfig`` (every record's and
    the board's identity) keeps its fields and JSON."""
    board = json.loads(json.dumps(asdict(ScoreConfig().probes)))
    assert board == BOARD_PROBE_JSON
    assert sorted(vars(ProbeConfig())) == sorted(BOARD_PROBE_JSON)
    joint = JointProbes(probes=JOINT_PROBES)
    assert not set(asdict(joint)) - {"probes", "sae_latents", "fisher_iters", "fisher_step"}
    assert JointProbes().probes == ()
    for kwargs, field in [
        ({"probes": ("hessian",)}, "probes"),
        ({"probes": ("radius",)}, "probes"),
        ({"sae_latents": 0}, "sae_latents"),
        ({"fisher_iters": 0}, "fisher_iters"),
        ({"fisher_step": 0.0}, "fisher_step"),
    ]:
        with pytest.raises(ConfigError) as e:
            JointProbes(**kwargs)
        assert e.value.field == field, kwargs


class LinearLogits:
    """Stands in for ``PerturbationEngine.forward``: logits ``W x`` (the central difference of
    ``J u`` is then exact), so the Fisher matrix at ``v`` is ``W^T (diag p - p p^T) W``."""

    def __init__(self, W):
        self.W, self.cfg = W, SimpleNamespace(max_rows=1024)

    def forward(self, tokens, points):
        return {"logits": points @ self.W.T}


def test_fisher_power_iteration_finds_the_top_eigenpair():
    g = torch.Generator().manual_seed(0)
    d, V, n = 8, 30, 5
    W = torch.randn(V, d, generator=g, dtype=torch.float64).float()
    points = torch.randn(n, d, generator=g)
    start = torch.randn(n, d, generator=g)
    top = fisher_top(LinearLogits(W), torch.zeros(n, 1), points, start, iters=200, step=0.01)
    for i in range(n):
        p = (W.double() @ points[i].double()).softmax(-1)
        F = W.double().T @ (torch.diag(p) - torch.outer(p, p)) @ W.double()
        lam, vec = torch.linalg.eigh(F)
        assert top.lam[i] == pytest.approx(lam[-1].item(), rel=1e-3)
        assert abs((top.u[i].double() @ vec[:, -1]).item()) == pytest.approx(1.0, abs=1e-3)
    assert top.u.norm(dim=-1).sub(1).abs().max() < 1e-5
    # one iteration: the Rayleigh quotient of the (normalised) start
    one = fisher_top(LinearLogits(W), torch.zeros(n, 1), points, start, iters=1, step=0.01)
    u0 = start / start.norm(dim=-1, keepdim=True)
    p0 = (points.double() @ W.double().T).softmax(-1)
    ju = u0.double() @ W.double().T
    want = (p0 * ju**2).sum(-1) - (p0 * ju).sum(-1) ** 2
    np.testing.assert_allclose(one.lam, want.numpy(), rtol=1e-4)


def _random_sae(d: int, n_latents: int = 64, k: int = 8, seed: int = 0) -> SAE:
    g = torch.Generator().manual_seed(seed)
    sae = SAE(d, n_latents, "topk", k)
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(d, n_latents, generator=g) * 0.1)
        w = torch.randn(n_latents, d, generator=g)
        sae.W_dec.copy_(w / w.norm(dim=-1, keepdim=True) * 1.5)  # not unit: normalised in use
    return sae


JOINT_BOARD = ProbeConfig(probes=("radius", "p2"), n_directions=3, bisect_steps=4, p2_steps=5)
JOINT = JointProbes(probes=JOINT_PROBES, sae_latents=2, fisher_iters=2)


@pytest.fixture(scope="module")
def joint_tiny(smollm, tiny_track):
    """6 held-out real rows and 6 N(mu, Sigma) rows probed with and without the joint probes."""
    real = tiny_track.acts("heldout")[tiny_track.reference_rows()][:6]
    stats = ActivationStats.fit(tiny_track.acts("public"))
    points = torch.cat([real, gaussian_like(stats, 6, torch.Generator().manual_seed(5))])
    slots = make_slots(tiny_track, len(points), ScoreConfig(probes=JOINT_BOARD, contexts_per_row=1))
    eng = tiny_track.engine(smollm, progress=False)
    public, units = tiny_track.acts("public"), tiny_track.units
    sae = _random_sae(tiny_track.d_model)
    base = run_probes(eng, points, slots, public, units, JOINT_BOARD)
    full = run_probes(eng, points, slots, public, units, JOINT_BOARD, joint=JOINT, sae=sae)
    return SimpleNamespace(
        points=points, slots=slots, eng=eng, public=public, units=units, sae=sae, base=base,
        full=full,
    )  # fmt: skip


def test_joint_probes_leave_the_boards_features_bit_for_bit(joint_tiny):
    base, full = joint_tiny.base, joint_tiny.full
    assert sorted(base) == [
        "p2.sharpness_kl", "p2.sharpness_l2", "radius.max_log", "radius.mean_log",
        "radius.min_log",
    ]  # fmt: skip
    for k, v in base.items():
        assert np.array_equal(full[k], v, equal_nan=True), k
    # an empty JointProbes is no joint probe at all
    j = joint_tiny
    none = run_probes(j.eng, j.points, j.slots, j.public, j.units, JOINT_BOARD, joint=JointProbes())
    assert sorted(none) == sorted(base)
    assert all(np.array_equal(none[k], base[k], equal_nan=True) for k in base)


def test_joint_probe_features_shapes_and_finiteness(joint_tiny):
    full, n = joint_tiny.full, len(joint_tiny.points)
    want = {
        "p2dir.toward_log", "p2dir.away_log", "p2dir.frac_log", "sae.plus_log", "sae.minus_log",
        "sae.off_log", "fisher.eig_log", "fisher.kl_log", "fisher.kl_asym", "fisher.p2_cos",
        "joint.toward_vs_iso", "joint.away_vs_iso", "joint.sae_vs_iso", "joint.fisher_aniso",
        "joint.sharp_per_plateau",
    }  # fmt: skip
    assert want == set(full) - set(joint_tiny.base)
    for k in want:
        assert full[k].shape == (n,) and full[k].dtype == np.float64, k
        assert np.isfinite(full[k]).all(), k
    lo, hi = math.log(JOINT_BOARD.r_min), math.log(JOINT_BOARD.r_max)
    for k in ("p2dir.toward_log", "p2dir.away_log", "sae.plus_log", "sae.minus_log"):
        assert ((full[k] > lo) & (full[k] < hi)).all(), k
    assert ((full["fisher.p2_cos"] >= 0) & (full["fisher.p2_cos"] <= 1 + 1e-6)).all()
    # the stiffest direction is stiffer than the isotropic directions' mean curvature
    assert np.median(full["joint.fisher_aniso"]) > 0
    # the quadratic prediction of the radius along it is within a factor ~e of the KL level
    assert np.abs(np.median(full["fisher.kl_log"])) < 1.0
    # the derived features are joint_features of the raw ones
    raw_feats = {k: v for k, v in full.items() if not k.startswith("joint.")}
    for k, v in joint_features(raw_feats, JOINT_BOARD.radius_kl).items():
        assert np.array_equal(full[k], v, equal_nan=True), k


def test_the_p2_direction_radius_is_the_radius_probe_along_it(joint_tiny):
    j = joint_tiny
    near = j.public[nearest(j.points, j.public)[1]]
    delta = near.double() - j.points.double()
    dist = delta.norm(dim=-1)
    u = (delta / dist[:, None]).float()  # the unit vector toward the nearest public row
    norm = j.units["write_norm_median"]
    r = radius(
        j.eng,
        j.slots.tokens,
        j.points,
        torch.stack([u, -u], dim=1),
        JOINT_BOARD.r_min * norm,
        JOINT_BOARD.r_max * norm,
        JOINT_BOARD.radius_kl,
        JOINT_BOARD.bisect_steps,
    )
    assert np.array_equal(j.full["p2dir.toward_log"], np.log(r[:, 0] / norm))
    assert np.array_equal(j.full["p2dir.away_log"], np.log(r[:, 1] / norm))
    np.testing.assert_allclose(j.full["p2dir.frac_log"], np.log(r[:, 0] / dist.numpy()), rtol=1e-12)


def test_sae_directions_are_the_top_latents_unit_decoder_rows(joint_tiny):
    sae, pts = joint_tiny.sae, joint_tiny.points
    dirs, size = sae_directions(sae, pts, 2)
    f = sae.encode(pts).detach()
    top = (f * sae.W_dec.norm(dim=-1).detach()).topk(2, dim=-1)
    want = sae.W_dec.detach()[top.indices]
    torch.testing.assert_close(dirs, want / want.norm(dim=-1, keepdim=True))
    np.testing.assert_allclose(size, top.values.double().numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="SAE"):
        j = joint_tiny
        run_probes(
            j.eng, j.points, j.slots, j.public, j.units, JOINT_BOARD,
            joint=JointProbes(probes=("sae",)),
        )  # fmt: skip


# ---------------------------------------------------------------- the constructions


def _planted(rows: int = 600, contexts: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Radius and p2 blocks driven by one latent (cross-probe correlation ~0.9), plus a joint
    feature; ``contexts`` slots per row share the row's latent."""
    g = np.random.default_rng(seed)
    z = np.tile(g.normal(size=rows), contexts)
    m = rows * contexts
    feats = {
        "radius.mean_log": z + 0.2 * g.normal(size=m),
        "radius.min_log": z - 1 + 0.2 * g.normal(size=m),
        "radius.max_log": z + 1 + 0.2 * g.normal(size=m),
        "p2.sharpness_kl": np.exp(z + 0.3 * g.normal(size=m)),
        "p2.sharpness_l2": np.exp(-z + 0.3 * g.normal(size=m)),
        "p2dir.toward_log": z + 0.1 * g.normal(size=m),
        "p2dir.away_log": z + 0.1 * g.normal(size=m),
        "p2dir.frac_log": 0.5 * g.normal(size=m),
    }
    return feats | joint_features(feats)


def test_gluing_breaks_a_planted_cross_probe_correlation():
    feats = _planted()
    before = block_correlations(feats)
    assert min(before.values()) > 0.8
    glued = glue_probes(feats, seed=3)
    after = block_correlations(glued)
    assert (
        sorted(after) == sorted(before) == [("p2", "p2dir"), ("p2", "radius"), ("p2dir", "radius")]
    )
    assert max(after.values()) < 0.2, after
    assert sorted(glued) == sorted(feats)
    # every marginal is the real one; within a block the points move together
    for k in feats:
        if not k.startswith("joint."):
            assert np.array_equal(np.sort(glued[k]), np.sort(feats[k])), k
    idx = np.argsort(feats["radius.mean_log"])[np.argsort(np.argsort(glued["radius.mean_log"]))]
    for k in ("radius.min_log", "radius.max_log"):
        assert np.array_equal(glued[k], feats[k][idx]), k
    # the derived features are recomputed from the glued ones (the scorer's view)
    re = joint_features({k: v for k, v in glued.items() if not k.startswith("joint.")})
    for k, v in re.items():
        assert np.array_equal(glued[k], v), k
    assert abs(np.corrcoef(glued["joint.toward_vs_iso"], feats["joint.toward_vs_iso"])[0, 1]) < 0.2
    # seeded, and a row's contexts stay together
    assert all(np.array_equal(glued[k], glue_probes(feats, seed=3)[k]) for k in glued)
    two = _planted(rows=300, contexts=2)
    g2 = glue_probes(two, seed=1, contexts=2)
    for k in ("radius.mean_log", "p2.sharpness_kl"):
        # the two contexts of a row share its latent: their values move together
        a, b = two[k][:300], two[k][300:]
        ga, gb = g2[k][:300], g2[k][300:]
        perm = np.array([np.flatnonzero(a == x)[0] for x in ga])
        assert np.array_equal(gb, b[perm]), k
    with pytest.raises(ValueError):
        glue_probes(_planted(rows=5), seed=0, contexts=2)


def test_quantile_matching_takes_the_reference_marginals_and_keeps_the_ranks():
    ref, other = _planted(seed=1), _planted(seed=2)
    g = np.random.default_rng(4)
    other = {k: v * 3 + 2 + 0.1 * g.normal(size=len(v)) for k, v in other.items()}
    other["p2.sharpness_kl"][:5] = np.nan
    q = quantile_match(other, ref)
    for k in ref:
        if k.startswith("joint."):
            continue
        ok = np.isfinite(other[k])
        assert np.isnan(q[k][~ok]).all()
        assert np.array_equal(np.argsort(q[k][ok]), np.argsort(other[k][ok])), k
        if ok.all():
            np.testing.assert_allclose(np.sort(q[k]), np.sort(ref[k]), rtol=1e-9, atol=1e-12)
    re = joint_features({k: v for k, v in q.items() if not k.startswith("joint.")})
    assert all(np.array_equal(q[k], v, equal_nan=True) for k, v in re.items())


def test_glued_real_features_score_below_the_committed_boards_null_band():
    """The joint target on the board itself (real data, no model run): the oracle's real
    features with each probe block glued across rows (``glue_probes``, a row's contexts
    together, ``joint.*`` recomputed) score below the board's real-vs-real null band, while the
    oracle's own features lie inside it. Without ``p2dir`` the glued construction scored 0.993,
    inside the band (docs/joint-probes.md, "At the board's size")."""
    from pathlib import Path

    from challenge.scoring.null import cached_band, headline_auc, unclipped_score
    from challenge.scoring.report import load_report

    path = Path(__file__).resolve().parents[1] / "leaderboard/smollm2-135m-l1/heldout_real.json"
    rep = load_report(path)
    cfg, data = rep.config, rep.data
    assert "p2dir" in cfg.probes.probes and "joint.toward_vs_iso" in data.submission
    band = cached_band(rep)
    real = float(unclipped_score(headline_auc(data.reference, data.submission, cfg)))
    assert real >= band.lo
    glued = glue_probes(data.submission, seed=0, contexts=cfg.contexts_per_row)
    assert sorted(glued) == sorted(data.submission)
    score = float(unclipped_score(headline_auc(data.reference, glued, cfg)))
    assert score < band.lo
