"""The real-vs-real null band, the unclipped score and the second statistic
(``challenge.scoring.null``), on small feature sets built here and on committed records."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import kendalltau

from challenge.scoring import load_report
from challenge.scoring import null as N
from challenge.scoring.classifier import compare
from challenge.scoring.config import ClassifierConfig, ScoreConfig

ROOT = Path(__file__).resolve().parents[2] / "leaderboard"
QUICK = ROOT / "quick" / "gemma3-270m-l1"
FEATS = ["p2.a", "p2.b", "radius.a", "radius.b", "radius.c"]
# a light classifier: one cross-fitting, 30 trees (each draw ~0.2 s on 2 x 150 rows x 2 contexts)
CFG = ScoreConfig(
    classifier=ClassifierConfig(n_repeats=1, max_iter=30, min_samples_leaf=10),
    contexts_per_row=2,
    n_boot=50,
)
ROWS = 150


def _real(seed: int, rows: int = ROWS, coupled: bool = False) -> dict[str, np.ndarray]:
    """Features of ``rows`` rows x 2 contexts (round-major): a row effect shared by its
    contexts, radius features correlated among themselves, p2 features among themselves, and
    (``coupled``) the two groups driven by one latent, as a plateau's width and sharpness
    would be."""
    g = np.random.default_rng(seed)
    z = np.tile(g.normal(size=rows), 2) + 0.5 * g.normal(size=2 * rows)
    w = z if coupled else np.tile(g.normal(size=rows), 2) + 0.5 * g.normal(size=2 * rows)
    m = 2 * rows
    return {
        "radius.a": z + 0.3 * g.normal(size=m),
        "radius.b": z + 0.3 * g.normal(size=m),
        "radius.c": 0.5 * z + 0.5 * g.normal(size=m),
        "p2.a": w + 0.3 * g.normal(size=m),
        "p2.b": -w + 0.4 * g.normal(size=m),
    }


def _glued(feats: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """Issue 30's construction: each slot's radius features from one real row, its p2 features
    from another real row (rows permuted, contexts kept)."""
    m = len(feats["p2.a"])
    perm = np.random.default_rng(seed).permutation(m // 2)
    slots = np.concatenate([perm, perm + m // 2])
    return {k: (v[slots] if k.startswith("p2.") else v) for k, v in feats.items()}


@pytest.fixture(scope="module")
def band():
    """The band of two independent real samples (20 swaps, 5 split halves of each)."""
    return N.band_of(_real(1), _real(2), CFG, N.NullConfig(n_swaps=20, n_splits=5))


def test_the_unclipped_score_is_2_1_minus_auc():
    for name in ("heldout_real", "gaussian"):
        rep = load_report(QUICK / f"{name}.json", arrays=False)
        assert N.record_unclipped(rep) == 2 * (1 - rep.headline.auc)
    assert N.unclipped_score(0.4) == pytest.approx(1.2)  # above 1: not clipped
    np.testing.assert_allclose(N.unclipped_score(np.array([1.0, 0.5])), [0.0, 1.0])


def test_the_draws_use_the_scorers_headline_auc():
    """``headline_auc`` is the AUC ``compare`` puts in its headline (same folds and seeds)."""
    ref, sub = _real(3, rows=60), _real(4, rows=60)
    head, _, _ = compare(ref, sub, CFG)
    assert N.headline_auc(ref, sub, CFG) == head.auc


def test_a_swap_exchanges_whole_rows():
    ref, sub = _real(5, rows=4), _real(6, rows=4)
    rows = np.array([True, False, False, True])
    a, b = N.swapped(ref, sub, rows, 2)
    for k in ref:
        for j, s in enumerate(rows):
            for slot in (j, j + 4):  # both contexts of row j
                assert a[k][slot] == (sub if s else ref)[k][slot]
                assert b[k][slot] == (ref if s else sub)[k][slot]
    draws = N.swap_draws(1000, 3, seed=0)
    assert draws.shape == (3, 1000) and 0.45 < draws.mean() < 0.55
    assert np.array_equal(N.swap_draws(1000, 5, seed=0)[:3], draws)  # nested in K


def test_the_band_comes_from_real_vs_real_draws_and_contains_1(band):
    ref, sub = _real(1), _real(2)
    # draw 0 is the classifier on the swapped real halves, nothing else
    a, b = N.swapped(ref, sub, N.swap_draws(ROWS, 1, CFG.seed)[0], 2)
    assert band.unclipped[0] == N.unclipped_score(N.headline_auc(a, b, CFG))
    assert len(band.unclipped) == len(band.energy) == 20
    assert band.lo < 1.0 < band.hi and band.lo > 0.6
    assert 0.0 < band.share_clipped < 1.0
    assert band.indistinguishable(band.lo) and not band.indistinguishable(band.lo - 1e-9)
    # split halves: 75 rows a side, around 1 as well
    assert set(band.splits) == {"reference", "oracle"} and band.split_rows == ROWS // 2
    lo, hi = band.split_band()
    assert lo < 1.0 < hi
    # an entry from another distribution falls below the band
    shifted = {k: v + (0.6 if k == "radius.a" else 0.0) for k, v in _real(2).items()}
    assert N.unclipped_score(N.headline_auc(ref, shifted, CFG)) < band.lo


def test_the_energy_distance_is_0_for_equal_distributions_and_grows_with_a_shift(band):
    ref = _real(1)
    std = N.standardiser(ref)
    x = N.standardised(ref, std)
    same = N.energy_distance(N.standardised(_real(2), std), x)
    assert abs(same) < 0.02
    d = [
        N.energy_distance(N.standardised({k: v + s for k, v in _real(2).items()}, std), x)
        for s in (0.25, 0.5, 1.0, 2.0)
    ]
    assert same < d[0] < d[1] < d[2] < d[3]
    # the swaps' null: a real sample is inside it, a shifted one above it
    assert same <= band.energy_hi < d[1]
    # non-finite rows are dropped, not propagated
    holed = {k: v.copy() for k, v in _real(2).items()}
    holed["p2.a"][:10] = np.nan
    assert len(N.standardised(holed, std)) == 2 * ROWS - 10
    assert np.isfinite(N.energy_distance(N.standardised(holed, std), x))


@pytest.mark.parametrize("coupled", [True, False])
def test_the_glued_construction(coupled):
    """Real radius features of one row glued to real p2 features of another: every marginal is
    real. When the two groups are coupled (one latent drives both) the classifier sees the
    broken coupling and the entry falls below the band; when they are independent (as radius
    and p2 are on the SmolLM2 board: correlation ~0) gluing changes nothing the classifier can
    see and the entry is marked indistinguishable."""
    ref, oracle = _real(1, coupled=coupled), _real(2, coupled=coupled)
    band = N.band_of(ref, oracle, CFG, N.NullConfig(n_swaps=20, n_splits=0))
    glued = _glued(oracle, seed=7)
    u = N.unclipped_score(N.headline_auc(ref, glued, CFG))
    std = N.standardiser(ref)
    e = N.energy_distance(N.standardised(glued, std), N.standardised(ref, std))
    assert band.splits == {}
    if coupled:
        assert not band.indistinguishable(u) and u < 0.6
        assert e > band.energy_hi
    else:
        assert band.indistinguishable(u)
        assert e <= band.energy_hi


def test_rank_changes_respect_ties():
    entries = [("a", 1, 0.9, 0.10), ("b", 2, 0.5, 0.05), ("c", 2, 0.45, 0.3), ("d", 4, 0.1, 0.5)]
    rc = N.rank_changes(entries)
    assert rc.n == 4
    assert rc.tau == pytest.approx(kendalltau([0.9, 0.5, 0.45, 0.1], [-0.1, -0.05, -0.3, -0.5])[0])
    # energy positions: b 1, a 2, c 3, d 4; b's tie group spans positions 2-3
    assert rc.moved == [("a", 1, 1, 2), ("b", 2, 3, 1)]
    assert rc.positions == {"b": 1, "a": 2, "c": 3, "d": 4}
    assert rc.shifted == [("a", 1, 2), ("b", 2, 1)]  # c and d keep their places
    assert N.rank_changes([("a", 1, 0.9, 0.1), ("b", 2, 0.5, None)]) is None


def test_the_band_is_cached_beside_the_board_keyed_by_the_oracle_records_bytes(
    tmp_path, monkeypatch
):
    d = tmp_path / "trk"
    d.mkdir()
    for ext in (".json", ".npz"):
        shutil.copy(QUICK / f"heldout_real{ext}", d / f"heldout_real{ext}")
    made = []

    def fake(ref, sub, cfg, ncfg, key=""):
        made.append(key)
        return N.NullBand(key, 40, 1, ncfg.n_swaps, 0, [0.9, 1.0, 1.1], [0.0, 0.01, 0.02])

    monkeypatch.setattr(N, "band_of", fake)
    monkeypatch.setattr(N, "COMMITTED_ROOT", tmp_path / "none")
    ncfg = N.NullConfig(n_swaps=3, n_splits=0)
    rep = load_report(d / "heldout_real.json")
    first = N.cached_band(rep, ncfg)
    assert (d / N.CACHE_NAME).exists() and len(made) == 1
    assert N.cached_band(load_report(d / "heldout_real.json"), ncfg) == first
    assert len(made) == 1  # read back, not made again
    N.cached_band(rep, N.NullConfig(n_swaps=4, n_splits=0))
    assert len(made) == 2  # another null config: another key
    with np.load(d / "heldout_real.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["bootstrap/score"] = arrays["bootstrap/score"] + 1e-9
    np.savez(d / "heldout_real.npz", **arrays)
    N.cached_band(load_report(d / "heldout_real.json"), N.NullConfig(n_swaps=4, n_splits=0))
    assert len(made) == 3 and made[2] != made[1]  # the record's bytes changed: made again


def test_a_copy_of_a_committed_board_uses_its_committed_band(tmp_path, monkeypatch):
    """The committed boards' caches serve a copy of their oracle record (same bytes, same key):
    nothing is drawn again."""
    if not (QUICK / N.CACHE_NAME).exists():
        pytest.skip("the quick board's band is not rendered")
    d = tmp_path / "trk"
    d.mkdir()
    for ext in (".json", ".npz"):
        shutil.copy(QUICK / f"heldout_real{ext}", d / f"heldout_real{ext}")
    monkeypatch.setattr(N, "band_of", lambda *a, **k: pytest.fail("band drawn again"))
    band = N.cached_band(load_report(d / "heldout_real.json"))
    assert len(band.unclipped) == N.NullConfig().n_swaps
    assert band.rows == 40 and band.contexts == 1
    assert (d / N.CACHE_NAME).read_text() == (QUICK / N.CACHE_NAME).read_text()
