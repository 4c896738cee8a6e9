"""Where the submissions of a track sit relative to the real activations (docs/baselines.md).

For every submission folder of a track: the median row norm, the median distance to the nearest
public real activation and to the nearest *token mean* (the mean of the public rows that end in
one last token), and ``in_token_cluster``: the fraction of rows at most as far from their
nearest token mean as the median held-out real row is from its own (held-out real: ~0.5).
"""

from __future__ import annotations

from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor


def _nn_dist(x: Tensor, ref: Tensor, batch: int = 512) -> Tensor:
    """Exact nearest-neighbour distance of every row of ``x`` to ``ref`` (no cdist round-off)."""
    out = []
    r2 = (ref.double() ** 2).sum(1)
    for i in range(0, len(x), batch):
        xb = x[i : i + batch].double()
        d2 = (xb**2).sum(1, keepdim=True) - 2 * xb @ ref.double().T + r2[None]
        out.append(d2.clamp_min(0).amin(1).sqrt())
    return torch.cat(out).float()


def token_means(track) -> Float[Tensor, "n_tokens d_model"]:
    """Mean public activation per distinct last token."""
    acts, tok = track.acts("public").double(), track.tokens("public")[:, -1]
    uniq, inv, counts = torch.unique(tok, return_inverse=True, return_counts=True)
    sums = torch.zeros(len(uniq), acts.shape[1], dtype=torch.float64).index_add_(0, inv, acts)
    return (sums / counts[:, None]).float()


def placement(track, x: Float[Tensor, "n d_model"], means: Tensor, radius: float) -> dict:
    """Norm, nearest-public distance and in-cluster fraction of the rows ``x``."""
    pub = track.acts("public")
    nn = _nn_dist(x, pub)
    cm = _nn_dist(x, means)
    return {
        "n": len(x),
        "norm_median": float(x.norm(dim=1).median()),
        "nn_public_median": float(nn.median()),
        "nn_token_mean_median": float(cm.median()),
        "in_token_cluster": float((cm <= radius).float().mean()),
    }


def diagnose(track, submissions: Path) -> dict[str, dict]:
    """``placement`` of every submission under ``submissions`` (folders with safetensors)."""
    from challenge.submission import read_submission

    means = token_means(track)
    held = track.acts("heldout")
    radius = float(_nn_dist(held, means).median())
    out = {"_reference": {"heldout_real_median_distance_to_token_mean": radius}}
    for folder in sorted(p for p in Path(submissions).iterdir() if p.is_dir()):
        meta, x = read_submission(folder)
        out[folder.name] = placement(track, x, means, radius)
    return out
