"""The scoring wing's flow: a submission is validated once and its record written once; a stored
record re-made from its features is itself, bit for bit; the seeds and resolution tools read
records through the one loader; nothing outside ``challenge/scoring`` opens a record's arrays."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import challenge.scoring.recording as record_module
from baselines.generators import Gaussian
from challenge.access import entry_access
from challenge.probes import ProbeConfig
from challenge.scoring import (
    ScoreConfig,
    load_report,
    record,
    remake,
    validate_submission,
)
from challenge.scoring.recording import verify_record
from challenge.scoring.seeds import SeedsConfig, resolution, resolution_markdown, score_seeds
from challenge.submission import generate

ROOT = Path(__file__).resolve().parents[2]
BOARD = ROOT / "leaderboard" / "smollm2-135m-l1"
QUICK = ScoreConfig(
    probes=ProbeConfig(probes=("radius", "p2"), n_directions=4, bisect_steps=6, p2_steps=11),
    contexts_per_row=1,
    n_boot=200,
).quick()


@pytest.fixture(scope="module")
def submission(smollm, tiny_track, tmp_path_factory):
    root = tmp_path_factory.mktemp("subs")
    return generate(Gaussian(), tiny_track, smollm, seed=0, out_root=root), root


def test_a_recorded_submission_is_validated_once_and_written_once(
    submission, smollm, tiny_track, tmp_path, monkeypatch
):
    folder, _ = submission
    calls = {"validate": 0, "save": 0, "read": 0}
    real_validate = record_module.validate_submission
    real_save = record_module.ScoreReport.save

    def counting_validate(*a, **k):
        calls["validate"] += 1
        return real_validate(*a, **k)

    def counting_save(self, *a, **k):
        calls["save"] += 1
        return real_save(self, *a, **k)

    import challenge.scoring.validation as validation

    real_read = validation.read_regular

    def counting_read(path, *a, **k):
        calls["read"] += 1
        return real_read(path, *a, **k)

    monkeypatch.setattr(record_module, "validate_submission", counting_validate)
    monkeypatch.setattr(record_module.ScoreReport, "save", counting_save)
    monkeypatch.setattr(validation, "read_regular", counting_read)
    rep = record(
        folder, tiny_track, smollm, QUICK, tmp_path, access=entry_access("unverified", "none", [])
    )
    assert calls == {"validate": 1, "save": 1, "read": 2}  # submission.json + activations, once
    path = tmp_path / tiny_track.spec.track_id / "gaussian.json"
    assert json.loads(path.read_text()) == rep.to_json()
    assert rep.validation["checks"][-1] == "copy check"
    assert rep.submission["access"]["category"] == "unverified"


def test_a_reference_line_skips_the_copy_check_by_an_explicit_argument(submission, tiny_track):
    folder, _ = submission
    sub = validate_submission(folder, tiny_track, skip_copy_check="reference line, not ranked")
    assert sub.report.checks[-1] == "copy check skipped: reference line, not ranked"
    assert sub.acts.shape == (tiny_track.required_n, 576) and sub.meta["name"] == "gaussian"
    assert validate_submission(folder, tiny_track).report.checks[-1] == "copy check"


def test_the_loader_returns_typed_arrays(submission, smollm, tiny_track, tmp_path):
    folder, _ = submission
    rep = record(folder, tiny_track, smollm, QUICK, tmp_path)
    loaded = load_report(tmp_path / tiny_track.spec.track_id / "gaussian.json")
    data = loaded.data
    assert sorted(data.reference) == sorted(data.submission) == sorted(rep.features)
    assert data.oof_reference.shape == (QUICK.classifier.n_repeats, rep.headline.n_points)
    assert np.array_equal(data.bootstrap, rep.arrays["bootstrap/score"])
    assert np.array_equal(data.rows, rep.arrays["rows"])
    assert load_report(loaded.path, arrays=False).arrays == {}
    # re-made from its stored features under its own config, the record is itself
    again = remake(loaded)
    assert again.to_json() == loaded.to_json()
    assert all(np.array_equal(again.arrays[k], loaded.arrays[k]) for k in loaded.arrays)


def test_a_committed_board_record_is_remade_bit_for_bit():
    """The smallest committed record of the board, re-made from its stored features (the slow
    test does all of them): JSON equal key by key, every array equal bit for bit."""
    path = min(BOARD.glob("*.json"), key=lambda p: p.with_suffix(".npz").stat().st_size)
    assert verify_record(path) == []


@pytest.mark.slow
def test_every_committed_record_is_remade_bit_for_bit():
    paths = [p for p in sorted((ROOT / "leaderboard").rglob("*.json"))]
    paths = [p for p in paths if p.with_suffix(".npz").exists()]
    assert len(paths) >= 18  # the SmolLM2 board and the quick Gemma board
    for path in paths:
        assert verify_record(path) == [], path


def test_seeds_and_resolution_on_the_tiny_track(submission, smollm, tiny_track, tmp_path):
    """Two scorer seeds of one entry, then the resolution table from the stored features: each
    seed's recomputed headline equals its report's, and the table says how many seeds."""
    folder, root = submission
    out = tmp_path / "seeds"
    summary = score_seeds(
        tiny_track,
        smollm,
        SeedsConfig(seeds=(0, 1), entries=("gaussian",), contexts_per_row=1),
        out,
        submissions=root,
        score=QUICK,
    )
    assert set(summary) == {"gaussian/seed0", "gaussian/seed1"}
    assert score_seeds(  # resumes: nothing scored again
        tiny_track, smollm, SeedsConfig(seeds=(0, 1), entries=("gaussian",)), out,
        submissions=root, score=QUICK,
    ) == summary  # fmt: skip
    rows = resolution([out], tmp_path / "no-board", tmp_path / "res.json")
    (row,) = rows
    for s in (0, 1):
        rep = load_report(out / f"seed{s}" / "gaussian.json", arrays=False)
        assert row.scores[s] == rep.headline.score  # the same classifier on the same features
    assert row.sd == pytest.approx(np.std([row.scores[0], row.scores[1]], ddof=1), abs=0)
    text = resolution_markdown(rows)
    assert "| gaussian | 2 |" in text and "(2 seeds)" in text


KEYS = re.compile(r"""["'](bootstrap/score|oof/(reference|submission)|(submission|reference)/)""")


def test_no_module_outside_the_scoring_wing_opens_a_records_arrays():
    """A record's ``.npz`` keys are spelled only in ``challenge/scoring`` (and its tests): every
    other module reads records through ``load_report`` / ``ScoreArrays``."""
    offenders = []
    for folder in ("challenge", "baselines", "benchmarks", "scripts", "tests"):
        for p in (ROOT / folder).rglob("*.py"):
            rel = p.relative_to(ROOT).as_posix()
            if rel.startswith(("challenge/scoring/", "tests/scoring/")):
                continue
            if KEYS.search(p.read_text()):
                offenders.append(rel)
    assert offenders == []


def test_one_bootstrap_and_one_js_implementation():
    """No resampling loop or textbook JS outside their modules (``challenge.bootstrap``,
    ``challenge.divergence``)."""
    offenders = []
    for p in (ROOT / "challenge").rglob("*.py"):
        rel = p.relative_to(ROOT).as_posix()
        text = p.read_text()
        if rel != "challenge/bootstrap.py" and re.search(r"\.integers\(0, \w+, \(?\w+, ", text):
            offenders.append(f"{rel}: bootstrap draw")
        if rel != "challenge/divergence.py" and re.search(r"logaddexp\(", text):
            offenders.append(f"{rel}: JS")
    assert offenders == []


def test_the_track_protocol_is_implemented_by_every_track_like_class(tiny_track):
    from challenge.access import TrackView
    from challenge.track import TrackLike

    view = TrackView(tiny_track, ("public",), "test")
    for t in (tiny_track, view):
        assert isinstance(t, TrackLike)
        assert t.required_n == tiny_track.required_n
        assert t.reference_rows().tolist() == tiny_track.reference_rows().tolist()
    ref, orc = set(tiny_track.reference_rows().tolist()), set(tiny_track.oracle_rows().tolist())
    assert not ref & orc and len(ref | orc) == tiny_track.heldout_size
    assert view.data_sha256 == tiny_track.data_sha256 and view.manifest_sha256 is None
    assert tiny_track.manifest_sha256 == load_manifest_sha(tiny_track.path)


def load_manifest_sha(path) -> str:
    import hashlib

    return hashlib.sha256((Path(path) / "manifest.json").read_bytes()).hexdigest()


def test_copy_of_a_record_keeps_its_arrays(tmp_path):
    """``load_report`` of a copied record reads the copy's arrays (``path`` is the copy's)."""
    src = min(BOARD.glob("*.json"), key=lambda p: p.with_suffix(".npz").stat().st_size)
    for ext in (".json", ".npz"):
        shutil.copy(src.with_suffix(ext), tmp_path / f"x{ext}")
    rep = load_report(tmp_path / "x.json")
    assert rep.path == tmp_path / "x.json" and rep.data.has_features()
