"""Track store: bit-exact round trip, registry / hub publish and download, refusals."""

import json
import shutil
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest

from challenge.errors import ConfigError, TrackIntegrityError
from challenge.store import (
    SAE_MANIFEST,
    data_checksum,
    download,
    publish,
    read_track,
    sae_checksum,
    verify_published_saes,
    verify_track,
    write_track,
)

CARD = "---\nlicense: apache-2.0\n---\n# test track\n"


def _splits(seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, n in (("public", 12), ("heldout", 5)):
        act = rng.standard_normal((n, 7)).astype(np.float32)
        act[0, :6] = [1e-38, -0.0, 1.4e-45, 3.4028235e38, -np.inf, np.nan]
        out[name] = {
            "tokens": rng.integers(0, 49152, (n, 10), dtype=np.int64),
            "activation": act,
            "scale": np.abs(act[:, -1]) + np.float32(0.5),
            "index": np.arange(n, dtype=np.int64),
        }
    return out


def _meta(version: str = "1.0.0") -> dict:
    return {"track_id": "toy", "version": version, "spec": {"n_tokens": 10}, "seed": 0}


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for s in a:
        assert a[s].keys() == b[s].keys()
        for c in a[s]:
            x, y = a[s][c], b[s][c]
            assert x.dtype == y.dtype and x.shape == y.shape, (s, c)
            assert x.tobytes() == y.tobytes(), f"{s}/{c} differs"  # bit-exact, incl. -0.0, nan


@pytest.fixture
def track(tmp_path) -> Path:
    write_track(tmp_path / "toy", _meta(), _splits(), CARD)
    return tmp_path / "toy"


def test_layout_and_bit_exact_roundtrip(track):
    files = sorted(p.relative_to(track).as_posix() for p in track.rglob("*") if p.is_file())
    assert files == [
        "README.md",
        "data/heldout.parquet",
        "data/public.parquet",
        "manifest.json",
        "track.json",
    ]
    manifest = json.loads((track / "manifest.json").read_text())
    assert manifest["format"] == "plateau-track/1"
    assert (manifest["track_id"], manifest["version"]) == ("toy", "1.0.0")
    assert set(manifest["files"]) == set(files) - {"manifest.json"}
    assert (track / "README.md").read_text() == CARD
    assert (track / "track.json").read_text().startswith('{\n "seed": 0')  # sort_keys, indent=1
    meta, splits = read_track(track)
    assert meta == _meta()
    _assert_same(_splits(), splits)
    assert np.signbit(splits["public"]["activation"][0, 1])  # -0.0 kept
    assert splits["public"]["activation"][0, 0] == np.float32(1e-38)


def test_parquet_is_a_plain_hf_dataset(track):
    import datasets

    ds = datasets.Dataset.from_parquet(str(track / "data" / "public.parquet"), keep_in_memory=True)
    assert ds.features["tokens"].length == 10 and ds.num_rows == 12
    assert ds.features["activation"].feature.dtype == "float32"


def test_data_checksum_names_the_content_not_the_copy(track, tmp_path):
    """The same data written again with another build time has another manifest checksum but the
    same data checksum; one ulp of one activation, one token or the split a row sits in
    changes it."""
    meta, splits = read_track(track)
    assert data_checksum(splits) == data_checksum(_splits())  # through parquet and back
    again = tmp_path / "again"
    write_track(again, {**_meta(), "built_at": "another time"}, _splits(), CARD)
    assert (again / "manifest.json").read_bytes() != (track / "manifest.json").read_bytes()
    assert data_checksum(read_track(again)[1]) == data_checksum(splits)
    reordered = {s: dict(reversed(list(splits[s].items()))) for s in reversed(list(splits))}
    assert data_checksum(reordered) == data_checksum(splits)  # the dicts' order is not content

    def changed(edit) -> str:
        other = {s: {c: a.copy() for c, a in cols.items()} for s, cols in _splits().items()}
        edit(other)
        return data_checksum(other)

    def ulp(o):
        a = o["heldout"]["activation"]
        a[2, 3] = np.nextafter(a[2, 3], np.float32(np.inf))

    def token(o):
        o["public"]["tokens"][5, 0] += 1

    def split(o):  # the same rows, one moved from public to heldout
        for c in o["public"]:
            o["heldout"][c] = np.concatenate([o["heldout"][c], o["public"][c][-1:]])
            o["public"][c] = o["public"][c][:-1]

    sums = {changed(e) for e in (ulp, token, split)}
    assert len(sums) == 3 and data_checksum(splits) not in sums


def test_rewrite_replaces_and_manifest_tracks_it(track):
    m = write_track(track, _meta(), _splits(seed=1), CARD)
    assert verify_track(track) == m
    _assert_same(_splits(seed=1), read_track(track)[1])


def test_meta_needs_id_and_version(tmp_path):
    with pytest.raises(ConfigError, match="version"):
        write_track(tmp_path / "t", {"track_id": "toy"}, _splits(), CARD)
    with pytest.raises(ConfigError, match="track_id"):
        write_track(tmp_path / "t", {"version": "1"}, _splits(), CARD)
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize(
    "bad",
    [
        {"tokens": [[1, 2, 3], [4, 5]]},  # ragged
        {"tokens": np.zeros((3, 2), np.int64), "activation": np.zeros((4, 2), np.float32)},
        {"activation": np.zeros((3, 2, 2), np.float32)},  # 3-D
    ],
)
def test_bad_column_leaves_nothing_half_way(track, bad):
    before = {p.name: p.read_bytes() for p in track.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError):
        write_track(track, _meta("2.0.0"), {**_splits(), "zzz": bad}, CARD)
    assert sorted(p.name for p in track.parent.iterdir()) == ["toy"]  # no temp dir left
    assert {p.name: p.read_bytes() for p in track.rglob("*") if p.is_file()} == before
    with pytest.raises(ConfigError):
        write_track(track.parent / "fresh", _meta(), {"zzz": bad}, CARD)
    assert sorted(p.name for p in track.parent.iterdir()) == ["toy"]


def test_flipped_byte_is_refused_with_file_name(track, tmp_path):
    f = track / "data" / "public.parquet"
    raw = bytearray(f.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    f.write_bytes(bytes(raw))
    with pytest.raises(TrackIntegrityError, match=r"public\.parquet.*checksum mismatch: expected"):
        verify_track(track)
    with pytest.raises(TrackIntegrityError, match="checksum mismatch"):
        read_track(track)


def test_other_integrity_refusals(track, tmp_path):
    def copy(name: str) -> Path:
        return Path(shutil.copytree(track, tmp_path / name))

    d = copy("nomanifest")
    (d / "manifest.json").unlink()
    with pytest.raises(TrackIntegrityError, match="manifest.json.*manifest missing"):
        verify_track(d)
    d = copy("missing")
    (d / "data" / "heldout.parquet").unlink()
    with pytest.raises(TrackIntegrityError, match="heldout.parquet"):
        verify_track(d)
    d = copy("extra")
    shutil.copy(d / "data" / "public.parquet", d / "data" / "public2.parquet")
    with pytest.raises(TrackIntegrityError, match="public2.parquet"):
        read_track(d)
    d = copy("relabelled")
    meta = json.loads((d / "track.json").read_text())
    (d / "track.json").write_text(json.dumps({**meta, "version": "9.9.9"}))
    m = json.loads((d / "manifest.json").read_text())  # re-sign track.json, keep the version
    from challenge.store import sha256_file

    m["files"]["track.json"] = {
        "sha256": sha256_file(d / "track.json"),
        "bytes": (d / "track.json").stat().st_size,
    }
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(TrackIntegrityError, match="track.json.*version"):
        verify_track(d)


def test_local_registry_publish_download(track, tmp_path):
    reg = tmp_path / "registry"
    where = publish(track, str(reg))
    assert Path(where) == reg / "toy" / "v1.0.0"
    assert publish(track, str(reg)) == where  # identical content: a no-op
    got = download(str(reg), track_id="toy", version="1.0.0", cache_dir=tmp_path / "cache")
    meta, splits = read_track(got)
    assert meta == _meta()
    _assert_same(_splits(), splits)

    other = tmp_path / "other"
    write_track(other, _meta(), _splits(seed=5), CARD)  # same id and version, other content
    with pytest.raises(TrackIntegrityError, match="v1.0.0"):
        publish(other, str(reg))
    _assert_same(_splits(), read_track(reg / "toy" / "v1.0.0")[1])


def test_download_refuses_wrong_pin_and_corruption(track, tmp_path):
    reg = tmp_path / "registry"
    publish(track, str(reg))
    with pytest.raises(TrackIntegrityError, match="v2.0.0"):
        download(str(reg), track_id="toy", version="2.0.0", cache_dir=tmp_path / "c")
    # a registry entry filed under the wrong version is caught by the pin check
    shutil.copytree(reg / "toy" / "v1.0.0", reg / "toy" / "v3.0.0")
    with pytest.raises(TrackIntegrityError, match="3.0.0"):
        download(str(reg), track_id="toy", version="3.0.0", cache_dir=tmp_path / "c")
    f = reg / "toy" / "v1.0.0" / "data" / "heldout.parquet"
    f.write_bytes(f.read_bytes()[:-1] + b"\0")
    with pytest.raises(TrackIntegrityError, match="heldout.parquet.*checksum mismatch"):
        download(str(reg), track_id="toy", version="1.0.0", cache_dir=tmp_path / "c")
    assert not (tmp_path / "c").exists()  # no partial copy left
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_default_cache_location(track, tmp_path, monkeypatch):
    monkeypatch.setenv("PLATEAU_CACHE", str(tmp_path / "pc"))
    reg = tmp_path / "registry"
    publish(track, str(reg))
    got = download(str(reg), track_id="toy", version="1.0.0")
    assert got == tmp_path / "pc" / "tracks" / "toy" / "v1.0.0"
    verify_track(got)


def test_hub_publish_calls(track, monkeypatch):
    calls: list[tuple[str, tuple, dict]] = []

    uploaded: list[str] = []

    def rec(name):
        def f(self, *args, **kwargs):
            calls.append((name, args, kwargs))
            if name == "upload_folder":  # a staged copy: the track's files exactly
                root = Path(kwargs["folder_path"])
                uploaded.extend(
                    sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
                )
            return None

        return f

    for name in ("create_repo", "upload_folder", "create_tag"):
        monkeypatch.setattr(huggingface_hub.HfApi, name, rec(name))
    url = publish(track, "hf://org/toy-track")
    assert "org/toy-track" in url and url.endswith("v1.0.0")
    byname = {n: (a, k) for n, a, k in calls}
    assert [n for n, _, _ in calls] == ["create_repo", "upload_folder", "create_tag"]
    a, k = byname["create_repo"]
    assert "org/toy-track" in (*a, k.get("repo_id")) and k["repo_type"] == "dataset"
    a, k = byname["upload_folder"]
    assert k["repo_id"] == "org/toy-track" and k["repo_type"] == "dataset"
    assert uploaded == sorted(
        p.relative_to(track).as_posix() for p in track.rglob("*") if p.is_file()
    )
    a, k = byname["create_tag"]
    assert k["tag"] == "v1.0.0" and k["repo_type"] == "dataset"


def test_hub_publish_verifies_first(track, monkeypatch):
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda *a, **k: pytest.fail())
    (track / "README.md").write_text("edited after writing")
    with pytest.raises(TrackIntegrityError, match="README.md"):
        publish(track, "hf://org/toy-track")


def test_hub_download_via_snapshot(track, tmp_path, monkeypatch):
    seen = {}

    def fake_snapshot(repo_id, *, repo_type, revision, local_dir, **kw):
        seen.update(repo_id=repo_id, repo_type=repo_type, revision=revision)
        shutil.copytree(track, local_dir, dirs_exist_ok=True)
        (Path(local_dir) / ".gitattributes").write_text("*.parquet filter=lfs\n")
        return local_dir

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    got = download("hf://org/toy-track", track_id="toy", version="1.0.0", cache_dir=tmp_path / "c")
    assert seen == {"repo_id": "org/toy-track", "repo_type": "dataset", "revision": "v1.0.0"}
    _assert_same(_splits(), read_track(got)[1])
    with pytest.raises(TrackIntegrityError):
        download("hf://org/toy-track", track_id="other", version="1.0.0", cache_dir=tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_write_track_refuses_to_replace_a_non_track_directory(tmp_path):
    import numpy as np

    from challenge.errors import ConfigError
    from challenge.store import write_track

    precious = tmp_path / "mine"
    precious.mkdir()
    (precious / "precious.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not a track"):
        write_track(
            precious,
            {"track_id": "t", "version": "1"},
            {"s": {"x": np.zeros(2, np.float32)}},
            "card",
        )
    assert (precious / "precious.txt").read_text() == "keep me"


def _toy_sae(root: Path, name: str = "topk-8-k2", fill: int = 1) -> Path:
    """An SAE folder in SAELens' layout (the store only checks files, not tensors)."""
    d = root / name
    d.mkdir(parents=True)
    (d / "cfg.json").write_text(json.dumps({"d_in": 7, "d_sae": 8}))
    (d / "sae_weights.safetensors").write_bytes(bytes([fill]) * 4096)
    (d / "sparsity.safetensors").write_bytes(b"\0" * 64)
    return d


def test_saes_are_published_with_the_track_and_verified_on_download(track, tmp_path):
    sae = _toy_sae(tmp_path / "saes")
    before = (track / "manifest.json").read_bytes()
    reg = tmp_path / "registry"
    where = Path(publish(track, str(reg), saes=[sae]))
    pub = where / "saes" / sae.name
    assert sorted(p.name for p in pub.iterdir()) == sorted(
        ["cfg.json", "sae_weights.safetensors", "sparsity.safetensors", SAE_MANIFEST]
    )
    # the track's own manifest (its checksum, which every score names) is unchanged
    assert (where / "manifest.json").read_bytes() == before
    got = download(str(reg), track_id="toy", version="1.0.0", cache_dir=tmp_path / "c")
    assert verify_published_saes(got) == {sae.name: sae_checksum(sae)}
    # publishing again with the same SAE is a no-op; another SAE of that name is refused
    assert Path(publish(track, str(reg), saes=[sae])) == where
    other = _toy_sae(tmp_path / "other", fill=2)
    with pytest.raises(TrackIntegrityError, match="different SAE"):
        publish(track, str(reg), saes=[other])
    # a flipped byte of a published SAE is refused on download, naming the file
    w = pub / "sae_weights.safetensors"
    w.write_bytes(b"\2" + w.read_bytes()[1:])
    with pytest.raises(TrackIntegrityError, match="sae_weights.safetensors.*sha256 mismatch"):
        download(str(reg), track_id="toy", version="1.0.0", cache_dir=tmp_path / "c2")
    assert not (tmp_path / "c2").exists()


def test_sae_checksum_is_its_files_content(tmp_path):
    a = _toy_sae(tmp_path / "a")
    b = _toy_sae(tmp_path / "b")  # same files elsewhere: same checksum
    assert sae_checksum(a) == sae_checksum(b)
    (b / "sparsity.safetensors").write_bytes(b"\1" * 64)
    assert sae_checksum(a) != sae_checksum(b)
    (a / "cfg.json").unlink()
    with pytest.raises(TrackIntegrityError, match="no cfg.json"):
        sae_checksum(a)
