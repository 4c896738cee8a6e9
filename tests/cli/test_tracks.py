"""build, tracks, publish, download."""

import json

import pytest

from challenge.track import SPLITS, TRACKS, TrackSpec, load_track


def test_tracks_lists_the_registry(plateau):
    out = plateau("tracks")
    for tid in TRACKS:
        assert tid in out


def test_build_a_spec_file(plateau, tmp_path):
    spec = TrackSpec(track_id="cli-mini", n_public=8, n_heldout=4, n_context=4)
    (tmp_path / "mini.json").write_text(json.dumps(spec.to_dict()))
    out = plateau("build", tmp_path / "mini.json", "--out", tmp_path / "mini")
    assert f"-> {tmp_path / 'mini'}" in out
    tr = load_track(tmp_path / "mini")
    assert tr.spec == spec
    assert {s: len(tr.acts(s)) for s in SPLITS} == {"public": 8, "heldout": 4, "context": 4}


def test_publish_then_download_is_the_same_track(plateau, tiny_track, tiny_track_dir, tmp_path):
    registry = tmp_path / "registry"
    plateau("publish", tiny_track_dir, registry)
    out = plateau(
        "download",
        registry,
        "--track-id",
        tiny_track.spec.track_id,
        "--version",
        tiny_track.spec.version,
        "--cache-dir",
        tmp_path / "got",
    )
    assert str(tmp_path / "got") in out
    got = load_track(tmp_path / "got")
    for s in SPLITS:
        assert got.splits[s]["activation"].tobytes() == tiny_track.splits[s]["activation"].tobytes()


def test_download_pins_the_registered_version_by_default(plateau, tiny_track_dir, tmp_path, capsys):
    registry = tmp_path / "registry"
    plateau("publish", tiny_track_dir, registry)
    tid = "smollm2-135m-l1-tiny"
    out = plateau("download", registry, "--track-id", tid, "--cache-dir", tmp_path / "got")
    assert str(tmp_path / "got") in out
    assert load_track(tmp_path / "got").spec.version == TRACKS[tid].version
    with pytest.raises(SystemExit):
        plateau("download", registry, "--track-id", "not-registered")
    assert (
        "'not-registered' is not a registered track; give its --version" in capsys.readouterr().err
    )
