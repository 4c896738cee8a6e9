"""Where the submissions of a track sit relative to the real activations (docs/baselines.md).

For every submission folder of a track: the median row norm, the median distance to the nearest
public real activation and to the nearest *token mean* (the mean of the public rows that end in
one last token), and ``in_token_cluster``: the fraction of rows at most as far from their
nearest token mean as the median held-out real row is from its own (held-out real: ~0.5).
:func:`run` writes them as a result (``plateau diagnose-submissions``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from jaxtyping import Float
from torch import Tensor

from baselines.generators import last_token_means
from challenge.results import Result, TrackRef, provenance
from challenge.scoring.validation import nearest_distances


def placement(track, x: Float[Tensor, "n d_model"], means: Tensor, radius: float) -> dict:
    """Norm, nearest-public distance and in-cluster fraction of the rows ``x``."""
    pub = track.acts("public")
    nn = nearest_distances(x, pub)
    cm = nearest_distances(x, means)
    return {
        "n": len(x),
        "norm_median": float(x.norm(dim=1).median()),
        "nn_public_median": float(nn.median()),
        "nn_token_mean_median": float(cm.median()),
        "in_token_cluster": float((cm <= radius).float().mean()),
    }


def diagnose(track, submissions: Path) -> dict[str, dict]:
    """``placement`` of every submission under ``submissions`` (folders with safetensors)."""
    from challenge.errors import ConfigError
    from challenge.submission import read_submission

    if not Path(submissions).is_dir():
        raise ConfigError("is not a folder of submission folders", file=str(submissions))
    means = last_token_means(track)[0]
    held = track.acts("heldout")
    radius = float(nearest_distances(held, means).median())
    out = {"_reference": {"heldout_real_median_distance_to_token_mean": radius}}
    for folder in sorted(p for p in Path(submissions).iterdir() if p.is_dir()):
        _, x = read_submission(folder)
        out[folder.name] = placement(track, x, means, radius)
    return out


@dataclass
class Placement:
    """Where one submission's rows sit (medians over its rows)."""

    norm_median: float
    nn_public_median: float
    """distance to the nearest public real activation"""
    nn_token_mean_median: float
    """distance to the nearest last-token mean"""
    in_token_cluster: float
    """fraction of rows inside a real last-token cluster"""


@dataclass
class PlacementResult(Result):
    """:func:`diagnose` of a folder of submissions; ``headline``: per submission, ``detail``:
    ``placement`` (the rows with their ``n`` and the ``_reference`` radius)."""

    headline: dict[str, Placement] = field(default_factory=dict)


def run(
    track, submissions: Path | None = None, out: Path = Path("runs/baselines")
) -> PlacementResult:
    """:func:`diagnose` every submission under ``submissions`` (default
    ``submissions/<track id>``); write ``<out>/<track id>_placement.json``."""
    submissions = submissions or Path("submissions") / track.spec.track_id
    rows = diagnose(track, submissions)
    res = PlacementResult(
        kind="placement",
        config={"submissions": str(submissions)},
        headline={
            name: Placement(**{k: r[k] for k in Placement.__dataclass_fields__})
            for name, r in rows.items()
            if not name.startswith("_")
        },
        detail={"placement": rows},
        track=TrackRef.of(track),
        provenance=provenance(),
    )
    res.save(out, f"{track.spec.track_id}_placement")
    return res
