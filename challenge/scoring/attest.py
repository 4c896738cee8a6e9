"""Name the SAE behind board records made before submissions named theirs (docs/scoring.md,
"The SAE is challenge data").

For each record of an SAE-using generator whose ``submission.json`` has no ``sae`` field, the
generator is run again (same seed, the track's SAE as ``track_sae`` / ``track_e2e_sae`` load it
now) into a scratch folder; only when its activations equal the committed submission's **bit for
bit** is the SAE's name and checksum written into the committed ``submission.json`` and the
record's ``submission``. Anything else is reported and left alone.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from challenge.models import LoadedModel
from challenge.results import to_jsonable
from challenge.scoring.config import BOARD_ROOT
from challenge.scoring.report import load_report
from challenge.submission import Generator, generate, read_submission
from challenge.track import TrackLike


@dataclass
class Attestation:
    """What :func:`attest_sae` found for one record."""

    name: str
    attested: bool
    sae: dict | None = None
    """the SAE's name and checksum, when attested"""
    max_abs_diff: float | None = None
    """largest difference of the re-run's activations (``None``: other shape), when not"""


def attest_sae(
    track: TrackLike,
    lm: LoadedModel,
    generators: dict[str, Callable[[], Generator]],
    *,
    board: Path = BOARD_ROOT,
    submissions: Path = Path("submissions"),
) -> list[Attestation]:
    """Attest the SAE of every record of ``<board>/<track id>/`` made by a generator of
    ``generators`` that uses an SAE and does not name it (see the module docstring)."""
    tid = track.spec.track_id
    out = []
    for path in sorted((board / tid).glob("*.json")):
        folder = submissions / tid / path.stem
        meta_path = folder / "submission.json"
        if not meta_path.exists() or path.stem not in generators:
            continue
        meta, acts = read_submission(folder)
        if "sae" not in meta["uses"] or "sae" in meta:
            continue
        gen = generators[path.stem]()
        if "sae" in getattr(gen, "access", ()):
            from challenge.sae import track_sae

            track_sae(track, lm=lm)
        with tempfile.TemporaryDirectory() as tmp:
            again = generate(gen, track, lm, seed=meta["seed"], out_root=Path(tmp))
            new_meta, new_acts = read_submission(again)
        same = new_acts.dtype == acts.dtype and torch.equal(new_acts, acts)
        if not same or "sae" not in new_meta:
            diff = (new_acts - acts).abs().max().item() if new_acts.shape == acts.shape else None
            out.append(Attestation(path.stem, False, max_abs_diff=diff))
            continue
        doc = json.loads(meta_path.read_text())
        doc["sae"] = new_meta["sae"]
        meta_path.write_text(json.dumps(doc, indent=1))
        rec = load_report(path, arrays=False).to_json()
        rec["submission"]["sae"] = new_meta["sae"]
        path.write_text(json.dumps(to_jsonable(rec), indent=1))
        out.append(Attestation(path.stem, True, sae=new_meta["sae"]))
    return out
