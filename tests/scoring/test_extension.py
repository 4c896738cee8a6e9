"""Records re-made with added probes (``challenge.scoring.extension``): the stored features plus
the added probe's, scored again, are the record a full run of the widened config makes, bit for
bit; a folder that is not the one the record scored, or a probe the config already runs, is
refused with nothing written."""

import shutil

import numpy as np
import pytest

from baselines.generators import Gaussian
from challenge.access import entry_access
from challenge.errors import ConfigError, SubmissionError
from challenge.probes import ProbeConfig
from challenge.scoring import ScoreConfig, load_report, record
from challenge.scoring.extension import extend_records, extend_report, widened
from challenge.submission import generate

BASE = ScoreConfig(
    probes=ProbeConfig(probes=("radius", "p2"), n_directions=2, bisect_steps=4, p2_steps=11),
    n_points=10,
    contexts_per_row=2,
    n_boot=100,
)
ACCESS = entry_access("unverified", "none", [])


@pytest.fixture(scope="module")
def recorded(smollm, tiny_track, tmp_path_factory):
    """A record of BASE on a board, and the record a full run of BASE + p2dir makes."""
    subs = tmp_path_factory.mktemp("subs")
    folder = generate(Gaussian(), tiny_track, smollm, seed=0, out_root=subs)
    board = tmp_path_factory.mktemp("board")
    record(folder, tiny_track, smollm, BASE, board, access=ACCESS)
    full_board = tmp_path_factory.mktemp("full")
    full = record(folder, tiny_track, smollm, widened(BASE, ("p2dir",)), full_board, access=ACCESS)
    path = board / tiny_track.spec.track_id / "gaussian.json"
    pristine = tmp_path_factory.mktemp("pristine") / "gaussian.json"
    for suffix in (".json", ".npz"):
        shutil.copy(path.with_suffix(suffix), pristine.with_suffix(suffix))
    return path, folder, full, pristine


def test_an_extended_record_is_the_full_runs_record_bit_for_bit(recorded, smollm, tiny_track):
    path, folder, full, _ = recorded
    ext = extend_report(path, tiny_track, smollm, ("p2dir",), folder=folder)
    assert ext.config == full.config == widened(BASE, ("p2dir",))
    assert ext.config.probes.probes == ("radius", "p2", "p2dir")
    assert ext.headline == full.headline
    assert ext.features == full.features
    assert sorted(ext.arrays) == sorted(full.arrays)
    for k in full.arrays:
        assert np.array_equal(ext.arrays[k], full.arrays[k], equal_nan=True), k
    names = set(ext.data.submission)
    assert {"p2dir.toward_log", "p2dir.away_log", "joint.toward_vs_iso"} <= names
    assert "p2dir.frac_log" not in names  # the distance to the nearest public row is no feature
    assert ext.provenance["extended"]["probes"] == ["p2dir"]
    assert ext.provenance["extended"]["from_probes"] == ["radius", "p2"]
    old = load_report(path).validation
    assert {k: v for k, v in ext.validation.items() if k in old} == old


def test_the_board_is_extended_in_place_and_a_rerun_skips_it(
    recorded, smollm, tiny_track, monkeypatch
):
    path, folder, full, _ = recorded
    board = path.parent.parent
    before = path.read_text()
    with pytest.raises(SubmissionError):  # the board's folder is not under submissions/ here
        extend_records(tiny_track, smollm, ("p2dir",), board, progress=False)
    assert path.read_text() == before  # nothing written
    work = board.parent  # submission folders are found under <cwd>/submissions/<track>/
    shutil.copytree(folder, work / "submissions" / tiny_track.spec.track_id / "gaussian")
    monkeypatch.chdir(work)
    written = extend_records(tiny_track, smollm, ("p2dir",), board, progress=False)
    assert written == [path]
    rep = load_report(path)
    assert rep.to_json()["headline"] == full.to_json()["headline"]
    assert rep.config == full.config
    assert all(np.array_equal(rep.arrays[k], full.arrays[k], equal_nan=True) for k in full.arrays)
    assert extend_records(tiny_track, smollm, ("p2dir",), board, progress=False) == []


def test_another_folder_or_a_probe_already_run_is_refused(recorded, smollm, tiny_track, tmp_path):
    _, folder, _, path = recorded
    other = generate(Gaussian(), tiny_track, smollm, seed=1, out_root=tmp_path)
    with pytest.raises(SubmissionError, match="metadata|validation"):
        extend_report(path, tiny_track, smollm, ("p2dir",), folder=other)
    with pytest.raises(ConfigError, match="already runs"):
        extend_report(path, tiny_track, smollm, ("p2",), folder=folder)
    with pytest.raises(ConfigError, match="unknown probe"):
        widened(BASE, ("nope",))
