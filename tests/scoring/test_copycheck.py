"""The per-row copy check on the tiny track: copies of public, held-out or context rows (on a
subset of rows, or with 5 % noise) and repeated rows are refused, naming the count and rows;
honest generators and a fresh real sample pass."""

import re

import numpy as np
import pytest
import torch

from challenge.scoring import copycheck
from challenge.scoring.validation import copy_calibration, real_rows


@pytest.fixture(scope="module")
def cal(tiny_track):
    return copy_calibration(tiny_track)


def _verdict(x, track, cal) -> list[str]:
    found, _ = copycheck.copy_findings(x, real_rows(track), cal)
    return [f.message(len(x)) for f in found if f.refused]


def _gaussian(track, n, seed=1):
    from baselines.generators import Gaussian

    g = Gaussian()
    g.fit(track, None)
    return g.sample(n, seed=seed)


def test_calibration_is_the_real_leave_one_out_distribution(tiny_track, cal):
    real = real_rows(tiny_track)
    assert len(cal.real) == len(real) == 256 + 128 + 64
    # each value is a real row's distance to its nearest other real row
    i = 17
    d = (real - real[i]).norm(dim=1)
    d[i] = float("inf")
    assert float(d.min()) in cal.real.tolist() or np.isclose(cal.real, float(d.min())).any()
    assert cal.tau == pytest.approx(np.quantile(cal.real, copycheck.Q_LOW))
    assert 0 < cal.tau_self < cal.tau < cal.t_shift
    assert copycheck.Q_LOW <= cal.p_close < 0.05  # an upper bound on the 1 % rate, from 448 rows


def test_a_fresh_real_sample_passes(tiny_track):
    """Calibrated without the held-out split, the held-out rows are a fresh real sample."""
    ref = torch.cat([tiny_track.acts("public"), tiny_track.acts("context")])
    cal = copycheck.calibrate(ref)
    found, stats = copycheck.copy_findings(tiny_track.acts("heldout"), ref, cal)
    assert not any(f.refused for f in found), [f.message(128) for f in found]
    assert stats["copy_close_real"] <= stats["copy_allowed_close"]


def _attack(kind, track):
    n = 128
    pub, held, ctx = (track.acts(s) for s in ("public", "heldout", "context"))
    g = torch.Generator().manual_seed(0)
    x = _gaussian(track, n)
    if kind == "public_subset":  # 12 of 128 rows (~10 %) copied exactly
        x[:12] = pub[:12]
    elif kind == "heldout_subset":
        x[40:52] = held[:12]
    elif kind == "context_subset":
        x[60:72] = ctx[:12]
    elif kind == "public_noise":  # every row a public row + 5 % isotropic noise
        e = torch.nn.functional.normalize(torch.randn(n, 576, generator=g), dim=1)
        x = pub[:n] + 0.05 * pub[:n].norm(dim=1, keepdim=True) * e
    elif kind == "repeated_row":  # one (synthetic) row repeated with 1e-4 jitter
        x[64:] = x[0] + 1e-4 * torch.randn(n - 64, 576, generator=g)
    return x


@pytest.mark.parametrize(
    "kind, count, rows",
    [
        ("public_subset", r"12 of 128 rows lie closer to a real row", "0, 1, 2"),
        ("heldout_subset", r"12 of 128 rows lie closer to a real row", "40, 41"),
        ("context_subset", r"12 of 128 rows lie closer to a real row", "60, 61"),
        ("public_noise", r"KS D\+ 0\.\d+ > 0\.186", ""),
        ("repeated_row", r"\d+ of 128 rows lie closer to another submitted row", "0, 6"),
    ],
)
def test_copies_are_refused_naming_count_and_rows(tiny_track, cal, kind, count, rows):
    msgs = _verdict(_attack(kind, tiny_track), tiny_track, cal)
    assert msgs, f"{kind} was accepted"
    hit = [m for m in msgs if re.search(count, m)]
    assert hit, msgs
    assert "closest rows: " in hit[0] and "a real sample" in hit[0]
    named = [int(r) for r in hit[0].split("closest rows: ")[1].rstrip(", .").split(", ")]
    assert len(named) == copycheck.SHOW_ROWS
    if kind.endswith("_subset"):  # the named rows are copies
        start = int(rows.split(",")[0])
        assert set(named) <= set(range(start, start + 12))


def test_public_noise_gets_both_findings(tiny_track, cal):
    found, stats = copycheck.copy_findings(
        _attack("public_noise", tiny_track), real_rows(tiny_track), cal
    )
    close, _, shift = found
    assert shift.refused and shift.statistic > 3 * shift.critical
    assert stats["nn_real_median"] == pytest.approx(0.05 * 43, rel=0.1)  # the noise's norm


@pytest.mark.parametrize("name", ["gaussian", "interpolation", "token_cluster", "isotropic"])
def test_honest_public_generators_pass(tiny_track, cal, name):
    from baselines.generators import GENERATORS

    gen = GENERATORS[name]()
    gen.fit(tiny_track, None)
    assert _verdict(gen.sample(128, seed=0), tiny_track, cal) == []


@pytest.fixture(scope="module")
def toy_sae(tiny_track):
    from challenge.sae import SAEConfig, train_sae

    cfg = SAEConfig(n_latents=128, k=8, steps=40, batch=64, positions="last")
    with torch.enable_grad():
        return train_sae(tiny_track.acts("public"), cfg, progress=False)[0]


@pytest.mark.parametrize("name", ["sae_baseline", "bag_of_features", "single_latent"])
def test_honest_sae_compositions_pass(tiny_track, cal, toy_sae, name):
    from baselines.generators import GENERATORS

    gen = GENERATORS[name](sae=toy_sae)
    gen.fit(tiny_track, None)
    assert _verdict(gen.sample(128, seed=0), tiny_track, cal) == []


def test_honest_interpolation_margin(tiny_track, cal):
    """(1 - a) x_i + a x_j, a ~ U(0.25, 0.75): no row within tau of a real row beyond the
    allowance, and the lower tail not shifted."""
    from baselines.generators import Interpolation

    gen = Interpolation()
    gen.fit(tiny_track, None)
    found, stats = copycheck.copy_findings(gen.sample(128, seed=0), real_rows(tiny_track), cal)
    assert stats["copy_close_real"] <= 2 < stats["copy_allowed_close"]
    assert stats["copy_ks_real"] == 0.0
