"""Result files: a JSON document (config, provenance, summary) beside a ``.npz`` of arrays."""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import challenge


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, str]:
    """The CPU and the ATen kernels it runs (AVX2, AVX512, ...): they set the fp32 rounding of
    activations and probes, so results made on two machines can differ in the last digits."""
    return {"cpu": cpu_name(), "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def provenance(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """How a result was made: suite, library versions and platform (:func:`machine`), plus
    caller fields."""
    from importlib.metadata import version

    def v(pkg):
        try:
            return version(pkg)
        except Exception:
            return "unknown"

    return {
        "suite_version": challenge.__version__,
        "torch": torch.__version__,
        "transformer_lens": v("transformer_lens"),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        **machine(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(extra or {}),
    }


def to_jsonable(x: Any) -> Any:
    if is_dataclass(x) and not isinstance(x, type):
        return to_jsonable(asdict(x))
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, torch.Tensor):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


@contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a temp folder beside ``target``; when the block succeeds it replaces ``target``
    (rename), when it raises nothing of it is left behind and ``target`` is untouched."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_result(
    out_dir: str | Path, name: str, doc: dict[str, Any], arrays: dict[str, np.ndarray] | None = None
) -> Path:
    """Write ``<out_dir>/<name>.json`` (and ``<name>.npz`` when arrays are given); return the JSON path."""
    out_dir = Path(out_dir)
    js = out_dir / f"{name}.json"
    text = json.dumps(to_jsonable(doc), indent=1, sort_keys=False)
    _atomic_write(js, lambda p: Path(p).write_text(text))
    if arrays:

        def w(p):
            with open(p, "wb") as f:
                np.savez_compressed(f, **{k: np.asarray(v) for k, v in arrays.items()})

        _atomic_write(out_dir / f"{name}.npz", w)
    return js


def load_result(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    path = Path(path)
    doc = json.loads(path.read_text())
    npz = path.with_suffix(".npz")
    arrays = dict(np.load(npz)) if npz.exists() else {}
    return doc, arrays


# ---------------------------------------------------------------------------- typed results
@dataclass
class TrackRef:
    """Which track a result was made on (id, version, where, its manifest checksum, units)."""

    id: str
    version: str
    path: str | None = None
    manifest_sha256: str | None = None
    units: dict[str, float] = field(default_factory=dict)
    data_sha256: str | None = None
    """sha256 of the track's content (``challenge.store.data_checksum``)."""

    @classmethod
    def of(cls, track: Any) -> TrackRef:
        """The reference of a track-like object (``challenge.track.TrackLike``)."""
        return cls(
            id=track.spec.track_id,
            version=track.spec.version,
            path=str(track.path) if track.path else None,
            manifest_sha256=track.manifest_sha256,
            units=dict(track.units),
            data_sha256=track.data_sha256,
        )


@dataclass
class Result:
    """A typed result (SAEBench's ``BaseEvalOutput`` shape): what ran (``kind``, ``config``), the
    few numbers to cite (``headline``, a dataclass per kind), everything else (``detail``), the
    track and how it was made (``provenance``). ``arrays`` go to a ``.npz`` beside the JSON.

    Subclasses narrow ``config`` and ``headline`` to their own dataclasses; their JSON schema
    is generated from the class (:func:`json_schema`, ``challenge/schemas/``)."""

    kind: str
    config: Any
    headline: Any
    detail: dict[str, Any] = field(default_factory=dict)
    track: TrackRef | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, Any] = field(default_factory=dict, repr=False)
    path: Path | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        return to_jsonable(
            {
                "kind": self.kind,
                "config": self.config,
                "headline": self.headline,
                "detail": self.detail,
                "track": self.track,
                "provenance": self.provenance,
            }
        )

    def save(self, out_dir: str | Path, name: str) -> Path:
        """Write ``<out_dir>/<name>.json`` (+ ``.npz``); sets and returns ``self.path``."""
        self.path = save_result(out_dir, name, self.to_json(), self.arrays or None)
        return self.path


def json_schema(cls: type) -> dict[str, Any]:
    """The JSON schema of a result (or config) dataclass, generated by pydantic."""
    from pydantic import TypeAdapter

    return TypeAdapter(cls).json_schema(mode="serialization")
