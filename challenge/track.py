"""Challenge tracks: a typed, versioned spec, its build into real activation sets, and loading.

A track fixes model + revision, write hook and position, prompt source, split sizes, seed and
read-out hook. ``build_track`` produces three disjoint real splits, each with the prompt
tokens and the activation at the write point (last position):

- ``public``: for fitting generators (and SAEs);
- ``heldout``: the real reference the scorer compares submissions against;
- ``context``: prompts into which activations (real or synthetic) are written when probed.

It also measures the track's *scale-free units* (median real-to-real distance at the write
point; median read-out distance at the end of a real-to-real path) so that every protocol can
run with thresholds relative to the track instead of GPT-2's constants.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

import challenge
from challenge import checks, rng
from challenge.engine import EngineConfig, PerturbationEngine
from challenge.errors import ConfigError, TrackIntegrityError
from challenge.hooks import RESID_PATTERN, resid_pre
from challenge.models import LoadedModel, ModelSpec, cache_root, load_model
from challenge.prompts import PromptSpec, build_prompts
from challenge.results import machine
from challenge.store import MANIFEST, _registry_path, data_checksum, read_track, write_track

SPLITS = ("public", "heldout", "context")
DEFAULT_TRACK = "smollm2-135m-l1"
"""The track every command and study uses unless told otherwise."""


@dataclass
class TrackSpec:
    """Everything that defines a track; its JSON is stored in ``track.json``."""

    track_id: str = DEFAULT_TRACK
    """Registered name; also the folder name of its cache and leaderboard."""
    version: str = "1.0.0"
    """Data version; submissions name the version they were made for."""
    model: ModelSpec = field(default_factory=ModelSpec)
    """The model whose activations the track holds."""
    write_hook: str = "blocks.1.hook_resid_pre"
    """Residual hook where activations are taken and written (``blocks.L.hook_resid_pre/post``)."""
    read_hook: str = "blocks.29.hook_resid_post"
    """Residual hook the response is read at."""
    position: int = -1
    """Token position written; only the last (-1), as published."""
    prompts: PromptSpec = field(default_factory=PromptSpec)
    """Where the prompt windows come from."""
    n_public: int = 4000
    """Rows of the public split (for fitting generators and SAEs)."""
    n_heldout: int = 1000
    """Rows of the held-out split (the scorer's real reference; submissions have this many)."""
    n_context: int = 400
    """Rows of the context split (prompts probed activations are written into)."""
    seed: int = 0
    """Seed of the prompt shuffle and split."""
    description: str = "SmolLM2-135M-Instruct (embedded), residual stream before block 1, last of 10 tokens of English prose (Python docs)."
    """One line for ``plateau tracks`` and the dataset card."""

    def __post_init__(self) -> None:
        self.validate()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrackSpec:
        d = dict(d)
        try:
            d["model"] = ModelSpec(**d["model"])
            d["prompts"] = PromptSpec(**d["prompts"])
            return cls(**d)
        except (KeyError, TypeError) as e:
            raise ConfigError(f"malformed track spec: {e}", field="spec") from e

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first bad field (also run on construction)."""
        for name in ("track_id", "version", "write_hook", "read_hook"):
            v = getattr(self, name)
            if not isinstance(v, str) or not v:
                raise ConfigError(f"must be a non-empty string, got {v!r}", field=name)
            if name.endswith("_hook") and not RESID_PATTERN.match(v):
                raise ConfigError(f"{v!r} is not blocks.L.hook_resid_pre/post", field=name)
        if self.position != -1:
            raise ConfigError(
                "only the last position (-1) is supported, as published", field="position"
            )
        for name in ("n_public", "n_heldout", "n_context"):
            checks.integer(getattr(self, name), name, minimum=2)
        checks.integer(self.seed, "seed")


def _gpt2_track() -> TrackSpec:
    return TrackSpec(
        track_id="gpt2-small-l1",
        model=ModelSpec(name="gpt2"),
        write_hook="blocks.1.hook_resid_pre",
        read_hook="blocks.11.hook_resid_post",
        prompts=PromptSpec(source="hf:Skylion007/openwebtext", n_tokens=10),
        n_public=4000,
        n_heldout=1000,
        n_context=1000,
        description="GPT-2 small, blocks.1.hook_resid_pre, last of 10 OpenWebText tokens: the P1 (teren) setting. Needs the hub.",
    )


def _gemma_track(layer: int, tiny: bool = False) -> TrackSpec:
    """Gemma 3 270M (embedded) at ``blocks.{layer}.hook_resid_pre``; sizes as SmolLM2's tracks.
    Windows start with ``<bos>`` (Gemma is trained with it; its tokenizer adds it)."""
    sizes = dict(n_public=256, n_heldout=128, n_context=64) if tiny else {}
    return TrackSpec(
        track_id=f"gemma3-270m-l{layer}" + ("-tiny" if tiny else ""),
        model=ModelSpec(name="gemma3-270m"),
        write_hook=resid_pre(layer),
        read_hook="blocks.17.hook_resid_post",
        prompts=PromptSpec(source="pydoc", n_tokens=10, prepend_bos=True),
        **sizes,
        description="Small test track (Gemma 3 270M)."
        if tiny
        else f"Gemma 3 270M (embedded), residual stream before block {layer}, last of 10 tokens "
        "(<bos> + 9 tokens of Python-docs prose).",
    )


TRACKS: dict[str, TrackSpec] = {
    # v2.0.0: 2000 held-out rows, so the scorer's reference half (and every submission) holds
    # 1000 rows (v1.0.0: 1000 -> 500; the 5-seed sd of entries near 0.8 was 0.03-0.05 there,
    # docs/scoring.md). Public split unchanged (the seeded permutation's first 4000 windows).
    DEFAULT_TRACK: TrackSpec(version="2.0.0", n_heldout=2000),
    "smollm2-135m-l1-tiny": TrackSpec(
        track_id="smollm2-135m-l1-tiny",
        n_public=256,
        n_heldout=128,
        n_context=64,
        description="Small test track.",
    ),
    # the deeper official track (issue 31): the atlas's best mid layer (real vs N(mu, Sigma)
    # separation 0.51, radius AUC 0.92; docs/atlas.md), where context matters more than the
    # last token; sizes as the default track's v2.0.0
    "smollm2-135m-l9": TrackSpec(
        track_id="smollm2-135m-l9",
        write_hook="blocks.9.hook_resid_pre",
        n_heldout=2000,
        description="SmolLM2-135M-Instruct (embedded), residual stream before block 9, last of "
        "10 tokens of Python-docs prose: the deeper official track.",
    ),
    "smollm2-135m-l7": TrackSpec(
        track_id="smollm2-135m-l7",
        write_hook="blocks.7.hook_resid_pre",
        description="SmolLM2-135M-Instruct (embedded), residual stream before block 7, last of 10 tokens of Python-docs prose.",
    ),
    "gpt2-small-l1": _gpt2_track(),
    "gemma3-270m-l1-tiny": _gemma_track(1, tiny=True),
    **{f"gemma3-270m-l{layer}": _gemma_track(layer) for layer in (1, 6, 12)},
}


def get_spec(name_or_path: str) -> TrackSpec:
    """A registered track by id, or a JSON spec file."""
    if name_or_path in TRACKS:
        return TRACKS[name_or_path]
    p = Path(name_or_path)
    if p.suffix == ".json" and p.exists():
        return TrackSpec.from_dict(json.loads(p.read_text()))
    raise ConfigError(
        f"unknown track {name_or_path!r}; known: {sorted(TRACKS)} or a .json spec", field="track"
    )


def default_track_dir(spec: TrackSpec) -> Path:
    return cache_root() / "tracks" / spec.track_id / f"v{spec.version}"


def local_registry() -> Path:
    """The repository's registry of published tracks (``$PLATEAU_REGISTRY``, default
    ``registry/`` beside the package): the board's track versions with their SAEs, committed so
    every machine scores on the same bits (``plateau publish`` writes it, ``download`` reads it)."""
    default = Path(__file__).resolve().parents[1] / "registry"
    return Path(os.environ.get("PLATEAU_REGISTRY", default))


def published_copy(spec: TrackSpec) -> Path | None:
    """The registry's copy of ``spec``'s version, if it publishes one."""
    d = _registry_path(local_registry(), spec.track_id, spec.version)
    return d if (d / MANIFEST).exists() else None


def published_folder(track: Any, name: str, marker: str) -> Path | None:
    """A folder ``name`` published beside a track's data (``saes``-like: the statistics
    artifact, the board's reference features), holding the file ``marker``: the one in the
    track's own directory, else the repository registry's copy of the same track version when
    that copy's manifest is the track's (a track fetched before the folder was published);
    ``None`` when neither has it."""
    path = getattr(track, "path", None)
    if path is None:
        return None
    d = Path(path) / name
    if (d / marker).exists():
        return d
    reg = published_copy(track.spec)
    if reg is None or not (reg / name / marker).exists():
        return None
    same = hashlib.sha256((reg / MANIFEST).read_bytes()).hexdigest() == track.manifest_sha256
    return reg / name if same else None


@runtime_checkable
class TrackLike(Protocol):
    """What every track-like object offers: the built :class:`Track`, a generator's guarded view
    (``challenge.access.TrackView``) and the sandbox's track (``challenge.sandbox.SandboxTrack``).
    Reading a split the object does not hold raises; the held-out halves and the track's
    identity come from :class:`TrackHalves`, computed in one place."""

    spec: TrackSpec
    meta: dict[str, Any]
    splits: dict[str, Any]
    path: Path | None

    def acts(self, split: str) -> torch.Tensor: ...

    def tokens(self, split: str) -> torch.Tensor: ...

    @property
    def d_model(self) -> int: ...

    @property
    def units(self) -> dict[str, float]: ...

    @property
    def required_n(self) -> int: ...

    def reference_rows(self) -> torch.Tensor: ...

    def oracle_rows(self) -> torch.Tensor: ...

    @property
    def manifest_sha256(self) -> str | None: ...

    @property
    def data_sha256(self) -> str | None: ...


class TrackHalves:
    """The held-out split's two halves and the track's identity, from ``meta`` and ``path``:
    the one implementation every track-like class inherits (no split needs to be readable)."""

    meta: dict[str, Any]
    path: Path | None

    @property
    def heldout_size(self) -> int:
        """Rows of the held-out split (``meta["sizes"]["heldout"]``)."""
        return int(self.meta["sizes"]["heldout"])

    @property
    def required_n(self) -> int:
        """Rows a submission carries: the size of the scorer's reference half."""
        return self.heldout_size // 2

    def reference_rows(self) -> torch.Tensor:
        """The held-out *reference half*: the scorer's real sample. Fixed per track (seed 0 of
        ``scorer.reference``, whatever the run seed), so the other half stays a disjoint real
        sample: the oracle entry (``heldout_real``) and the size of a submission."""
        n = self.heldout_size
        return rng.subset(n, n // 2, 0, "scorer.reference")

    def oracle_rows(self) -> torch.Tensor:
        """The held-out rows outside the reference half (the oracle's real sample)."""
        mask = torch.ones(self.heldout_size, dtype=torch.bool)
        mask[self.reference_rows()] = False
        return torch.nonzero(mask)[:, 0]

    @property
    def manifest_sha256(self) -> str | None:
        """sha256 of the track's ``manifest.json``: which published copy (``None`` for a track
        held only in memory)."""
        man = Path(self.path) / MANIFEST if self.path else None
        if man is None or not man.exists():
            return None
        return hashlib.sha256(man.read_bytes()).hexdigest()


@dataclass
class Track(TrackHalves):
    """A built track loaded in memory."""

    spec: TrackSpec
    meta: dict[str, Any]
    splits: dict[str, dict[str, np.ndarray]]
    path: Path | None = None

    def tokens(self, split: str) -> torch.Tensor:
        return torch.from_numpy(self.splits[split]["tokens"])

    def acts(self, split: str) -> torch.Tensor:
        return torch.from_numpy(self.splits[split]["activation"])

    @property
    def units(self) -> dict[str, float]:
        return self.meta["units"]

    @property
    def data_sha256(self) -> str:
        """sha256 of the splits' content (``store.data_checksum``): which data, not which
        published copy."""
        return data_checksum(self.splits)

    @property
    def d_model(self) -> int:
        return int(self.splits["public"]["activation"].shape[1])

    def engine(self, lm: LoadedModel, **overrides) -> PerturbationEngine:
        cfg = EngineConfig(
            write_hook=self.spec.write_hook, read_hook=self.spec.read_hook, **overrides
        )
        return PerturbationEngine(lm.model, cfg)


def resolve_track(track: str | Path | Track, build: bool = True) -> Track:
    """A track by directory, by registered id (when missing from the cache: fetched from the
    repository's registry if it publishes that version, else built when ``build``), or a loaded
    :class:`Track` (returned as is)."""
    if isinstance(track, Track):
        return track
    p = Path(track)
    if (p / "track.json").exists():
        return load_track(p)
    spec = get_spec(str(track))
    d = default_track_dir(spec)
    if not (d / "manifest.json").exists():
        published = published_copy(spec)
        if published is not None:  # the board's bits, not a rebuild (fp32 differs by machine)
            from challenge.store import download

            print(f"[plateau] fetching published {spec.track_id} from {published}", file=sys.stderr)
            download(str(local_registry()), track_id=spec.track_id, version=spec.version)
            return load_track(d)
        if not build:
            raise ConfigError(
                f"track {track} is not built; run `plateau build {track}`", field="track"
            )
        print(f"[plateau] building track {spec.track_id} into {d}", file=sys.stderr)
        build_track(spec, d)
    return load_track(d)


def load_track(path: str | Path, verify: bool = True) -> Track:
    path = Path(path)
    if not (path / "track.json").exists():
        raise TrackIntegrityError("not a track directory (no track.json)", file=str(path))
    meta, splits = read_track(path, verify=verify)
    missing = [s for s in SPLITS if s not in splits]
    if missing:
        raise TrackIntegrityError(f"missing splits {missing}", file=str(path / "data"))
    return Track(spec=TrackSpec.from_dict(meta["spec"]), meta=meta, splits=splits, path=path)


def measure_units(
    engine: PerturbationEngine, tokens: torch.Tensor, acts: torch.Tensor
) -> dict[str, float]:
    """Scale-free units: median real-to-real distance at the write point, and the median
    read-out distance at the end of a real-to-real path (context i, target i+1)."""
    n = len(acts)
    tgt = acts.roll(-1, 0)
    write_dist = (acts - tgt).norm(dim=-1)
    paths = torch.stack([acts, tgt], dim=1)
    cur = engine.curves(tokens, paths, desc="units")
    return {
        "write_norm_median": float(acts.norm(dim=-1).median()),
        "write_norm_mean": float(acts.norm(dim=-1).mean()),
        "write_distance_median": float(write_dist.median()),
        "read_distance_median": float(np.median(cur.l2[:, -1])),
        "kl_end_median": float(np.median(cur.kl[:, -1])),
        "n_pairs": n,
    }


def dataset_card(spec: TrackSpec, meta: dict[str, Any]) -> str:
    prov, units = meta["provenance"], meta["units"]
    rows = "\n".join(f"| {s} | {meta['sizes'][s]} |" for s in SPLITS)
    return f"""---
license: apache-2.0
task_categories: [feature-extraction]
tags: [interpretability, activation-plateaus, residual-stream, plateau-challenge]
configs:
- config_name: default
  data_files:
{chr(10).join(f"  - split: {s}{chr(10)}    path: data/{s}.parquet" for s in SPLITS)}
---
# Plateau challenge track `{spec.track_id}` v{spec.version}

{spec.description}

Real residual-stream activations for the activation-plateau challenge, made by
`plateau build {spec.track_id}` (plateau-challenge {challenge.__version__}).

- Model: `{prov["model"]}` (revision `{prov["revision"]}`), dtype {spec.model.dtype}, raw weights
- Write point: `{spec.write_hook}`, position {spec.position} (last token); read-out `{spec.read_hook}`
- Prompts: `{spec.prompts.source}`, windows of {spec.prompts.n_tokens} tokens, deduplicated, seed {spec.seed}
- Columns: `tokens` (int64 [{spec.prompts.n_tokens}]), `activation` (float32 [{meta["d_model"]}]), `text`

| split | rows |
|---|---|
{rows}

`public` is for fitting generators; `heldout` is the scorer's real reference; `context` holds the
prompts into which activations are written when probed. Splits share no prompt window.

Scale-free units measured at build: median write-point norm {units["write_norm_median"]:.3f},
median real-to-real distance {units["write_distance_median"]:.3f}, median read-out distance at
the end of a real-to-real path {units["read_distance_median"]:.3f}.

Built {meta["built_at"]} with torch {prov["torch"]}, transformer_lens {prov["transformer_lens"]}.
`manifest.json` lists the sha256 of every file; `plateau download` verifies them.
"""


def build_track(
    spec: TrackSpec,
    out_dir: str | Path | None = None,
    lm: LoadedModel | None = None,
    batch_size: int = 256,
) -> Path:
    """Build a track's real activation sets and write them (atomically) to ``out_dir``."""
    spec.validate()
    t0 = time.perf_counter()
    lm = lm or load_model(spec.model)
    out_dir = Path(out_dir) if out_dir else default_track_dir(spec)
    sizes = {"public": spec.n_public, "heldout": spec.n_heldout, "context": spec.n_context}
    windows = build_prompts(spec.prompts, lm.tokenizer, sizes, spec.seed)
    engine = PerturbationEngine(
        lm.model, EngineConfig(write_hook=spec.write_hook, read_hook=spec.read_hook)
    )
    splits: dict[str, dict[str, np.ndarray]] = {}
    for name in SPLITS:
        toks = torch.from_numpy(np.asarray(windows[name], dtype=np.int64))
        acts = engine.clean(toks, batch_size=batch_size, read=False)["write"]
        splits[name] = {
            "tokens": toks.numpy(),
            "activation": acts.cpu().numpy().astype(np.float32),
            "text": np.array(lm.tokenizer.batch_decode(toks.tolist()), dtype=object),
        }
    ctx = splits["context"]
    units = measure_units(
        engine, torch.from_numpy(ctx["tokens"]), torch.from_numpy(ctx["activation"])
    )
    meta = {
        "track_id": spec.track_id,
        "version": spec.version,
        "spec": spec.to_dict(),
        "sizes": {s: int(len(splits[s]["tokens"])) for s in SPLITS},
        "d_model": int(lm.cfg.d_model),
        "units": units,
        "provenance": {
            **lm.provenance,
            "suite_version": challenge.__version__,
            "python": platform.python_version(),
            "numpy": np.__version__,
            "engine_backend": engine.backend,
            **machine(),
        },
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "build_seconds": round(time.perf_counter() - t0, 2),
    }
    write_track(out_dir, meta, splits, dataset_card(spec, meta))
    return out_dir
