"""Submissions: a folder with ``submission.json`` and ``activations.safetensors``, and the
generator interface that produces one.

```
submissions/<name>/submission.json          name, authors, track_id, track_version, generator,
                                            code, seed, uses, n, d_model
submissions/<name>/activations.safetensors  tensor "activations", float32 [N, d_model]
```
Safetensors only (never pickle). ``uses`` says what information the generator used:
``public_activations``, ``sae``, ``model``, ``heldout_activations`` (oracle only), ``none``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from jaxtyping import Float
from torch import Tensor
from typing_extensions import NotRequired, TypedDict

META_FILE, ACTS_FILE, ACTS_KEY = "submission.json", "activations.safetensors", "activations"
USES = ("none", "public_activations", "sae", "model", "heldout_activations")
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


class SubmissionMeta(TypedDict):
    """``submission.json``: who made the activations, for which track, how (see ``uses``)."""

    name: str
    authors: list[str]
    track_id: str
    track_version: str
    generator: str
    code: str
    seed: int
    uses: list[str]
    n: NotRequired[int]
    d_model: NotRequired[int]


@runtime_checkable
class Generator(Protocol):
    """What the CLI needs to run a generator: fit on a track, then sample."""

    name: str
    description: str
    uses: list[str]

    def fit(self, track: Any, lm: Any) -> None: ...

    def sample(self, n: int, *, seed: int) -> Float[Tensor, "n d_model"]: ...


def write_submission(
    folder: str | Path, meta: dict[str, Any], acts: Float[Tensor, "n d_model"]
) -> Path:
    """Write atomically: a temp folder renamed into place."""
    from safetensors.torch import save_file

    from challenge.results import atomic_dir

    folder = Path(folder)
    acts = acts.detach().to("cpu", torch.float32).contiguous()
    meta = {**meta, "n": int(acts.shape[0]), "d_model": int(acts.shape[1])}
    with atomic_dir(folder) as tmp:
        save_file(
            {ACTS_KEY: acts}, str(tmp / ACTS_FILE), metadata={"format": "plateau-submission/1"}
        )
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1))
    return folder


def read_submission(folder: str | Path) -> tuple[dict[str, Any], Tensor]:
    """Metadata and activations, without validation (see ``challenge.validate``)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    return json.loads((folder / META_FILE).read_text()), load_file(str(folder / ACTS_FILE))[
        ACTS_KEY
    ]


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
    """Fit a generator on a track, sample the track's required N, write a submission folder."""
    from challenge.validate import required_n

    generator.fit(track, lm)
    n = n or required_n(track)
    acts = generator.sample(n, seed=seed)
    meta = {
        "name": generator.name,
        "authors": authors or ["plateau-challenge baselines"],
        "track_id": track.spec.track_id,
        "track_version": track.spec.version,
        "generator": generator.description,
        "code": f"baselines/generators.py:{type(generator).__name__}",
        "seed": seed,
        "uses": list(generator.uses),
    }
    return write_submission(Path(out_root) / track.spec.track_id / generator.name, meta, acts)
