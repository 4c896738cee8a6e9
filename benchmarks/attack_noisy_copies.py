"""A cheap attack on the board: public real rows plus just enough noise to pass the copy check.

docs/integrity.md found that public rows + 10 % isotropic noise pass the copy check and left
open "whether such noisy copies score well". This script answers it with the official scorer
(every row, full probes): it writes each attack as an activation-only submission, validates it
(copy check included) and scores it, and prints the score beside the board's entries.

    python benchmarks/attack_noisy_copies.py [--track smollm2-135m-l1] [--attacks iso10 cov10]
                                             [--out runs/attacks]

Attacks (each row one public row, drawn without replacement, seed 0):
- ``iso<p>``: ``x + (p / 100) ||x|| u`` with ``u`` a uniformly random unit direction;
- ``cov<p>``: ``x + e``, ``e ~ N(0, Sigma)`` of the public rows rescaled to ``(p / 100) ||x||``
  (noise shaped like real variation, same length).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from baselines.generators import moved_rows
from challenge.directions import ActivationStats, as_generator
from challenge.errors import ChallengeError
from challenge.models import load_model
from challenge.scoring import ScoreConfig, score_folder
from challenge.submission import write_submission
from challenge.track import DEFAULT_TRACK, resolve_track


def attack_rows(public: torch.Tensor, kind: str, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` public rows with noise of ``kind`` (``iso<p>`` or ``cov<p>``;
    ``baselines.generators.moved_rows``, which the ``noisy_copy`` reference line uses)."""
    if kind[:3] not in ("iso", "cov"):
        raise ValueError(f"unknown attack {kind!r}: iso<p> or cov<p>")
    chol = ActivationStats.fit(public).chol if kind.startswith("cov") else None
    return moved_rows(public, n, float(kind[3:]) / 100, as_generator(seed), chol)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--track", default=DEFAULT_TRACK)
    ap.add_argument("--attacks", nargs="+", default=["iso10", "cov10"])
    ap.add_argument("--out", type=Path, default=Path("runs/attacks"))
    a = ap.parse_args()
    track = resolve_track(a.track)
    lm = load_model(track.spec.model)
    n = track.required_n
    rows = {}
    for kind in a.attacks:
        folder = a.out / track.spec.track_id / f"noisy_copy_{kind}"
        meta = {
            "name": f"noisy_copy_{kind}",
            "authors": ["attack"],
            "track_id": track.spec.track_id,
            "track_version": track.spec.version,
            "generator": f"public rows + {kind} noise",
            "code": "benchmarks/attack_noisy_copies.py",
            "seed": 0,
            "uses": ["public_activations"],
        }
        write_submission(folder, meta, attack_rows(track.acts("public"), kind, n))
        t0 = time.perf_counter()
        try:
            rep = score_folder(folder, track, lm, ScoreConfig(), out=a.out / "reports")
            h = rep.headline
            rows[kind] = {"score": h.score, "ci": list(h.ci), "mean_ks": h.mean_ks}
        except ChallengeError as e:
            rows[kind] = {"refused": str(e)}
        rows[kind]["seconds"] = round(time.perf_counter() - t0, 1)
        print(kind, json.dumps(rows[kind]), flush=True)
    (a.out / f"{track.spec.track_id}_noisy_copies.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
