"""Gaming the ranked section: statistics-tier generators tuned against the scorer (issue
"challenge v3", item 6; docs/integrity.md, "Gaming the statistics tier").

A participant of the statistics tier sees the artifact and the SAE, never a row, but can score
any generator locally (the dev board's held-out split is published) and keep the knob setting
that scores best. The cheap knobs tried here, all on the best honest entry
(``stats_token_cluster``: a token drawn by frequency, then ``N(token mean, (1 + 1/n_t)
Sigma_w)``):

- ``shrink s``: the within-token noise scaled by ``s`` (``s = 0``: every row a token mean);
- ``sae s``: the rows of ``shrink s`` passed through the SAE (``decode(encode(x))``): the
  dictionary, trained on real rows, as a denoiser toward where real rows lie;
- ``norm``: ``shrink 1`` rows rescaled to the artifact's per-token mean norm.

Each variant is scored with the board's probes and classifier on ``--n`` rows in one context
(a quick screen: the reference probed here, shared by every variant through the feature cache),
then the best at the board's full precision (every row, 2 contexts, the published reference)
unless ``--no-full``. Rows are checked by the copy check as a submission's would be.

    OMP_NUM_THREADS=2 python benchmarks/attack_statistics_tier.py [--track smollm2-135m-l1]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from baselines.statistics_generators import StatsTokenCluster, draw_tokens
from challenge.directions import as_generator
from challenge.models import load_model
from challenge.scoring import ScoreConfig
from challenge.scoring.copycheck import copy_findings
from challenge.scoring.recording import score_points
from challenge.scoring.validation import copy_calibration, real_rows
from challenge.statistics.published import statistics_inputs
from challenge.track import resolve_track


class Tuned(StatsTokenCluster):
    """stats_token_cluster with its within-token noise scaled by ``shrink``, optionally passed
    through the SAE or rescaled to the token's mean norm."""

    def __init__(self, shrink: float = 1.0, through_sae: bool = False, norm: bool = False):
        self.shrink, self.through_sae, self.norm = shrink, through_sae, norm

    def fit(self, stats, sae=None) -> None:
        super().fit(stats, sae)
        self.sae = sae

    def sample(self, n: int, *, seed: int) -> torch.Tensor:
        base = self.means_only(n, seed)
        x = super().sample(n, seed=seed)
        x = base + self.shrink * (x - base)
        if self.norm:
            x = x * (base.norm(dim=-1, keepdim=True) / x.norm(dim=-1, keepdim=True))
        if self.through_sae:
            with torch.no_grad():
                x = self.sae.decode(self.sae.encode(x.to(self.sae.W_dec.dtype))).float()
        return x

    def means_only(self, n: int, seed: int) -> torch.Tensor:
        """The same draw's token means (``mu`` for unlisted tokens): the noise-free part."""
        g = as_generator(seed)
        t = draw_tokens(self.stats, n, g)
        return torch.where((t >= 0)[:, None], self.means[t.clamp_min(0)], self.mean)


VARIANTS = {
    "shrink 1 (stats_token_cluster)": dict(shrink=1.0),
    "shrink 0.75": dict(shrink=0.75),
    "shrink 0.5": dict(shrink=0.5),
    "shrink 0 (token means)": dict(shrink=0.0),
    "sae 1": dict(shrink=1.0, through_sae=True),
    "sae 0.5": dict(shrink=0.5, through_sae=True),
    "norm 1": dict(shrink=1.0, norm=True),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--track", default="smollm2-135m-l1")
    ap.add_argument("--n", type=int, default=300, help="rows of the quick screen (one context)")
    ap.add_argument("--no-full", action="store_true")
    ap.add_argument("--out", default="runs/attack_statistics_tier")
    a = ap.parse_args()
    track = resolve_track(a.track)
    stats, sae = statistics_inputs(track)
    lm = load_model(track.spec.model)
    board = ScoreConfig()
    quick = replace(board, n_points=a.n, contexts_per_row=1)
    real, cal = real_rows(track), copy_calibration(track)
    out: dict = {"track": a.track, "n_quick": a.n, "variants": {}}
    best, best_score = None, -1.0
    for name, kw in VARIANTS.items():
        t0 = time.perf_counter()
        gen = Tuned(**kw)
        gen.fit(stats, sae)
        x = gen.sample(track.required_n, seed=0)
        found, _ = copy_findings(x, real, cal)
        refused = [f.message(len(x)) for f in found if f.refused]
        rep = score_points(track, lm, x, quick, progress=False, reference="probe")
        h = rep.headline
        out["variants"][name] = {
            "score": h.score,
            "ci": list(h.ci),
            "copy_check": refused or "accepted",
            "seconds": round(time.perf_counter() - t0, 1),
        }
        print(f"{name}: {h.score:.3f} [{h.ci[0]:.3f}, {h.ci[1]:.3f}] copy check: "
              f"{'refused' if refused else 'accepted'}", flush=True)  # fmt: skip
        if not refused and h.score > best_score:
            best, best_score = name, h.score
    if best is not None and not a.no_full:
        gen = Tuned(**VARIANTS[best])
        gen.fit(stats, sae)
        rep = score_points(track, lm, gen.sample(track.required_n, seed=0), board, progress=False)
        h = rep.headline
        out["full"] = {"variant": best, "score": h.score, "ci": list(h.ci)}
        print(f"full precision, {best}: {h.score:.3f} [{h.ci[0]:.3f}, {h.ci[1]:.3f}]")
    path = Path(a.out) / f"{track.spec.track_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
