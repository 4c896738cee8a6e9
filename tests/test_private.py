"""The private test split on the tiny track: built apart from the published splits, swapped in
for the held-out split, and a copy of the published (dev) held-out split gains nothing on it."""

import numpy as np
import pytest
import torch

from challenge import rng
from challenge.errors import SubmissionError, TrackIntegrityError
from challenge.private import KIND, build_private_split, with_test_split
from challenge.scorer import ScoreConfig, score_points
from challenge.track import SPLITS

CFG = ScoreConfig(n_curves=6, n_steps=10, n_boot=10)


def headline(report) -> float:
    """The report's headline, higher is better (scorer v1: 1 - mean KS; v2: headline.score)."""
    return 1.0 - report.headline.mean_ks


@pytest.fixture(scope="module")
def private_dir(tiny_track, smollm, tmp_path_factory):
    return build_private_split(
        tiny_track, smollm, secret_seed=1234, out=tmp_path_factory.mktemp("private") / "test"
    )


@pytest.fixture(scope="module")
def test_view(tiny_track, private_dir):
    return with_test_split(tiny_track, private_dir)


def test_private_split_is_fresh_and_swapped_in(tiny_track, private_dir, test_view):
    test = test_view.splits["heldout"]["tokens"]
    assert test.shape == tiny_track.splits["heldout"]["tokens"].shape
    published = {tuple(r) for s in SPLITS for r in tiny_track.splits[s]["tokens"].tolist()}
    assert not published & {tuple(r) for r in test.tolist()}
    assert torch.equal(test_view.acts("dev"), tiny_track.acts("heldout"))
    assert torch.equal(test_view.acts("public"), tiny_track.acts("public"))
    assert test_view.meta["sizes"]["heldout"] == 128 and test_view.path == private_dir
    assert not private_dir.is_relative_to(tiny_track.path)  # stored apart from the track
    # the same secret seed rebuilds the same split; it is not the published seed's next rows
    assert (private_dir / "track.json").read_text().count(KIND) == 1


def test_other_folders_are_refused(tiny_track, tmp_path):
    with pytest.raises(TrackIntegrityError, match="not a private test split"):
        with_test_split(tiny_track, tiny_track.path)


def _placed_dev_copy(track) -> torch.Tensor:
    """The issue's attack: the published held-out rows, with the scorer's reference rows put at
    the indices it scores (both drawn from fixed seeds)."""
    held = track.acts("heldout")
    n, k = len(held), CFG.n_curves
    ref = rng.subset(n, 2 * k, CFG.seed, "scorer.reference")[:k]
    rows = rng.subset(n, k, CFG.seed, "scorer.rows")
    perm = torch.full((n,), -1, dtype=torch.long)
    perm[rows] = ref
    rest = torch.tensor([i for i in range(n) if i not in set(ref.tolist())])
    perm[perm < 0] = rest
    assert sorted(perm.tolist()) == list(range(n))  # a permutation: every dev row once
    return held[perm]


@pytest.mark.slow  # scores twice (dev and test references): ~1-7 min on a busy 2-core machine
def test_copying_the_dev_split_gains_nothing_on_the_test_split(tiny_track, test_view, smollm):
    x = _placed_dev_copy(tiny_track)
    dev = score_points(tiny_track, smollm, x, CFG, progress=False)
    assert headline(dev) == 1.0  # on the published split the copy is the reference itself
    test = score_points(test_view, smollm, x, CFG, progress=False)
    assert headline(test) < 1.0
    # on the test split it is one more real sample: no feature is better than the floor (a
    # second real sample of the test split) beyond the bootstrap interval
    better = [k for k, f in test.features.items() if f.ks_ci[1] < f.floor]
    assert better == [], better
    assert np.mean([f.ks for f in test.features.values()]) > 0


def test_dev_copies_are_refused_by_validation_on_the_test_split(
    tiny_track, test_view, smollm, tmp_path
):
    from baselines.generators import Gaussian
    from challenge.submission import generate, read_submission, write_submission
    from challenge.validate import validate_submission

    good = generate(Gaussian(), tiny_track, smollm, out_root=tmp_path)
    validate_submission(good, test_view)  # an honest submission is valid on both splits
    meta, _ = read_submission(good)
    bad = write_submission(tmp_path / "dev_copy", meta, tiny_track.acts("heldout").clone())
    with pytest.raises(SubmissionError, match="copy check: 128 of 128 rows"):
        validate_submission(bad, test_view)
