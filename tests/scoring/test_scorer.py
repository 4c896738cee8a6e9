"""Scoring v2: the headline is bounded and deterministic, the oracle sits at the top, N(mu, Sigma)
rows pull the score down in order (a contamination curve on the tiny track), and the report is
the typed ``plateau-score/2`` layout of the committed leaderboard records."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from baselines.generators import Gaussian
from challenge import rng
from challenge.directions import ActivationStats, gaussian_like
from challenge.errors import ConfigError
from challenge.metrics import auc
from challenge.probes import ProbeConfig
from challenge.scoring import (
    SCORER_VERSION,
    ClassifierConfig,
    ScoreArrays,
    ScoreConfig,
    ScoreReport,
    rescore,
    score_folder,
    score_points,
    validate_report,
)
from challenge.scoring.classifier import (
    bootstrap_slots,
    compare,
    fold_of_slots,
    out_of_fold_scores,
    score_of_auc,
)
from challenge.scoring.probing import features_cache_path, make_slots
from challenge.submission import generate

# Light probes for the 64-slot tiny track: 4 directions, 6 bisection rounds, 11-point P2 paths.
CFG = ScoreConfig(
    probes=ProbeConfig(probes=("radius", "p2"), n_directions=4, bisect_steps=6, p2_steps=11),
    contexts_per_row=1,
    n_boot=200,
)
BOARD = Path(__file__).resolve().parents[2] / "leaderboard" / "smollm2-135m-l1"
LAYOUT = [
    "schema",
    "scorer_version",
    "submission",
    "track",
    "config",
    "headline",
    "features",
    "provenance",
]
FEATURES = [
    "p2.sharpness_kl",
    "p2.sharpness_l2",
    "radius.max_log",
    "radius.mean_log",
    "radius.min_log",
]


@pytest.fixture(scope="module")
def contamination(smollm, tiny_track):
    """Scores of the oracle's real rows with 0, 50 and 100 % of them replaced by N(mu, Sigma)."""
    real = tiny_track.acts("heldout")[tiny_track.oracle_rows()]
    g = gaussian_like(
        ActivationStats.fit(tiny_track.acts("public")), len(real), torch.Generator().manual_seed(5)
    )
    half = len(real) // 2
    sets = {0: real, 50: torch.cat([real[:half], g[half:]]), 100: g}
    return {
        x: score_points(tiny_track, smollm, pts, CFG, progress=False) for x, pts in sets.items()
    }


def test_reference_and_oracle_halves_are_disjoint(tiny_track):
    ref, orc = tiny_track.reference_rows(), tiny_track.oracle_rows()
    n = len(tiny_track.acts("heldout"))
    assert len(ref) == tiny_track.required_n == n // 2 and len(orc) == n - n // 2
    assert set(ref.tolist()).isdisjoint(orc.tolist())
    assert sorted(ref.tolist() + orc.tolist()) == list(range(n))
    # fixed per track: the run seed does not move the reference half
    assert torch.equal(tiny_track.reference_rows(), ref)


def test_headline_is_bounded_and_is_the_auc_transform(contamination):
    for rep in contamination.values():
        h = rep.headline
        assert 0.0 <= h.score <= 1.0 and 0.0 <= h.ci[0] <= h.ci[1] <= 1.0
        assert h.score == float(score_of_auc(h.auc))
        assert h.n_points == 64 and h.features == FEATURES
        boot = rep.arrays["bootstrap/score"]
        assert boot.shape == (CFG.n_boot,) and (boot >= 0).all() and (boot <= 1).all()
        assert h.ci == tuple(float(q) for q in np.quantile(boot, [0.025, 0.975]))


def test_contamination_lowers_the_score_in_order(contamination):
    s = {x: r.headline.score for x, r in contamination.items()}
    assert s[0] > s[50] > s[100], s
    # the oracle's interval reaches the top region; pure N(mu, Sigma) is told apart
    assert contamination[0].headline.ci[1] == 1.0
    assert contamination[100].headline.ci[1] < contamination[0].headline.ci[0]


def test_rescoring_is_deterministic(contamination, smollm, tiny_track):
    pts = tiny_track.acts("heldout")[tiny_track.oracle_rows()]
    again = score_points(tiny_track, smollm, pts, CFG, progress=False, cache=False)
    assert json.dumps(again.to_json()["headline"]) == json.dumps(
        contamination[0].to_json()["headline"]
    )
    assert json.dumps(again.to_json()["features"]) == json.dumps(
        contamination[0].to_json()["features"]
    )


def _features(arrays: dict, who: str) -> dict:
    return getattr(ScoreArrays.of(arrays), who)


def _matrix(arrays: dict, who: str) -> np.ndarray:
    f = _features(arrays, who)
    return np.stack([f[k] for k in FEATURES], axis=1)


def test_the_auc_is_the_mean_over_cross_fitting_repeats(contamination):
    """Scorer 2.1: each repeat has its own fold split (repeat 0 is scorer 2.0's single split,
    score for score) and the headline AUC is the mean of the repeats' AUCs; a bootstrap draw
    resamples the same slots in every repeat."""
    arrays = contamination[50].arrays
    ref, sub = _matrix(arrays, "reference"), _matrix(arrays, "submission")
    one = replace(CFG, classifier=ClassifierConfig(n_repeats=1))
    three = replace(CFG, classifier=ClassifierConfig(n_repeats=3))
    r1, s1 = out_of_fold_scores(ref, sub, one)
    r3, s3 = out_of_fold_scores(ref, sub, three)
    assert r3.shape == s3.shape == (3, 64)
    assert np.array_equal(r3[0], r1[0]) and np.array_equal(s3[0], s1[0])
    folds = [fold_of_slots(64, 5, CFG.seed, r) for r in range(3)]
    assert all(np.bincount(f).tolist() == [13, 13, 13, 13, 12] for f in folds)
    assert not np.array_equal(folds[0], folds[1]) and not np.array_equal(folds[1], folds[2])
    head, _, out = compare(_features(arrays, "reference"), _features(arrays, "submission"), three)
    assert head.auc == np.mean([auc(r3[i], s3[i]) for i in range(3)])
    assert np.array_equal(out["oof/reference"], r3) and np.array_equal(out["oof/submission"], s3)
    i = bootstrap_slots(64, three.n_boot, three.seed)[7]
    want = score_of_auc(np.mean([auc(r3[r, i], s3[r, i]) for r in range(3)]))
    assert out["bootstrap/score"][7] == want
    # the board's default
    assert contamination[50].config.classifier.n_repeats == 5
    assert contamination[50].arrays["oof/reference"].shape == (5, 64)


def test_rescore_remakes_a_record_from_its_stored_features(written, tmp_path):
    """``plateau rescore``: a record re-made with its own classifier is the same record; with
    another classifier it has that classifier's headline on the same features, and it names the
    scorer it was re-made from. Records of a scorer whose features differ are refused."""
    import shutil

    rep, out = written
    for ext in (".json", ".npz"):
        shutil.copy(out / f"gaussian{ext}", tmp_path / f"gaussian{ext}")
    path = tmp_path / "gaussian.json"
    same = rescore(path, rep.config.classifier)
    assert same.headline == rep.headline and same.features == rep.features
    assert same.provenance["rescored"]["from_scorer"] == SCORER_VERSION
    two = ClassifierConfig(n_repeats=2)
    again = rescore(path, two)
    want, _, _ = compare(
        _features(rep.arrays, "reference"),
        _features(rep.arrays, "submission"),
        replace(rep.config, classifier=two),
    )
    assert again.headline == want and again.config.probes == rep.config.probes
    assert again.config.n_points == rep.config.n_points == 40
    with np.load(tmp_path / "gaussian.npz") as z:
        assert np.array_equal(z["rows"], rep.arrays["rows"])
        for k in FEATURES:
            assert np.array_equal(z[f"submission/{k}"], rep.arrays[f"submission/{k}"])
        assert z["oof/reference"].shape == (2, 40)
    doc = json.loads(path.read_text())
    path.write_text(json.dumps(doc | {"scorer_version": "1.0"}))
    with pytest.raises(ConfigError, match="gaussian.json: scored by scorer 1.0"):
        rescore(path)
    path.write_text(json.dumps(doc))
    np.savez(tmp_path / "gaussian.npz", **{"bootstrap/score": np.zeros(3)})
    with pytest.raises(ConfigError, match="gaussian.npz: no per-point features"):
        rescore(path)
    assert json.loads(path.read_text()) == doc  # nothing written


def test_score_of_auc_exact_values():
    assert score_of_auc(0.5) == 1.0 and score_of_auc(1.0) == 0.0 and score_of_auc(0.75) == 0.5
    assert score_of_auc(0.3) == 1.0  # below chance: clipped (noise, not "better than real")


def test_auc_is_the_mann_whitney_statistic():
    from sklearn.metrics import roc_auc_score

    g = np.random.default_rng(0)
    neg, pos = g.integers(0, 5, 40).astype(float), g.integers(1, 6, 30).astype(float)  # ties
    ref = roc_auc_score(np.r_[np.zeros(40), np.ones(30)], np.r_[neg, pos])
    # both are one rational (rank sums of integers and halves, exact in float64) divided once;
    # sklearn's trapezoid sum adds at most 70 rounding errors of size eps
    assert auc(neg, pos) == pytest.approx(ref, abs=70 * np.finfo(float).eps)
    brute = np.mean([(p > q) + 0.5 * (p == q) for p in pos for q in neg])
    assert auc(neg, pos) == pytest.approx(brute, abs=70 * np.finfo(float).eps)


def test_more_contexts_per_row_add_slots_around_the_same_rows(smollm, tiny_track):
    """``contexts_per_row = 2``: round 0 is the ``c = 1`` run's slots and features bit for bit
    (read from its cache), round 1 probes the same row pairs in other contexts and directions;
    folds and bootstrap draws keep a row's two slots together."""
    n = 12
    one = replace(CFG, n_points=n)
    two = replace(one, contexts_per_row=2)
    s1, s2 = make_slots(tiny_track, n, one), make_slots(tiny_track, n, two)
    assert len(s2.tokens) == len(s2.dirs) == len(s2.ap_ends) == 2 * n
    head = s2.take(0, n)
    for name in ("tokens", "context_acts", "dirs", "ap_ends"):
        assert torch.equal(getattr(head, name), getattr(s1, name)), name
    assert not torch.equal(s2.dirs[n:], s2.dirs[:n])
    assert not torch.equal(s2.tokens[n:], s2.tokens[:n])

    pts = tiny_track.acts("heldout")[tiny_track.oracle_rows()]
    rows = pts[rng.subset(len(pts), n, one.seed, "scorer.rows")]
    p0, p1 = (features_cache_path(tiny_track, two, n, r, rows) for r in (0, 1))
    assert p0 == features_cache_path(tiny_track, one, n, 0, rows) != p1
    for p in (p0, p1):
        p.unlink(missing_ok=True)
    r1 = score_points(tiny_track, smollm, pts, one, progress=False)  # writes p0
    assert p0.exists() and not p1.exists()
    r2 = score_points(tiny_track, smollm, pts, two, progress=False, cache=False)
    assert r2.headline.n_points == 2 * n and np.array_equal(r2.arrays["rows"], r1.arrays["rows"])
    for who in ("reference", "submission"):
        f1, f2 = _features(r1.arrays, who), _features(r2.arrays, who)
        for k in FEATURES:
            assert len(f2[k]) == 2 * n and np.array_equal(f2[k][:n], f1[k]), (who, k)
    assert 0.0 <= r2.headline.score <= 1.0
    written = p0.stat().st_mtime_ns
    cached = score_points(tiny_track, smollm, pts, two, progress=False)  # reads p0, writes p1
    assert p1.exists() and p0.stat().st_mtime_ns == written
    assert json.dumps(cached.to_json()["headline"]) == json.dumps(r2.to_json()["headline"])

    for r in range(3):
        f = fold_of_slots(n, 5, two.seed, r, contexts=2)
        assert np.array_equal(f[:n], f[n:]) and np.array_equal(
            f[:n], fold_of_slots(n, 5, two.seed, r)
        )
    d = bootstrap_slots(n, two.n_boot, two.seed, contexts=2)
    assert np.array_equal(d[:, n:], d[:, :n] + n)
    assert np.array_equal(d[:, :n], bootstrap_slots(n, two.n_boot, two.seed))
    oof = [r2.arrays[f"oof/{w}"] for w in ("reference", "submission")]
    want = score_of_auc(np.mean([auc(a[d[3]], b[d[3]]) for a, b in zip(*oof, strict=True)]))
    assert r2.arrays["bootstrap/score"][3] == want

    bad = {k: v[:-1] for k, v in _features(r2.arrays, "reference").items()}
    with pytest.raises(ConfigError, match="contexts_per_row"):
        compare(bad, bad, two)


def test_bootstrap_indices_are_shared_for_a_seed():
    a, b = bootstrap_slots(50, 20, seed=3), bootstrap_slots(50, 20, seed=3)
    assert (a == b).all() and a.shape == (20, 50) and not (a == bootstrap_slots(50, 20, 4)).all()


@pytest.fixture(scope="module")
def written(smollm, tiny_track, tmp_path_factory):
    root, out = tmp_path_factory.mktemp("subs"), tmp_path_factory.mktemp("board")
    quick = CFG.quick()
    path = generate(Gaussian(), tiny_track, smollm, seed=0, out_root=root)
    return score_folder(path, tiny_track, smollm, quick, out=out), out


def test_report_schema_and_files(written, tiny_track):
    rep, out = written
    assert isinstance(rep, ScoreReport)
    validate_report(rep)
    assert len(rep.track.manifest_sha256) == 64 and rep.config.seed == 0
    assert rep.track.data_sha256 == tiny_track.data_sha256
    assert (out / "gaussian.png").read_bytes()[:4] == b"\x89PNG"
    doc = json.loads((out / "gaussian.json").read_text())
    assert list(doc) == [*LAYOUT, "validation"] and doc == rep.to_json()
    assert rep.path == out / "gaussian.json"
    with np.load(out / "gaussian.npz") as z:
        assert {"bootstrap/score", "oof/reference", "oof/submission", "rows"} <= set(z.files)
        assert len(z["rows"]) == rep.headline.n_points == 40  # the quick config's subset


def test_every_row_is_scored_by_default(contamination, tiny_track):
    rows = contamination[0].arrays["rows"]
    assert sorted(rows.tolist()) == list(range(tiny_track.required_n))


@pytest.mark.parametrize(
    "kw, field",
    [
        ({"n_points": 3}, "n_points"),
        ({"n_boot": 0}, "n_boot"),
        ({"seed": "0"}, "seed"),
        ({"probes": {"probes": ("sideways",)}}, "probes"),
        ({"probes": {"n_directions": 0}}, "n_directions"),
        ({"classifier": {"n_folds": 1}}, "n_folds"),
        ({"classifier": {"n_repeats": 0}}, "n_repeats"),
        ({"contexts_per_row": 0}, "contexts_per_row"),
    ],
)
def test_score_config_refuses_bad_values(kw, field):
    with pytest.raises(ConfigError, match=f"field {field}"):
        ScoreConfig(**kw)


def test_committed_records_are_reports_of_the_current_layout():
    """Every committed leaderboard record parses into a ScoreReport whose JSON is the record
    itself, byte for byte as written, and matches the generated schema."""
    from challenge.results import to_jsonable

    paths = sorted(BOARD.glob("*.json"))
    assert len(paths) >= 10
    for p in paths:
        text = p.read_text()
        rep = ScoreReport.from_json(json.loads(text))
        assert json.dumps(to_jsonable(rep.to_json()), indent=1) == text
        validate_report(rep)
        assert list(rep.to_json()) == [*LAYOUT, "validation"]
        if "sae" in rep.submission["uses"]:  # every SAE entry names the SAE it used
            sae = rep.submission["sae"]
            assert set(sae) == {"name", "sha256"} and len(sae["sha256"]) == 64, p.name


def test_gaussian_generator_is_deterministic(smollm, tiny_track):
    g = Gaussian()
    g.fit(tiny_track, smollm)
    a, b = g.sample(8, seed=1), g.sample(8, seed=1)
    assert a.shape == (8, 576) and (a == b).all()
