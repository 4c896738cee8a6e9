"""Submissions: a folder with ``submission.json`` and ``activations.safetensors``, and the
generator interface that produces one.

```
submissions/<name>/submission.json          name, authors, track_id, track_version, generator,
                                            code, seed, uses, n, d_model
submissions/<name>/activations.safetensors  tensor "activations", float32 [N, d_model]
```
Safetensors only (never pickle). ``uses`` says what information the generator used:
``public_activations``, ``statistics_artifact`` (the statistics tier), ``sae``, ``model``,
``heldout_activations`` (oracle only), ``none``;
it is free text for readers and decides nothing: a record's board section comes from
``access`` (``challenge.access``), which only the organiser's tools write.

``name`` matches ``NAME_PATTERN`` (``[a-z0-9_-]{1,64}``): it becomes file names on the board
(``<name>.json``, ``<name>.png``) and a folder name, so :func:`check_name` runs wherever a name
becomes a path.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from jaxtyping import Float
from torch import Tensor
from typing_extensions import NotRequired, TypedDict

from challenge.errors import SubmissionError

META_FILE, ACTS_FILE, ACTS_KEY = "submission.json", "activations.safetensors", "activations"
USES = (
    "none",
    "public_activations",
    "statistics_artifact",
    "sae",
    "model",
    "heldout_activations",
)
REQUIRED = {
    "name": str,
    "authors": list,
    "track_id": str,
    "track_version": str,
    "generator": str,
    "code": str,
    "seed": int,
    "uses": list,
}
OPTIONAL = {"n": int, "d_model": int, "sae": dict}
"""Other keys a submitter may write (``write_submission`` adds ``n`` and ``d_model``;
``generate`` adds ``sae``, the SAE a generator used: ``{"name", "sha256"}``, see
``challenge.store.sae_checksum``); any other key is refused, so a submitter cannot write the
organiser's ``access`` record."""
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
NAME_PATTERN = re.compile(r"[a-z0-9_-]{1,64}")
"""A submission name: it becomes ``<board>/<track id>/<name>.json`` and a folder name."""


def check_name(name: Any, *, file: str | None = None, field: str = "name") -> str:
    """``name`` when it matches :data:`NAME_PATTERN` (so it is safe as a file or folder name and
    in a URL), else ``SubmissionError`` naming ``file`` and ``field``."""
    if not isinstance(name, str) or NAME_PATTERN.fullmatch(name) is None:
        shown = repr(name) if len(repr(name)) <= 80 else repr(name)[:77] + "..."
        raise SubmissionError(
            f"{shown} is not a submission name: use 1 to 64 of a-z, 0-9, '_' and '-'",
            file=file,
            field=field,
        )
    return name


class EntryAccess(TypedDict):
    """What the organiser's tools verified about how a submission was made (never written by a
    submitter): its board ``category`` (``synthetic``, ``reference`` or ``unverified``), how that
    was established (``verified_by``: ``sandbox``, ``in_repo`` or ``none``), and the inputs the
    generator could touch (``access``: ``public``, ``sae``, ``model``, ``heldout``)."""

    category: str
    verified_by: str
    access: list[str]
    code_sha256: NotRequired[str]


class _SubmissionMetaRequired(TypedDict):
    name: str
    authors: list[str]
    track_id: str
    track_version: str
    generator: str
    code: str
    seed: int
    uses: list[str]


class SubmissionMeta(_SubmissionMetaRequired, total=False):
    """``submission.json``: who made the activations, for which track, how (see ``uses``);
    ``n`` and ``d_model`` are added when it is written, ``access`` only by the organiser's tools.
    (Optional keys through ``total=False``: ``NotRequired`` is not seen in the postponed
    annotations of this module on Python < 3.12.)"""

    n: int
    d_model: int
    sae: dict[str, str]
    """The SAE the generator used: folder name and ``challenge.store.sae_checksum``."""
    access: EntryAccess


@runtime_checkable
class Generator(Protocol):
    """What the CLI needs to run a generator: fit on a track, then sample."""

    name: str
    description: str
    uses: list[str]
    access: tuple[str, ...]
    """what it may touch (``challenge.access.ACCESS``); enforced when the organiser runs it"""

    def fit(self, track: Any, lm: Any) -> None: ...

    def sample(self, n: int, *, seed: int) -> Float[Tensor, "n d_model"]: ...


MAX_META_BYTES = 64 * 1024
"""Largest ``submission.json`` read."""
MAX_ACTS_BYTES = 1 << 30
"""Largest activations file read without a track (validation allows only the track's size)."""
HEADER_BYTES = 64 * 1024
"""Room for the safetensors header beyond the tensor's bytes."""
TEXT_LIMITS = {"track_id": 200, "track_version": 50, "generator": 2000, "code": 500}
"""Longest value of each free-text field (characters)."""
MAX_AUTHORS, MAX_AUTHOR_CHARS, MAX_USES = 50, 200, 10


def read_regular(path: str | Path, max_bytes: int, what: str = "file") -> bytes:
    """The bytes of ``path`` when it is a regular file (not a symbolic link, pipe, socket,
    device or folder) of at most ``max_bytes``; else ``SubmissionError`` naming it.

    ``os.lstat`` decides before anything is opened (so a pipe cannot block the read), and the
    file is opened with ``O_NOFOLLOW | O_NONBLOCK`` and checked again (same inode, regular) so
    that a swap between the two steps is refused too."""
    path = str(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise SubmissionError(f"{what} missing", file=path) from None
    except OSError as e:
        raise SubmissionError(f"{what} cannot be read ({e.strerror})", file=path) from None
    if stat.S_ISLNK(st.st_mode):
        raise SubmissionError(
            f"{what} is a symbolic link; only regular files inside the folder are read", file=path
        )
    if not stat.S_ISREG(st.st_mode):
        raise SubmissionError(
            f"{what} is not a regular file (a pipe, socket, device or folder)", file=path
        )
    if st.st_size > max_bytes:
        raise SubmissionError(
            f"{what} is {st.st_size} bytes, more than the {max_bytes} allowed", file=path
        )
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise SubmissionError(f"{what} cannot be opened ({e.strerror})", file=path) from None
    try:
        st2 = os.fstat(fd)
        if not stat.S_ISREG(st2.st_mode) or (st2.st_dev, st2.st_ino) != (st.st_dev, st.st_ino):
            raise SubmissionError(f"{what} changed while it was being opened", file=path)
        chunks, left = [], max_bytes + 1
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 24))):
            chunks.append(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > max_bytes:
        raise SubmissionError(f"{what} grew past the {max_bytes} bytes allowed", file=path)
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(raw: bytes, file: str) -> Any:
    """A JSON document from bytes; anything malformed (not UTF-8, nested too deeply, an integer
    too long, NaN / Infinity, bad syntax) is one ``SubmissionError`` line."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SubmissionError(f"not UTF-8 (byte {e.start})", file=file) from None
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise SubmissionError(f"not valid JSON ({e.msg} at line {e.lineno})", file=file) from None
    except RecursionError:
        raise SubmissionError("not valid JSON (nested too deeply)", file=file) from None
    except ValueError as e:  # e.g. an integer longer than Python's 4300-digit limit
        raise SubmissionError(f"not valid JSON ({str(e)[:100]})", file=file) from None


def _text(value: Any, limit: int, file: str, field: str) -> str:
    """``value`` when it is printable text of at most ``limit`` characters."""
    if not isinstance(value, str):
        raise SubmissionError(f"must be str, got {type(value).__name__}", file=file, field=field)
    if len(value) > limit:
        raise SubmissionError(
            f"is {len(value)} characters, more than {limit}", file=file, field=field
        )
    if not value.isprintable():
        raise SubmissionError(
            "contains control or unpaired surrogate characters", file=file, field=field
        )
    return value


def check_meta(meta: Any, file: str) -> dict[str, Any]:
    """``submission.json``'s content checked field by field (keys, types, name, text limits);
    the track is checked by ``challenge.scoring.validation``."""
    if not isinstance(meta, dict):
        raise SubmissionError("must be a JSON object", file=file)
    for key in REQUIRED:
        if key not in meta:
            raise SubmissionError("missing", file=file, field=key)
    for key, typ in (REQUIRED | OPTIONAL).items():
        if key in meta and (
            not isinstance(meta[key], typ) or (typ is int and isinstance(meta[key], bool))
        ):
            raise SubmissionError(
                f"must be {typ.__name__}, got {type(meta[key]).__name__}", file=file, field=key
            )
    extra = sorted(set(meta) - set(REQUIRED) - set(OPTIONAL))
    if extra:
        shown = [k[:40] for k in extra[:5]]
        raise SubmissionError(
            f"unknown keys {shown}; allowed {sorted(REQUIRED | OPTIONAL)}", file=file
        )
    check_name(meta["name"], file=file)
    for key, limit in TEXT_LIMITS.items():
        _text(meta[key], limit, file, key)
    if not 1 <= len(meta["authors"]) <= MAX_AUTHORS:
        raise SubmissionError(f"needs 1 to {MAX_AUTHORS} entries", file=file, field="authors")
    for a in meta["authors"]:
        _text(a, MAX_AUTHOR_CHARS, file, "authors")
    if not 0 <= meta["seed"] < 2**63:
        raise SubmissionError("must be in [0, 2**63)", file=file, field="seed")
    if len(meta["uses"]) > MAX_USES or not all(isinstance(u, str) for u in meta["uses"]):
        raise SubmissionError(
            f"must be at most {MAX_USES} of {list(USES)}", file=file, field="uses"
        )
    bad = [u[:40] for u in meta["uses"] if u not in USES]
    if bad:
        raise SubmissionError(
            f"unknown entries {bad}; allowed {list(USES)}", file=file, field="uses"
        )
    for key in ("n", "d_model"):
        if key in meta and not 0 <= meta[key] < 2**31:
            raise SubmissionError("out of range", file=file, field=key)
    if "sae" in meta:
        sae = meta["sae"]
        if set(sae) != {"name", "sha256"} or not isinstance(sae["name"], str):
            raise SubmissionError(
                'must be {"name": <SAE folder name>, "sha256": <checksum>}', file=file, field="sae"
            )
        _text(sae["name"], 200, file, "sae")
        if not isinstance(sae["sha256"], str) or not SHA256_PATTERN.fullmatch(sae["sha256"]):
            raise SubmissionError("sha256 must be 64 lowercase hex digits", file=file, field="sae")
    return meta


def load_acts(raw: bytes, file: str) -> Tensor:
    """The ``activations`` tensor of a safetensors file's bytes (the only tensor allowed)."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        tensors = load(raw)
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as e:
        raise SubmissionError(f"not a safetensors file ({str(e)[:80]})", file=file) from None
    if ACTS_KEY not in tensors:
        raise SubmissionError(
            f"no tensor named {ACTS_KEY!r} (found {[k[:40] for k in sorted(tensors)[:5]]})",
            file=file,
            field=ACTS_KEY,
        )
    if len(tensors) != 1:
        extra = [k[:40] for k in sorted(set(tensors) - {ACTS_KEY})[:5]]
        raise SubmissionError(
            f"only the {ACTS_KEY!r} tensor is allowed; also found {extra}", file=file
        )
    return tensors[ACTS_KEY]


def write_submission(
    folder: str | Path, meta: dict[str, Any], acts: Float[Tensor, "n d_model"]
) -> Path:
    """Write atomically: a temp folder renamed into place."""
    from safetensors.torch import save_file

    from challenge.results import atomic_dir

    folder = Path(folder)
    check_name(meta.get("name"), field="name")
    acts = acts.detach().to("cpu", torch.float32).contiguous()
    meta = {**meta, "n": int(acts.shape[0]), "d_model": int(acts.shape[1])}
    with atomic_dir(folder) as tmp:
        save_file(
            {ACTS_KEY: acts}, str(tmp / ACTS_FILE), metadata={"format": "plateau-submission/1"}
        )
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1))
    return folder


def read_submission(folder: str | Path) -> tuple[dict[str, Any], Tensor]:
    """Metadata and activations, read as :func:`read_regular` reads them (regular files only,
    size limits, one-line errors) but not validated (see ``challenge.scoring.validation``)."""
    folder = Path(folder)
    meta_path, acts_path = str(folder / META_FILE), str(folder / ACTS_FILE)
    meta = parse_json(read_regular(meta_path, MAX_META_BYTES, "metadata file"), meta_path)
    acts = load_acts(read_regular(acts_path, MAX_ACTS_BYTES, "activations file"), acts_path)
    return meta, acts


def generate(
    generator: Generator,
    track: Any,
    lm: Any,
    *,
    n: int | None = None,
    seed: int = 0,
    out_root: Path = Path("submissions"),
    authors: list[str] | None = None,
) -> Path:
    """Fit a generator on a track, sample the track's required N, write a submission folder.

    The generator sees only what its ``access`` declares (``challenge.access.guarded``): one
    that reads a split or uses the model beyond it raises ``AccessError`` and writes nothing."""
    from challenge.access import guarded

    check_name(generator.name, field="generator.name")
    generator.fit(*guarded(track, lm, generator))
    n = n or track.required_n
    acts = generator.sample(n, seed=seed)
    meta = {
        "name": generator.name,
        "authors": authors or ["plateau-challenge baselines"],
        "track_id": track.spec.track_id,
        "track_version": track.spec.version,
        "generator": generator.description,
        "code": f"{type(generator).__module__.replace('.', '/')}.py:{type(generator).__name__}",
        "seed": seed,
        "uses": list(generator.uses),
    }
    sae = getattr(generator, "sae", None)
    source = getattr(sae, "meta", {}).get("source") if sae is not None else None
    if source and Path(source).is_dir():  # the SAE it used, by content (reports name it)
        from challenge.store import sae_checksum

        meta["sae"] = {"name": Path(source).name, "sha256": sae_checksum(source)}
    return write_submission(Path(out_root) / track.spec.track_id / generator.name, meta, acts)
