"""Submission placement: real rows sit inside last-token clusters, N(mu, Sigma) rows do not."""

import torch

from baselines.diagnostics import diagnose, placement
from baselines.generators import Gaussian, HeldoutReal, last_token_means
from challenge.scoring.validation import nearest_distances
from challenge.submission import write_submission


def test_real_rows_sit_in_token_clusters_gaussian_rows_do_not(tiny_track, smollm, tmp_path):
    means = last_token_means(tiny_track)[0]
    assert len(means) == len(torch.unique(tiny_track.tokens("public")[:, -1]))
    held = tiny_track.acts("heldout")
    radius = float(nearest_distances(held, means).median())
    real = placement(tiny_track, held, means, radius)
    # the radius is the median (torch: the lower of the two middle values of the 128 rows) of
    # these same distances, so exactly 64 of 128 rows lie within it (no ties among them)
    assert len(held) % 2 == 0 and real["in_token_cluster"] == 0.5
    gen = Gaussian()
    gen.fit(tiny_track, smollm)
    fake = placement(tiny_track, gen.sample(len(held), seed=0), means, radius)
    assert fake["in_token_cluster"] < 0.1
    assert fake["nn_public_median"] > real["nn_public_median"]
    # diagnose() reads submission folders
    for g in (HeldoutReal(), gen):
        g.fit(tiny_track, smollm)
        write_submission(
            tmp_path / g.name,
            {
                "name": g.name,
                "authors": ["t"],
                "track_id": tiny_track.spec.track_id,
                "track_version": tiny_track.spec.version,
                "generator": g.description,
                "code": "tests",
                "seed": 0,
                "uses": g.uses,
            },
            g.sample(64, seed=0),
        )
    rows = diagnose(tiny_track, tmp_path)
    assert rows["heldout_real"]["in_token_cluster"] > rows["gaussian"]["in_token_cluster"]


def test_missing_submissions_folder_is_a_clear_error(tiny_track, tmp_path):
    import pytest

    from challenge.errors import ConfigError

    with pytest.raises(ConfigError, match="not a folder of submission folders"):
        diagnose(tiny_track, tmp_path / "nowhere")
