"""Scoring: deterministic; held-out real lands near the floor, random far from it; the report is
typed, its JSON is the ``plateau-score/1`` layout of the committed leaderboard records."""

import json
from pathlib import Path

import pytest

from baselines.generators import Gaussian, HeldoutReal, Isotropic
from challenge.errors import ConfigError
from challenge.scorer import (
    ScoreConfig,
    ScoreReport,
    gap_closed,
    score_submission,
    validate_report,
)
from challenge.submission import generate

CFG = ScoreConfig(n_curves=40, n_steps=12, n_boot=50)
BOARD = Path(__file__).resolve().parents[1] / "leaderboard" / "smollm2-135m-l1"
LAYOUT = ["schema", "submission", "track", "config", "headline", "features", "provenance"]


@pytest.fixture(scope="module")
def scored(smollm, tiny_track, tmp_path_factory):
    root = tmp_path_factory.mktemp("subs")
    out = tmp_path_factory.mktemp("board")
    reps = {}
    for g in (HeldoutReal(), Isotropic()):
        path = generate(g, tiny_track, smollm, seed=0, out_root=root)
        reps[g.name] = score_submission(path, tiny_track, smollm, CFG, out=out)
    return reps, out, root


def test_report_schema_and_files(scored):
    reps, out, _ = scored
    rep = reps["heldout_real"]
    assert isinstance(rep, ScoreReport)
    validate_report(rep)
    assert len(rep.track.manifest_sha256) == 64 and rep.config.seed == 0
    assert (out / "heldout_real.json").exists() and (out / "heldout_real.png").read_bytes()[
        :4
    ] == b"\x89PNG"
    assert set(rep.features) >= {"origin.ms_l2", "target.ms_kl", "origin.plateau_length"}
    doc = json.loads((out / "heldout_real.json").read_text())
    assert list(doc) == [*LAYOUT, "validation"] and doc == rep.to_json()
    assert rep.path == out / "heldout_real.json"
    assert set(rep.arrays) == {
        f"{g}/{k}" for g in ("submission", "reference") for k in rep.features
    }


def test_oracle_beats_isotropic(scored):
    reps, _, _ = scored
    real, iso = reps["heldout_real"].headline, reps["isotropic"].headline
    assert real.mean_ks < iso.mean_ks
    assert real.gap_closed > iso.gap_closed
    assert real.gap_closed > 0.5  # held-out real sits near the real-vs-real floor


def test_rescoring_gives_identical_numbers(scored, smollm, tiny_track):
    reps, _, root = scored
    again = score_submission(root / tiny_track.spec.track_id / "isotropic", tiny_track, smollm, CFG)
    assert json.dumps(again.to_json()["features"], sort_keys=True) == json.dumps(
        reps["isotropic"].to_json()["features"], sort_keys=True
    )


def test_gap_closed_definition():
    assert gap_closed(0.1, floor=0.1, ceiling=0.6) == 1.0
    assert gap_closed(0.6, floor=0.1, ceiling=0.6) == 0.0
    assert gap_closed(0.35, floor=0.1, ceiling=0.6) == (0.6 - 0.35) / (0.6 - 0.1)  # = 0.5
    assert gap_closed(0.0, floor=0.1, ceiling=0.6) == 1.0  # clipped
    assert gap_closed(0.3, floor=0.2, ceiling=0.22) is None  # no spread: feature not informative


@pytest.mark.parametrize(
    "kw, field",
    [
        ({"n_curves": 0}, "n_curves"),
        ({"n_steps": 9}, "n_steps"),
        ({"n_boot": 0}, "n_boot"),
        ({"units": "furlongs"}, "units"),
        ({"seed": "0"}, "seed"),
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


def test_gaussian_generator_is_the_ceiling_shape(smollm, tiny_track):
    g = Gaussian()
    g.fit(tiny_track, smollm)
    a, b = g.sample(8, seed=1), g.sample(8, seed=1)
    assert a.shape == (8, 576) and (a == b).all()
