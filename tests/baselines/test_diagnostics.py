"""Submission placement: real rows sit inside last-token clusters, N(mu, Sigma) rows do not."""

import torch

from baselines.diagnostics import _nn_dist, diagnose, placement, token_means
from baselines.generators import Gaussian, HeldoutReal
from challenge.submission import write_submission


def test_nn_dist_is_exact():
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(50, 16, generator=g) * 40
    x = torch.cat([ref[:5], ref[5:10] + 1e-3])
    d = _nn_dist(x, ref)
    assert torch.equal(d[:5], torch.zeros(5))  # copies are at distance exactly 0
    want = torch.cdist(x.double(), ref.double()).amin(1).float()
    assert torch.allclose(d, want, atol=1e-5)


def test_real_rows_sit_in_token_clusters_gaussian_rows_do_not(tiny_track, smollm, tmp_path):
    means = token_means(tiny_track)
    assert len(means) == len(torch.unique(tiny_track.tokens("public")[:, -1]))
    held = tiny_track.acts("heldout")
    radius = float(_nn_dist(held, means).median())
    real = placement(tiny_track, held, means, radius)
    assert abs(real["in_token_cluster"] - 0.5) < 0.05  # the median row, by construction
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
