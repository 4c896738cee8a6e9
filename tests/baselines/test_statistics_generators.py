"""The statistics tier's generators (baselines.statistics_generators): fitted on the artifact
and the SAE only, [n, d_model] float32 rows, deterministic per seed."""

import pytest
import torch

import challenge.store
import challenge.track
from baselines.statistics_generators import (
    STATISTICS_GENERATORS,
    LatentSets,
    StatisticsGenerator,
    inverse_cdf,
)
from challenge.sae import SAEConfig, train_sae
from challenge.statistics import (
    StatisticsConfig,
    build_statistics,
    load_statistics,
    save_statistics,
)
from challenge.track import TrackLike

TOY_SAE = SAEConfig(n_latents=128, k=8, steps=40, batch=128, positions="last")
N = 64


@pytest.fixture(scope="module")
def toy_sae(tiny_track):
    return train_sae(tiny_track.acts("public"), TOY_SAE, progress=False)[0]


@pytest.fixture(scope="module")
def artifact(tiny_track, toy_sae, tmp_path_factory):
    """The tiny track's artifact (k = 2) as a generator gets it: saved, then loaded from disk."""
    d = tmp_path_factory.mktemp("stats") / "k2"
    save_statistics(build_statistics(tiny_track, toy_sae, StatisticsConfig(k=2)), d)
    return load_statistics(d)


@pytest.mark.parametrize("name", sorted(STATISTICS_GENERATORS))
def test_rows_are_float32_and_deterministic_per_seed(name, artifact, toy_sae):
    gen = STATISTICS_GENERATORS[name]()
    assert isinstance(gen, StatisticsGenerator) and gen.name == name
    assert "statistics" in gen.access and set(gen.access) <= {"statistics", "sae"}
    gen.fit(artifact, toy_sae)
    x = gen.sample(N, seed=0)
    assert x.shape == (N, artifact.d_model) and x.dtype == torch.float32
    assert torch.isfinite(x).all()
    assert torch.equal(x, gen.sample(N, seed=0))
    assert not torch.equal(x, gen.sample(N, seed=1))


@pytest.mark.parametrize("name", sorted(STATISTICS_GENERATORS))
def test_a_generator_never_reaches_a_split(name, artifact, toy_sae, tiny_track, monkeypatch):
    """``fit`` takes the artifact, not the track: with every route to a split broken (reading
    a track's files, a loaded track's arrays), fitting and sampling still work; nothing the
    generator holds is a track or contains a real row."""

    def refuse(*a, **k):
        raise AssertionError("a statistics generator reached a split")

    real = torch.cat([tiny_track.acts(s) for s in sorted(tiny_track.splits)])
    for target, attr in (
        (challenge.store, "read_track"),
        (challenge.track, "load_track"),
        (challenge.track, "resolve_track"),
        (challenge.track.Track, "acts"),
        (challenge.track.Track, "tokens"),
    ):
        monkeypatch.setattr(target, attr, refuse)
    gen = STATISTICS_GENERATORS[name]()
    gen.fit(artifact, toy_sae)
    x = gen.sample(N, seed=3)
    monkeypatch.undo()
    assert not any(isinstance(v, TrackLike) for v in vars(gen).values())
    held = [v for v in vars(gen).values() if isinstance(v, torch.Tensor)]
    held += [v for v in vars(artifact).get("tensors", {}).values()]
    for v in held:
        if v.ndim == 2 and v.shape[1] == real.shape[1] and len(v):
            assert float(torch.cdist(v.double(), real.double()).min()) > 1e-3
    assert not (torch.cdist(x.double(), real.double()) < 1e-6).any()


def test_latent_sets_follow_the_artifact(artifact, toy_sae):
    draw = LatentSets(artifact, toy_sae)
    codes = draw(200, torch.Generator().manual_seed(0))
    listed = set(artifact["latent_ids"].tolist())
    ids = codes.ids[codes.ids >= 0]
    assert set(ids.tolist()) <= listed  # only latents firing on >= k public rows
    assert set(codes.l0.tolist()) <= set(artifact["l0_values"].tolist())
    for row in codes.ids:  # distinct latents within a row, values decreasing
        live = row[row >= 0]
        assert len(set(live.tolist())) == len(live)
    assert (codes.vals[:, :-1] >= codes.vals[:, 1:]).all()
    lo = artifact["latent_value_quantiles"].min(1).values
    hi = artifact["latent_value_quantiles"].max(1).values
    pos = {int(j): i for i, j in enumerate(artifact["latent_ids"])}
    i = torch.tensor([pos[int(j)] for j in ids])
    v = codes.vals[codes.ids >= 0]
    assert (v >= lo[i] - 1e-5).all() and (v <= hi[i] + 1e-5).all()


def test_inverse_cdf_interpolates_between_levels():
    levels = torch.tensor([[0.1, 0.5, 0.9]]).expand(4, -1)
    values = torch.tensor([[1.0, 2.0, 4.0]]).expand(4, -1)
    u = torch.tensor([0.0, 0.3, 0.7, 1.0])
    assert torch.allclose(
        inverse_cdf(u, levels, values).float(), torch.tensor([1.0, 1.5, 3.0, 4.0])
    )
