"""The layer seeds of an interactions run come from the rng table and equal the old formula."""

import pytest

from challenge.errors import ConfigError
from challenge.rng import STREAMS, seed_for


def old_layer_seed(seed: int, li: int, L: int) -> int:
    """How ``run`` seeded a layer before the stream held both terms: the ``interactions.layer``
    stream (offset 0, stride 1000) indexed by the lambda's position, plus ``7 * L`` at the call
    site."""
    return seed + 0 + 1000 * li + 7 * L


@pytest.mark.parametrize("seed", [0, 1, 3, 12345])
@pytest.mark.parametrize("li", [0, 1, 2, 4])
@pytest.mark.parametrize("L", [0, 1, 6, 15, 29])
def test_layer_seed_is_the_old_one(seed, li, L):
    assert seed_for(seed, "interactions.layer", (li, L)) == old_layer_seed(seed, li, L)


def test_the_seed_of_published_layers():
    """A few values by hand: seed 0, lambdas (0, 0.3), layers 6 / 15 / 24 of the docs' sweep."""
    assert [seed_for(0, "interactions.layer", (li, L)) for li in (0, 1) for L in (6, 15, 24)] == [
        42,
        105,
        168,
        1042,
        1105,
        1168,
    ]


def test_the_stream_takes_both_indices():
    assert STREAMS["interactions.layer"].stride == (1000, 7)
    with pytest.raises(ConfigError, match="2 indices"):
        seed_for(0, "interactions.layer", 1)
    with pytest.raises(ConfigError, match="1 indices"):
        seed_for(0, "p3.direction", (1, 2))


def test_single_index_streams_are_unchanged():
    assert seed_for(5, "p3.direction", 2) == 5 + 0 + 1000 * 2
    assert seed_for(5, "feature_finding.signs", 3) == 5 + 77 + 3
    assert seed_for(5, "scorer.folds", (2,)) == 5 + 6 + 2000
    with pytest.raises(ConfigError, match="not indexed"):
        seed_for(0, "interactions.sae_in", 1)
