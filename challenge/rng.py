"""Named seed streams and seeded subsets.

Every random draw of the suite takes its seed from ``(run seed, stream name)`` through
:func:`seed_for`, never from an ad-hoc ``seed + k`` at the call site. The table :data:`STREAMS`
is the one place that says which draws are independent of which: two names with the same
offset draw the same numbers for the same run seed (that is deliberate where listed, e.g. the
scorer's scored rows and P1's real targets both use offset 1, as every published result of the
suite was made that way; changing an offset changes every number that depends on it).

``index`` selects one member of an indexed family (``p3.direction`` for the i-th direction
kind): ``seed + offset + stride * index``. A family indexed by several numbers has one stride
per index and takes a tuple (``interactions.layer``: the i-th lambda and the layer):
``seed + offset + sum(stride_j * index_j)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Int
from torch import Tensor

from challenge.errors import ConfigError


@dataclass(frozen=True)
class Stream:
    """A named seed stream: ``seed + offset (+ stride * index)``; with a tuple of strides, one
    per index: ``seed + offset + sum(stride_j * index_j)``."""

    offset: int
    stride: int | tuple[int, ...] = 0
    doc: str = ""


STREAMS: dict[str, Stream] = {
    # protocols
    "p1.contexts": Stream(0, doc="P1: which context prompts are probed"),
    "p1.real_targets": Stream(1, doc="P1: held-out rows used as real targets"),
    "p1.random_targets": Stream(2, doc="P1: N(mu, Sigma) targets"),
    "p1.ap_ends": Stream(3, doc="P1 published AP: the fresh N(mu, Sigma) samples paths end at"),
    "p1.bootstrap": Stream(4, doc="P1: bootstrap resamples of the curves (paired by context)"),
    "p2.control": Stream(0, doc="P2: cov-random-mixture control directions"),
    "p3.contexts": Stream(0, doc="P3: which base activations are probed"),
    "p3.direction": Stream(0, 1000, "P3: the i-th direction kind of the config"),
    # scorer
    "scorer.reference": Stream(0, doc="the held-out reference half (always run seed 0)"),
    "scorer.rows": Stream(1, doc="the order in which submitted rows fill the slots"),
    "scorer.contexts": Stream(2, doc="each slot's context prompt"),
    "scorer.directions": Stream(3, doc="each slot's random radius directions"),
    "scorer.ap_ends": Stream(4, doc="each slot's N(mu, Sigma) AP end point"),
    "scorer.reference_order": Stream(5, doc="the order in which reference rows fill the slots"),
    "scorer.folds": Stream(
        6, 1000, "cross-fitting folds of the slots and the classifier's seed (index: the repeat)"
    ),
    "scorer.bootstrap": Stream(8, doc="bootstrap resamples of the slots (shared by all entries)"),
    "scorer.null_swaps": Stream(
        9, doc="the null band's label swaps: which rows exchange reference and oracle features"
    ),
    "scorer.null_splits": Stream(10, doc="the null band's split halves: the random row halves"),
    # studies
    "layers.control": Stream(0, 1, "cov-random-mixture control at write layer index"),
    "steering.random": Stream(1, doc="cov-random-mixture directions"),
    "steering.isotropic": Stream(2, doc="isotropic directions"),
    "boundaries.paths": Stream(0, doc="context rows and held-out real targets of the paths"),
    "boundaries.bunching_l2": Stream(0, doc="random alignment of the bunching null (L2 max slope)"),
    "boundaries.bunching_kl": Stream(1, doc="random alignment of the bunching null (KL max slope)"),
    "boundaries.random_points": Stream(2, doc="N(mu, Sigma) endpoints"),
    "sae_plateaus.recon": Stream(0, doc="points and real targets of part A"),
    "sae_plateaus.random": Stream(3, doc="cov-random-mixture steps of the same length"),
    "sae_plateaus.isotropic": Stream(4, doc="isotropic steps of the same length"),
    "sae_plateaus.paths": Stream(10, doc="path pairs of part B"),
    "sae_plateaus.points": Stream(20, doc="points of part C"),
    "sae_plateaus.gaussian": Stream(21, doc="N(mu, Sigma) points of part C"),
    "sae_plateaus.directions": Stream(22, doc="isotropic directions of part C"),
    "sae_collapse.paths": Stream(30, doc="contexts and held-out targets of the path pairs"),
    "sae_collapse.real_pairs": Stream(31, doc="contexts and random partners of the real pairs"),
    # feature finding
    "feature_finding.start": Stream(0, doc="random starts of the direction finders"),
    "feature_finding.jacobian_rows": Stream(1, doc="bases whose Jacobian is computed"),
    "feature_finding.random": Stream(5, doc="isotropic random directions"),
    "feature_finding.cov_mixture": Stream(6, doc="cov-random-mixture directions"),
    "feature_finding.signs": Stream(77, 1, "signs of shared directions per base, i-th set"),
    # sparse interactions
    "interactions.layer": Stream(0, (1000, 7), "a layer's dictionaries: (i-th lambda, layer)"),
    "interactions.sae_out": Stream(1, doc="the output dictionary's initialisation"),
    "interactions.sae_in": Stream(0, doc="the input dictionary's initialisation"),
    "interactions.batches": Stream(0, doc="the order of the training tokens"),
    "interactions.windows": Stream(0, doc="which text windows are train / held-out"),
    "interactions.circuit_random": Stream(0, doc="random latents of the circuit's ablation"),
    # the plateau atlas (challenge.atlas): the same draws at every layer
    "atlas.rows": Stream(0, doc="held-out rows tested as real points"),
    "atlas.contexts": Stream(1, doc="each slot's context prompt"),
    "atlas.directions": Stream(2, doc="each slot's random radius directions"),
    "atlas.ap_ends": Stream(3, doc="each slot's N(mu, Sigma) AP end point"),
    "atlas.random": Stream(4, doc="the N(mu, Sigma) points tested"),
    "atlas.bootstrap": Stream(5, 1000, "bootstrap of the points at write layer index"),
    # SAEs
    "sae.train": Stream(0, doc="SAE initialisation, then the training batches"),
    "sae.e2e": Stream(0, doc="end-to-end SAE initialisation, then the training batches"),
    # the private test split (challenge.private; the seed is the organiser's secret)
    "private.windows": Stream(0, doc="shuffle of the windows the test split is drawn from"),
    # the statistics tier (baselines.statistics_generators)
    "statistics.base_codes": Stream(
        10_000, doc="latent sets the ported SAE compositions start from (the run seed: the rest)"
    ),
    # the memorisation test (challenge.scoring.memorisation)
    "memorisation.relabel": Stream(0, doc="random public / holdout relabellings of the null"),
    "memorisation.resamples": Stream(1, doc="real-vs-real resamples of its calibration check"),
    # plateaus over training (challenge.studies.training)
    "training.init": Stream(0, 1000, "model initialisation"),
    "training.split": Stream(1, 1000, "modadd's train / test split of the pairs"),
    "training.batches": Stream(2, 1000, "the LM's training windows (index: the step)"),
    "training.points": Stream(3, 1000, "real points probed (index: the part)"),
    "training.directions": Stream(4, 1000, "random radius directions"),
    "training.gaussian": Stream(5, 1000, "N(mu, Sigma) points (index: the part)"),
    "training.lc": Stream(6, 1000, "local complexity's cross-polytope directions"),
    "training.null": Stream(7, 1000, "step-shuffle null draws (index: the path group)"),
    "training.bootstrap": Stream(8, 1000, "bootstrap resamples (index: the path group)"),
}


def seed_for(seed: int, stream: str, index: int | tuple[int, ...] = 0) -> int:
    """The seed of ``stream`` (a key of :data:`STREAMS`) for run seed ``seed``; ``index``: one
    number, or a tuple of one per stride of a stream with several."""
    try:
        s = STREAMS[stream]
    except KeyError:
        raise ConfigError(f"unknown seed stream {stream!r}", field="stream") from None
    strides = s.stride if isinstance(s.stride, tuple) else (s.stride,)
    indices = tuple(index) if isinstance(index, tuple) else (index,)
    if len(indices) != len(strides):
        raise ConfigError(
            f"seed stream {stream!r} takes {len(strides)} indices, got {len(indices)}",
            field="index",
        )
    if any(i and not st for st, i in zip(strides, indices, strict=True)):
        raise ConfigError(f"seed stream {stream!r} is not indexed", field="index")
    return int(seed) + s.offset + sum(st * int(i) for st, i in zip(strides, indices, strict=True))


def generator(seed: int, stream: str, index: int | tuple[int, ...] = 0) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded from ``(seed, stream, index)``."""
    return torch.Generator().manual_seed(seed_for(seed, stream, index))


def subset(n_avail: int, n: int, seed: int, stream: str) -> Int[Tensor, " k"]:
    """``min(n, n_avail)`` distinct indices of ``range(n_avail)``, a seeded permutation's head."""
    g = generator(seed, stream)
    return torch.randperm(n_avail, generator=g)[: min(n, n_avail)]
