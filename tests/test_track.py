"""Tracks: build -> save -> load bit-exact, publish -> download identical, refusals."""

import json
import shutil

import numpy as np
import pytest
import torch

from challenge.errors import ConfigError, TrackIntegrityError
from challenge.store import download, publish, verify_track
from challenge.track import SPLITS, TrackSpec, get_spec, load_track


def test_splits_are_disjoint_and_well_formed(tiny_track):
    rows = {s: {tuple(r) for r in tiny_track.splits[s]["tokens"].tolist()} for s in SPLITS}
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1 :]:
            assert not rows[a] & rows[b], f"{a} and {b} share prompt windows"
    spec = tiny_track.spec
    assert tiny_track.splits["public"]["tokens"].shape == (spec.n_public, 10)
    assert tiny_track.splits["heldout"]["activation"].shape == (spec.n_heldout, 576)
    assert tiny_track.splits["context"]["activation"].dtype == np.float32


def test_stored_activations_are_the_models(smollm, tiny_track):
    """Re-running the model on stored tokens gives the stored activations, bit for bit: the
    build ran the 64 context prompts as one batch (``batch_size`` 256) in float32, and so does
    this independent TransformerLens pass (the blocks after the write point do not change it)."""
    toks = tiny_track.tokens("context")
    assert len(toks) <= 256
    with torch.no_grad():
        _, cache = smollm.model.run_with_cache(toks, names_filter="blocks.1.hook_resid_pre")
    assert torch.equal(cache["blocks.1.hook_resid_pre"][:, -1], tiny_track.acts("context"))


def test_units_and_card_record_how_it_was_made(tiny_track, tiny_track_dir):
    u = tiny_track.units
    assert u["write_distance_median"] > 0 and u["read_distance_median"] > 0
    assert (
        abs(u["write_norm_median"] - 47) < 15
    )  # SmolLM2 layer-1 norms are near 47 (offline-models.md)
    prov = tiny_track.meta["provenance"]
    assert prov["model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and prov["transformer_lens"]
    # the CPU and its ATen kernels set the fp32 rounding of the activations (docs/scoring.md)
    assert prov["cpu"] and prov["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    card = (tiny_track_dir / "README.md").read_text()
    assert "blocks.1.hook_resid_pre" in card and card.startswith("---")


def test_a_rebuild_on_the_same_machine_is_the_same_data(smollm, tiny_track, tmp_path):
    """Building a track is deterministic on one machine: a second build holds the same data
    (``data_sha256``) though its manifest differs (the build time is in ``track.json``). On a
    machine with other ATen kernels the data differs by fp32 rounding (docs/scoring.md)."""
    from challenge.track import build_track

    again = load_track(build_track(get_spec("smollm2-135m-l1-tiny"), tmp_path / "t", lm=smollm))
    assert again.data_sha256 == tiny_track.data_sha256
    assert again.meta["built_at"] and again.meta["provenance"] == tiny_track.meta["provenance"]


def test_publish_download_roundtrip_is_identical(tiny_track, tiny_track_dir, tmp_path):
    registry = tmp_path / "registry"
    publish(tiny_track_dir, str(registry))
    got = download(
        str(registry),
        track_id="smollm2-135m-l1-tiny",
        version="1.0.0",
        cache_dir=tmp_path / "cache",
    )
    again = load_track(got)
    for s in SPLITS:
        for col in ("tokens", "activation"):
            a, b = tiny_track.splits[s][col], again.splits[s][col]
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes()


def test_a_track_missing_from_the_cache_comes_from_the_registry_not_a_rebuild(
    tiny_track, tiny_track_dir, tmp_path, monkeypatch
):
    import challenge.track as track_mod

    def no_build(*a, **k):
        raise AssertionError("built instead of fetched")

    monkeypatch.setattr(track_mod, "build_track", no_build)
    monkeypatch.setenv("PLATEAU_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PLATEAU_REGISTRY", str(tmp_path / "registry"))
    spec = get_spec("smollm2-135m-l1-tiny")
    assert track_mod.published_copy(spec) is None
    with pytest.raises(AssertionError, match="built instead"):  # nothing published: built
        track_mod.resolve_track(spec.track_id)
    publish(tiny_track_dir, str(tmp_path / "registry"))
    assert track_mod.published_copy(spec) == tmp_path / "registry" / spec.track_id / "v1.0.0"
    got = track_mod.resolve_track(spec.track_id)
    assert got.path == tmp_path / "cache" / "tracks" / spec.track_id / "v1.0.0"
    assert got.data_sha256 == tiny_track.data_sha256  # the published bits
    assert track_mod.resolve_track(spec.track_id).path == got.path  # then read from the cache


def test_corrupted_file_is_refused(tiny_track_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_track_dir, bad)
    f = bad / "data" / "heldout.parquet"
    raw = bytearray(f.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    f.write_bytes(bytes(raw))
    with pytest.raises(TrackIntegrityError, match="heldout.parquet.*checksum mismatch"):
        load_track(bad)


def test_wrong_version_or_missing_manifest_is_refused(tiny_track_dir, tmp_path):
    registry = tmp_path / "registry"
    publish(tiny_track_dir, str(registry))
    with pytest.raises(TrackIntegrityError, match="v2.0.0"):
        download(
            str(registry),
            track_id="smollm2-135m-l1-tiny",
            version="2.0.0",
            cache_dir=tmp_path / "c",
        )
    assert not (tmp_path / "c").exists()  # nothing written half-way
    bad = tmp_path / "nomanifest"
    shutil.copytree(tiny_track_dir, bad)
    (bad / "manifest.json").unlink()
    with pytest.raises(TrackIntegrityError, match="manifest missing"):
        verify_track(bad)
    meta = json.loads((tiny_track_dir / "track.json").read_text())
    assert meta["version"] == "1.0.0"


@pytest.mark.parametrize(
    "kw, field",
    [
        ({"position": 3}, "position"),
        ({"n_public": 1}, "n_public"),
        ({"n_heldout": 2.5}, "n_heldout"),
        ({"write_hook": "blocks.1.attn.hook_z"}, "write_hook"),
        ({"read_hook": ""}, "read_hook"),
        ({"track_id": ""}, "track_id"),
    ],
)
def test_spec_refuses_bad_values(kw, field):
    with pytest.raises(ConfigError, match=f"field {field}"):
        TrackSpec(**kw)


def test_spec_validation_and_lookup(tmp_path):
    with pytest.raises(ConfigError, match="position"):
        TrackSpec(position=3)
    with pytest.raises(ConfigError, match="unknown track"):
        get_spec("no-such-track")
    p = tmp_path / "spec.json"
    p.write_text(json.dumps(TrackSpec(track_id="custom", n_public=10).to_dict()))
    assert get_spec(str(p)).track_id == "custom"
