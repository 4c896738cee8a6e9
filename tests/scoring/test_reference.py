"""The board's reference features published with the track: a scorer that finds them probes only
the submission and makes the same report as one that probes the reference itself (on the same
machine, bit for bit); tampered or foreign files are refused by name."""

import json
import shutil
from dataclasses import asdict, replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import challenge.scoring.recording as recording
from challenge.directions import ActivationStats, gaussian_like
from challenge.errors import ChallengeError, TrackIntegrityError
from challenge.scoring import ScoreConfig
from challenge.scoring.recording import score_points
from challenge.scoring.reference import (
    FOLDER,
    board_reference,
    key_name,
    published_reference,
    reference_key,
    save_reference,
    verify_reference_folder,
)
from challenge.scoring.report import ScoreArrays
from challenge.track import load_track

ROOT = Path(__file__).resolve().parents[2]
CFG = ScoreConfig().quick()


@pytest.fixture()
def track(tiny_track_dir, tmp_path):
    return load_track(shutil.copytree(tiny_track_dir, tmp_path / "track"))


@pytest.fixture()
def points(track):
    import torch

    g = torch.Generator().manual_seed(0)
    return gaussian_like(ActivationStats.fit(track.acts("public")), CFG.n_points, g)


def test_published_features_give_the_probed_report_and_skip_the_reference_probe(
    track, points, smollm, monkeypatch
):
    probed = score_points(track, smollm, points, CFG, progress=False, cache=False,
                          reference="probe")  # fmt: skip
    assert published_reference(track, CFG, CFG.n_points) is None  # nothing published yet
    ref = ScoreArrays.of(probed.arrays).reference
    folder = track.path / FOLDER
    save_reference(ref, reference_key(track, CFG, CFG.n_points), probed.provenance, folder)
    assert set(verify_reference_folder(folder)) == {p.stem for p in folder.glob("*.npz")}

    calls = []
    real = recording.round_features

    def counting(track_, engine, pts, *a, **k):
        calls.append(pts is None)
        return real(track_, engine, pts, *a, **k)

    monkeypatch.setattr(recording, "round_features", counting)
    read = score_points(track, smollm, points, CFG, progress=False, cache=False)
    assert calls == [False]  # the submission only
    assert read.headline == probed.headline
    assert set(read.arrays) == set(probed.arrays)
    for k in probed.arrays:
        assert np.array_equal(read.arrays[k], probed.arrays[k]), k
    src = read.provenance["reference_features"]
    assert src["source"] == "published" and len(src["sha256"]) == 64
    assert "reference_features" not in probed.provenance
    # another scorer config (seed) has no published features: probed again
    calls.clear()
    score_points(track, smollm, points, replace(CFG, seed=1), progress=False, cache=False)
    assert calls == [True, False]


def test_a_tampered_or_unlisted_file_is_refused_by_name(track, tmp_path):
    key = reference_key(track, CFG, CFG.n_points)
    feats = {"radius.mean_log": np.arange(40.0), "p2.sharpness_kl": np.ones(40)}
    folder = track.path / FOLDER
    npz = save_reference(feats, key, {"cpu": "x"}, folder)
    got, meta = published_reference(track, CFG, CFG.n_points)
    assert np.array_equal(got["radius.mean_log"], feats["radius.mean_log"])
    assert meta["probed_on"]["cpu"] == "x"
    # the same key with other features is refused (a new track version is needed)
    with pytest.raises(TrackIntegrityError, match="already holds other reference features"):
        save_reference(feats | {"p2.sharpness_kl": np.zeros(40)}, key, {}, folder)
    good = npz.read_bytes()
    npz.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(TrackIntegrityError, match="sha256 mismatch") as e:
        published_reference(track, CFG, CFG.n_points)
    assert e.value.file == str(npz)
    with pytest.raises(TrackIntegrityError, match="sha256 mismatch"):
        verify_reference_folder(folder)
    npz.write_bytes(good)
    (folder / "stray.npz").write_bytes(b"x")
    with pytest.raises(TrackIntegrityError, match="files not in the index"):
        verify_reference_folder(folder)
    (folder / "stray.npz").unlink()
    meta_path = npz.with_suffix(".json")
    doc = json.loads(meta_path.read_text())
    doc["key"]["seed"] = 7  # a file whose key is not the one its name stands for
    meta_path.write_text(json.dumps(doc))
    with pytest.raises(TrackIntegrityError, match="key"):
        published_reference(track, CFG, CFG.n_points)


def test_the_committed_board_shares_one_reference_and_publishes_it():
    """Every record of the SmolLM2 board was scored against the same reference features, and
    those are the ones the registry publishes for the board's config."""
    from challenge.scoring.board import load_records
    from challenge.track import get_spec, published_copy

    recs = load_records("smollm2-135m-l1", ROOT / "leaderboard")
    ref, prov = board_reference(recs)
    rep = next(iter(recs.values()))
    n = len(next(iter(ref.values()))) // rep.config.contexts_per_row
    key = reference_key(SimpleNamespace(manifest_sha256=rep.track.manifest_sha256), rep.config, n)
    name = key_name(json.loads(json.dumps(key)))
    index = published_copy(get_spec("smollm2-135m-l1")) / FOLDER / "index.json"
    assert name in json.loads(index.read_text())  # beside the keys of earlier board configs
    with np.load(index.parent / f"{name}.npz") as z:
        assert set(z.files) == set(ref)
        assert all(np.array_equal(z[k], ref[k]) for k in ref)
    meta = json.loads((index.parent / f"{name}.json").read_text())
    assert meta["probed_on"]["cpu_capability"] == prov["cpu_capability"]
    assert meta["key"]["probes"] == json.loads(json.dumps(asdict(rep.config.probes)))
    if "extended" in prov:  # probes added to the board later ran on another machine
        assert meta["added_probed_on"]["probes"] == prov["extended"]["probes"]


def test_a_board_whose_records_disagree_on_the_reference_is_refused(tmp_path):
    from challenge.scoring.board import load_records

    d = tmp_path / "smollm2-135m-l1"
    d.mkdir()
    board = ROOT / "leaderboard" / "smollm2-135m-l1"
    for name in ("gaussian", "isotropic"):
        shutil.copy(board / f"{name}.json", d)
        shutil.copy(board / f"{name}.npz", d)
    with np.load(d / "isotropic.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["reference/radius.mean_log"] = arrays["reference/radius.mean_log"] + 1e-6
    np.savez(d / "isotropic.npz", **arrays)
    with pytest.raises(ChallengeError, match="differ from the board's other records") as e:
        board_reference(load_records(d.name, tmp_path))
    assert e.value.file.endswith("isotropic.json")
