"""The private test split on the tiny track: built apart from the published splits, swapped in
for the held-out split, and a copy of the published (dev) held-out split gains nothing on it."""

import pytest
import torch

from challenge import rng  # noqa: F401  (the scorer's streams)
from challenge.errors import SubmissionError, TrackIntegrityError
from challenge.private import KIND, build_private_split, with_test_split
from challenge.probes import ProbeConfig
from challenge.scoring import ScoreConfig, score_points
from challenge.track import SPLITS

# Light probes for the 64-slot tiny track (as tests/scoring/test_scorer.py), few bootstrap draws.
CFG = ScoreConfig(
    probes=ProbeConfig(probes=("radius", "p2"), n_directions=4, bisect_steps=6, p2_steps=11),
    contexts_per_row=1,
    n_boot=100,
)


def headline(report) -> tuple[float, tuple[float, float]]:
    """The report's headline score (0..1, higher is better) and its 95 % interval."""
    return report.headline.score, tuple(report.headline.ci)


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
    assert test.shape == tiny_track.splits["heldout"]["tokens"].shape  # 128 rows, as published
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
    """The issue's attack against scorer v2: the published held-out rows of the scorer's
    reference half (fixed per track), each put where the scorer reads the matching slot, so
    every slot holds the reference row itself."""
    ref = track.acts("heldout")[track.reference_rows()]
    n = len(ref)
    rows = rng.subset(n, n, CFG.seed, "scorer.rows")  # slot i is scored on row rows[i]
    x = torch.empty_like(ref)
    x[rows] = ref
    return x


@pytest.mark.slow  # scores twice (dev and test references): ~1-7 min on a busy 2-core machine
def test_copying_the_dev_split_gains_nothing_on_the_test_split(tiny_track, test_view, smollm):
    x = _placed_dev_copy(tiny_track)
    dev = headline(score_points(tiny_track, smollm, x, CFG, progress=False))
    # on the published split every slot holds its reference row: the classifier cannot tell
    # them apart (its interval is not exactly [1, 1]: the two are probed in different engine
    # batches, so their features differ by fp32 rounding, which bootstrap resamples can split)
    assert dev[0] == 1.0
    test_score, (low, high) = headline(score_points(test_view, smollm, x, CFG, progress=False))
    # on the test split the copy is one more real sample: scored like the test split's own
    # oracle half (a second real sample), not better
    oracle_idx = sorted(set(range(128)) - set(test_view.reference_rows().tolist()))
    oracle = test_view.acts("heldout")[torch.tensor(oracle_idx)]
    o_score, (o_low, o_high) = headline(
        score_points(test_view, smollm, oracle, CFG, progress=False)
    )
    # no longer the exact reference: no copied row is a row of the test split's reference
    # half. (Its interval may still be [1, 1], as the test oracle's may: on a machine with
    # AVX512 kernels both scored 1.0 [1.0, 1.0] at these 64 points.)
    test_ref = test_view.acts("heldout")[test_view.reference_rows()]
    assert torch.cdist(x.double(), test_ref.double()).min() > 0
    assert low <= o_high and o_low <= high, (test_score, low, high, o_score, o_low, o_high)


def test_dev_copies_are_refused_by_validation_on_the_test_split(
    tiny_track, test_view, smollm, tmp_path
):
    from baselines.generators import Gaussian
    from challenge.scoring import validate_submission
    from challenge.submission import generate, read_submission, write_submission

    good = generate(Gaussian(), tiny_track, smollm, out_root=tmp_path)
    validate_submission(good, test_view)  # an honest submission is valid on both splits
    meta, _ = read_submission(good)
    dev = tiny_track.acts("heldout")[tiny_track.reference_rows()].clone()
    bad = write_submission(tmp_path / "dev_copy", meta, dev)
    with pytest.raises(SubmissionError, match="copy check: 64 of 64 rows"):
        validate_submission(bad, test_view)
