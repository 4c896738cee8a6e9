"""On-disk format of a challenge track, and publishing / downloading it.

```
<track_dir>/track.json              metadata: spec + provenance (sorted keys)
<track_dir>/README.md               dataset card (Hugging Face YAML header + prose)
<track_dir>/data/<split>.parquet    one per split, written by datasets.Dataset.to_parquet
<track_dir>/manifest.json           {"format", "track_id", "version", "files": {path: {sha256, bytes}}}
```
Parquet is what the hub serves for datasets, so ``datasets.load_dataset("parquet", ...)`` here
and ``load_dataset(<repo id>)`` for a published track read the same files. Columns: 2-D arrays
become fixed-length list columns (``tokens`` int64 ``[N, T]``, ``activation`` float32
``[N, d]``); float32 round-trips bit-exact. Writes go to a sibling temp directory that is
renamed into place, so a failed write leaves nothing half-way.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from challenge.errors import ConfigError, TrackIntegrityError
from challenge.results import atomic_dir

FORMAT = "plateau-track/1"
MANIFEST = "manifest.json"
SAE_FOLDER = "saes"
"""A published track's SAEs: ``<track>/saes/<SAE name>/`` in SAELens' layout, each with its own
:data:`SAE_MANIFEST` (outside the track's manifest, so publishing an SAE leaves the track's
checksum, and every score made on it, unchanged)."""
SAE_MANIFEST = "sae_manifest.json"
SAE_FORMAT = "plateau-sae/1"


@contextmanager
def _quiet_datasets() -> Iterator[None]:
    """`datasets` without its progress bars ("Generating split split", "Creating parquet from
    Arrow format") and below-error logs, restored after; its errors still raise and log."""
    import datasets

    bars_off = datasets.are_progress_bars_disabled()
    level = datasets.logging.get_verbosity()
    with warnings.catch_warnings():  # HF_DATASETS_DISABLE_PROGRESS_BARS=0 keeps the bars
        warnings.simplefilter("ignore")
        datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    try:
        yield
    finally:
        datasets.logging.set_verbosity(level)
        if not bars_off:
            datasets.enable_progress_bars()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _features(columns: dict[str, np.ndarray]):
    """Explicit `datasets` features so dtypes and fixed lengths survive the round trip."""
    import datasets

    feats = {}
    for name, arr in columns.items():
        if arr.dtype == object or arr.dtype.kind in "US":
            feats[name] = datasets.Value("string")
            continue
        dtype = {
            np.dtype("float32"): "float32",
            np.dtype("float64"): "float64",
            np.dtype("int64"): "int64",
            np.dtype("int32"): "int32",
            np.dtype("bool"): "bool",
        }.get(arr.dtype)
        if dtype is None:
            raise ConfigError(f"unsupported dtype {arr.dtype}", field=name)
        if arr.ndim == 1:
            feats[name] = datasets.Value(dtype)
        elif arr.ndim == 2:
            feats[name] = datasets.Sequence(datasets.Value(dtype), length=arr.shape[1])
        else:
            raise ConfigError(f"columns must be 1-D or 2-D, got shape {arr.shape}", field=name)
    return datasets.Features(feats)


def _check_split(split: str, columns: dict[str, Any]) -> dict[str, np.ndarray]:
    cols, n = {}, None
    for name, arr in columns.items():
        try:
            a = np.asarray(arr)
        except ValueError as e:  # ragged
            raise ConfigError(f"split {split}: column is ragged ({e})", field=name) from e
        if a.dtype == object and a.ndim > 1:
            raise ConfigError(f"split {split}: column is ragged", field=name)
        if n is None:
            n = len(a)
        elif len(a) != n:
            raise ConfigError(f"split {split}: {len(a)} rows, other columns have {n}", field=name)
        cols[name] = a
    return cols


def write_track(
    out_dir: str | Path, meta: dict[str, Any], splits: dict[str, dict[str, np.ndarray]], card: str
) -> dict[str, Any]:
    """Write a track atomically and return its manifest."""
    import datasets

    for key in ("track_id", "version"):
        if key not in meta:
            raise ConfigError("track metadata needs this key", field=key)
    checked = {s: _check_split(s, c) for s, c in splits.items()}
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / MANIFEST).exists():
        raise ConfigError(
            "exists, is not empty and is not a track; refusing to replace it", file=str(out_dir)
        )
    with atomic_dir(out_dir) as tmp, _quiet_datasets():
        (tmp / "data").mkdir()
        for split, cols in checked.items():
            data = {k: (v.tolist() if v.dtype == object else v) for k, v in cols.items()}
            ds = datasets.Dataset.from_dict(data, features=_features(cols))
            ds.to_parquet(str(tmp / "data" / f"{split}.parquet"))
        (tmp / "track.json").write_text(json.dumps(meta, indent=1, sort_keys=True, default=str))
        (tmp / "README.md").write_text(card)
        files = {
            p.relative_to(tmp).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
            for p in sorted(tmp.rglob("*"))
            if p.is_file()
        }
        manifest = {
            "format": FORMAT,
            "track_id": meta["track_id"],
            "version": str(meta["version"]),
            "files": files,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


def verify_track(track_dir: str | Path) -> dict[str, Any]:
    """Check every file against the manifest; raise TrackIntegrityError naming the file."""
    track_dir = Path(track_dir)
    mpath = track_dir / MANIFEST
    if not mpath.exists():
        raise TrackIntegrityError("manifest missing", file=str(mpath))
    try:
        manifest = json.loads(mpath.read_text())
        files = manifest["files"]
    except (json.JSONDecodeError, KeyError) as e:
        raise TrackIntegrityError(f"malformed manifest ({e})", file=str(mpath)) from e
    if manifest.get("format") != FORMAT:
        raise TrackIntegrityError(
            f"unknown format {manifest.get('format')!r}, expected {FORMAT}",
            file=str(mpath),
            field="format",
        )
    for rel, info in files.items():
        p = track_dir / rel
        if not p.exists():
            raise TrackIntegrityError("listed in the manifest but missing", file=str(p))
        got = sha256_file(p)
        if got != info["sha256"]:
            raise TrackIntegrityError(
                f"checksum mismatch: expected {info['sha256'][:16]}..., got {got[:16]}...",
                file=str(p),
                field="sha256",
            )
    extra = [
        p.relative_to(track_dir).as_posix() for p in (track_dir / "data").glob("*") if p.is_file()
    ]
    extra = [e for e in extra if e not in files]
    if extra:
        raise TrackIntegrityError(
            f"data files not in the manifest: {extra}", file=str(track_dir / "data")
        )
    meta = json.loads((track_dir / "track.json").read_text())
    for key in ("track_id", "version"):
        if str(meta.get(key)) != str(manifest.get(key)):
            raise TrackIntegrityError(
                f"track.json says {meta.get(key)!r}, manifest says {manifest.get(key)!r}",
                file=str(track_dir / "track.json"),
                field=key,
            )
    return manifest


def read_track(
    track_dir: str | Path, verify: bool = True
) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """Metadata and splits as numpy arrays with their stored dtypes and shapes."""
    import datasets

    track_dir = Path(track_dir)
    if verify:
        verify_track(track_dir)
    meta = json.loads((track_dir / "track.json").read_text())
    splits: dict[str, dict[str, np.ndarray]] = {}
    with tempfile.TemporaryDirectory() as cache, _quiet_datasets():
        for path in sorted((track_dir / "data").glob("*.parquet")):
            ds = datasets.load_dataset(
                "parquet",
                data_files={"split": str(path)},
                split="split",
                cache_dir=cache,
                keep_in_memory=True,
            )
            splits[path.stem] = _arrow_to_numpy(ds.data.table)
    return meta, splits


def _arrow_to_numpy(table) -> dict[str, np.ndarray]:
    """Arrow columns -> numpy with the stored dtype; list columns -> 2-D arrays."""
    import pyarrow as pa

    cols = {}
    for name in table.column_names:
        col = table.column(name).combine_chunks()
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            cols[name] = np.array(col.to_pylist(), dtype=object)
        elif (
            pa.types.is_list(col.type)
            or pa.types.is_fixed_size_list(col.type)
            or pa.types.is_large_list(col.type)
        ):
            flat = col.flatten().to_numpy(zero_copy_only=False)
            cols[name] = (flat.reshape(len(col), -1) if len(col) else flat.reshape(0, 0)).copy()
        else:
            cols[name] = col.to_numpy(zero_copy_only=False).copy()
    return cols


def _registry_path(root: Path, track_id: str, version: str) -> Path:
    return root / track_id / f"v{version}"


def publish(
    track_dir: str | Path,
    dest: str,
    *,
    saes: list[Path] | tuple[Path, ...] = (),
    statistics: Path | None = None,
    private: bool = False,
) -> str:
    """Push a verified track to the hub (``hf://<repo id>``, tagged ``v<version>``) or copy it
    into a local registry directory ``<dest>/<track_id>/v<version>/``, with the SAE folders
    ``saes`` under ``saes/<name>/`` (SAELens layout plus ``sae_manifest.json``) and the
    statistics artifact folder ``statistics`` under ``statistics/`` (verified first)."""
    track_dir = Path(track_dir)
    manifest = verify_track(track_dir)
    verify_published_saes(track_dir)
    _verify_statistics_of(track_dir, statistics, manifest)
    _verify_reference_of(track_dir)

    def add(target: Path) -> None:
        _add_saes(target, saes)
        _add_statistics(target, statistics)

    tid, ver = manifest["track_id"], manifest["version"]
    if dest.startswith("hf://"):
        from huggingface_hub import HfApi

        repo = dest[len("hf://") :]
        api = HfApi()
        api.create_repo(repo, repo_type="dataset", exist_ok=True, private=private)
        with tempfile.TemporaryDirectory(prefix=".publish.") as tmp:
            staged = Path(tmp) / "t"
            shutil.copytree(track_dir, staged)
            add(staged)
            api.upload_folder(
                repo_id=repo,
                folder_path=str(staged),
                repo_type="dataset",
                commit_message=f"{tid} v{ver}",
            )
        api.create_tag(repo, tag=f"v{ver}", repo_type="dataset", exist_ok=True)
        return f"https://huggingface.co/datasets/{repo}/tree/v{ver}"
    target = _registry_path(Path(dest), tid, ver)
    if target.exists():
        if not (target / MANIFEST).exists():
            raise TrackIntegrityError("registry entry exists without a manifest", file=str(target))
        if json.loads((target / MANIFEST).read_text()).get("files") != manifest["files"]:
            raise TrackIntegrityError(
                f"registry already holds a different {tid} v{ver}; bump the version",
                file=str(target),
            )
        add(target)
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".publish.", dir=target.parent))
    try:
        shutil.copytree(track_dir, tmp / "t")
        add(tmp / "t")
        (tmp / "t").rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def download(source: str, *, track_id: str, version: str, cache_dir: Path | None = None) -> Path:
    """Fetch a pinned track version into the local cache and verify it; refuse any mismatch."""
    from challenge.models import cache_root

    version = str(version).removeprefix("v")
    target = Path(cache_dir) if cache_dir else cache_root() / "tracks" / track_id / f"v{version}"
    staging = Path(tempfile.mkdtemp(prefix=".download.", dir=_mk(target.parent)))
    try:
        if source.startswith("hf://"):
            from huggingface_hub import snapshot_download

            snapshot_download(
                source[len("hf://") :],
                repo_type="dataset",
                revision=f"v{version}",
                local_dir=str(staging / "t"),
            )
            fetched = staging / "t"
            shutil.rmtree(fetched / ".cache", ignore_errors=True)  # huggingface_hub's bookkeeping
        else:
            src = _registry_path(Path(source), track_id, version)
            if not src.exists():
                raise TrackIntegrityError(
                    f"no {track_id} v{version} in this registry", file=str(src)
                )
            fetched = staging / "t"
            shutil.copytree(src, fetched)
        manifest = verify_track(fetched)
        verify_published_saes(fetched)
        _verify_statistics_of(fetched, None, manifest)
        _verify_reference_of(fetched)
        if manifest["track_id"] != track_id or manifest["version"] != version:
            raise TrackIntegrityError(
                f"pinned {track_id} v{version}, got {manifest['track_id']} v{manifest['version']}",
                file=str(fetched / MANIFEST),
                field="version",
            )
        if target.exists():
            shutil.rmtree(target)
        fetched.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _mk(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


# ---------------------------------------------------------------------------------- SAEs
def _sae_files(sae_dir: Path) -> list[Path]:
    from challenge.sae.io import CFG_FILE, WEIGHTS_FILE

    files = [p for p in sorted(sae_dir.iterdir()) if p.is_file() and p.name != SAE_MANIFEST]
    names = {p.name for p in files}
    for need in (CFG_FILE, WEIGHTS_FILE):
        if need not in names:
            raise TrackIntegrityError(f"not an SAE folder: no {need}", file=str(sae_dir))
    return files


def data_checksum(splits: dict[str, dict[str, np.ndarray]]) -> str:
    """The checksum of a track's *content*: sha256 over every split's columns (name, dtype,
    shape and bytes of each array; the texts as UTF-8), splits and columns in sorted order.
    Two builds of the same data share it whatever their build time or parquet writer, unlike
    the manifest's checksum (``track.json`` and the card record when a track was built); two
    machines whose kernels round the activations differently do not (``docs/scoring.md``)."""
    h = hashlib.sha256()
    for split in sorted(splits):
        for col in sorted(splits[split]):
            a = np.asarray(splits[split][col])
            h.update(f"{split}/{col} {a.dtype.str} {a.shape}\n".encode())
            if a.dtype == object:
                h.update(json.dumps([str(x) for x in a.ravel()]).encode())
            else:
                h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def sae_checksum(sae_dir: str | Path) -> str:
    """An SAE folder's checksum: sha256 of the sorted ``name sha256`` lines of its files (the
    SAELens ``cfg.json``, weights and sparsity; not its manifest). Reports name it."""
    files = _sae_files(Path(sae_dir))
    lines = "".join(f"{p.name} {sha256_file(p)}\n" for p in files)
    return hashlib.sha256(lines.encode()).hexdigest()


def write_sae_manifest(sae_dir: str | Path, name: str | None = None) -> dict[str, Any]:
    """Write ``<sae_dir>/sae_manifest.json`` (every file's sha256 and size, and the checksum)."""
    sae_dir = Path(sae_dir)
    files = _sae_files(sae_dir)
    manifest = {
        "format": SAE_FORMAT,
        "name": name or sae_dir.name,
        "sha256": sae_checksum(sae_dir),
        "files": {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in files},
    }
    (sae_dir / SAE_MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


def read_manifest(mpath: Path, what: str) -> dict[str, Any]:
    """A folder manifest (a JSON object with a ``files`` mapping); ``TrackIntegrityError``
    naming it when it is missing or malformed (``what``: the folder's kind, for the message)."""
    if not mpath.is_file():
        raise TrackIntegrityError(f"{what} without a manifest", file=str(mpath))
    try:
        manifest = json.loads(mpath.read_text())
        if not isinstance(manifest["files"], dict):
            raise TypeError("files is not a mapping")
    except (ValueError, KeyError, TypeError) as e:
        raise TrackIntegrityError(f"malformed {what} manifest ({e})", file=str(mpath)) from None
    return manifest


def verify_listed_files(folder: Path, listed: dict[str, Any], manifest_name: str) -> None:
    """Check ``folder``'s files against a manifest's ``files`` (``{name: {"sha256": ...}}``):
    ``TrackIntegrityError`` naming the file on an extra file (any but ``manifest_name``), a
    missing one or a changed one."""
    present = {p.name for p in folder.iterdir() if p.is_file() and p.name != manifest_name}
    extra = sorted(present - set(listed))
    if extra:
        raise TrackIntegrityError(f"files not in the manifest: {extra}", file=str(folder))
    for name, entry in sorted(listed.items()):
        f = folder / name
        if not f.is_file():
            raise TrackIntegrityError("listed in the manifest but missing", file=str(f))
        got = sha256_file(f)
        want = entry.get("sha256") if isinstance(entry, dict) else None
        if got != want:
            raise TrackIntegrityError(
                f"sha256 mismatch: expected {str(want)[:16]}..., got {got[:16]}...",
                file=str(f),
                field="sha256",
            )


def verify_sae(sae_dir: str | Path) -> dict[str, Any]:
    """Check a published SAE folder against its manifest; ``TrackIntegrityError`` naming the
    file on any missing, extra or changed file."""
    sae_dir = Path(sae_dir)
    mpath = sae_dir / SAE_MANIFEST
    manifest = read_manifest(mpath, "published SAE")
    verify_listed_files(sae_dir, manifest["files"], SAE_MANIFEST)
    if sae_checksum(sae_dir) != manifest.get("sha256"):
        raise TrackIntegrityError("checksum mismatch", file=str(mpath), field="sha256")
    return manifest


def verify_published_saes(track_dir: str | Path) -> dict[str, str]:
    """Every SAE published with a track, verified: ``{name: checksum}``."""
    root = Path(track_dir) / SAE_FOLDER
    if not root.is_dir():
        return {}
    return {d.name: verify_sae(d)["sha256"] for d in sorted(root.iterdir()) if d.is_dir()}


def _add_saes(target: Path, saes: list[Path] | tuple[Path, ...]) -> None:
    """Copy SAE folders into ``<target>/saes/<name>/`` with their manifests; an SAE already
    there must be identical (a different one needs a new track version)."""
    for src in map(Path, saes):
        sum_ = sae_checksum(src)
        dst = target / SAE_FOLDER / src.name
        if dst.exists():
            if verify_sae(dst)["sha256"] != sum_:
                raise TrackIntegrityError(
                    "this track version already has a different SAE of this name; bump the "
                    "track version",
                    file=str(dst),
                )
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        with atomic_dir(dst) as tmp:
            for f in _sae_files(src):
                shutil.copy2(f, tmp / f.name)
            write_sae_manifest(tmp, name=src.name)


# ---------------------------------------------------------------------- statistics artifact
def _verify_statistics_of(
    track_dir: Path, statistics: Path | None, manifest: dict[str, Any]
) -> None:
    """The statistics artifacts published in ``track_dir`` and about to be (``statistics``)
    verified, and naming this track id and version."""
    from challenge.statistics.artifact import verify_statistics
    from challenge.statistics.published import STATISTICS_FOLDER

    for d in (Path(track_dir) / STATISTICS_FOLDER, statistics):
        if d is None or not Path(d).exists():
            continue
        got = verify_statistics(d)
        for key in ("track_id", "version"):
            if str(got.get(key)) != str(manifest[key]):
                raise TrackIntegrityError(
                    f"the statistics artifact is of {key} {got.get(key)!r}, the track's is "
                    f"{manifest[key]!r}",
                    file=str(Path(d) / "manifest.json"),
                    field=key,
                )


def _verify_reference_of(track_dir: Path) -> None:
    """The board reference features published in ``track_dir``, verified (when there are any)."""
    from challenge.scoring.reference import FOLDER, verify_reference_folder

    if (Path(track_dir) / FOLDER).exists():
        verify_reference_folder(Path(track_dir) / FOLDER)


def _add_statistics(target: Path, statistics: Path | None) -> None:
    """Copy the artifact folder into ``<target>/statistics/``; one already there must be
    identical (a different one needs a new track version)."""
    if statistics is None:
        return
    from challenge.statistics.artifact import verify_statistics
    from challenge.statistics.published import STATISTICS_FOLDER

    want = verify_statistics(statistics)["sha256"]
    dst = target / STATISTICS_FOLDER
    if dst.exists():
        if verify_statistics(dst)["sha256"] != want:
            raise TrackIntegrityError(
                "this track version already has a different statistics artifact; bump the "
                "track version",
                file=str(dst),
            )
        return
    with atomic_dir(dst) as tmp:
        for f in sorted(Path(statistics).iterdir()):
            if f.is_file():
                shutil.copy2(f, tmp / f.name)
