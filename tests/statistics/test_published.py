"""The statistics tier on the organiser's side: the artifact published with a track (or built
and cached), what a statistics-tier generator's ``fit`` receives, its record's section, and the
artifact through ``publish`` / ``download``."""

import json
import shutil

import pytest
import torch

from baselines.statistics_generators import StatsGaussian, StatsSAEComposition
from challenge.access import category_of, generator_access, guarded
from challenge.errors import TrackIntegrityError
from challenge.sae import SAEConfig, save_sae, train_sae
from challenge.statistics import StatisticsConfig, TrackStatistics, build_statistics
from challenge.statistics.published import (
    STATISTICS_FOLDER,
    published_statistics_dir,
    statistics_cache_dir,
    statistics_inputs,
    track_statistics,
)
from challenge.store import SAE_FOLDER, download, publish
from challenge.submission import generate, read_submission
from challenge.track import load_track


@pytest.fixture(scope="module")
def track_with_sae(tiny_track_dir, tmp_path_factory):
    """A copy of the tiny track with a small SAE published under the default SAE's name (what
    ``track_sae`` loads), so nothing trains the 4096-latent default here."""
    root = tmp_path_factory.mktemp("stats_track")
    d = shutil.copytree(tiny_track_dir, root / "tiny")
    track = load_track(d)
    cfg = SAEConfig(n_latents=128, k=8, steps=40, batch=64, positions="last")
    sae, _ = train_sae(track.acts("public"), cfg, progress=False)
    save_sae(sae, d / SAE_FOLDER / SAEConfig().name())
    from challenge.store import write_sae_manifest

    write_sae_manifest(d / SAE_FOLDER / SAEConfig().name())
    return load_track(d)


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PLATEAU_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_the_artifact_is_built_once_then_loaded_and_names_its_sae(track_with_sae, cache):
    with pytest.raises(Exception, match="plateau build-statistics"):
        track_statistics(track_with_sae, build=False)
    stats = track_statistics(track_with_sae)
    d = statistics_cache_dir(track_with_sae)
    assert d.is_relative_to(cache) and (d / "manifest.json").exists()
    again = track_statistics(track_with_sae, build=False)
    assert all(torch.equal(stats[k], again[k]) for k in stats.tensors)
    assert stats.meta["sae"]["name"] == SAEConfig().name() and stats.k == 10
    assert published_statistics_dir(track_with_sae) is None  # built here, not published


def test_a_statistics_tier_generator_gets_the_artifact_and_no_track(track_with_sae, smollm, cache):
    stats, sae = guarded(track_with_sae, smollm, StatsSAEComposition())
    assert isinstance(stats, TrackStatistics) and sae is not None
    assert not hasattr(stats, "acts") and not hasattr(stats, "splits")
    stats, sae = guarded(track_with_sae, smollm, StatsGaussian())  # declares no SAE
    assert isinstance(stats, TrackStatistics) and sae is None
    assert category_of(("statistics", "sae")) == "statistics"
    assert category_of(("statistics",)) == "statistics"
    assert category_of(("statistics", "public")) == "synthetic"  # sees rows: the rows tier
    assert category_of(("statistics", "heldout")) == "reference"
    assert generator_access(StatsSAEComposition()) == {
        "category": "statistics", "verified_by": "in_repo", "access": ["statistics", "sae"],
    }  # fmt: skip


def test_generate_writes_a_statistics_tier_submission(track_with_sae, smollm, cache, tmp_path):
    folder = generate(StatsSAEComposition(), track_with_sae, smollm, out_root=tmp_path)
    meta, acts = read_submission(folder)
    assert acts.shape == (track_with_sae.required_n, track_with_sae.d_model)
    assert meta["code"] == "baselines/statistics_generators.py:StatsSAEComposition"
    assert (
        meta["uses"] == ["statistics_artifact", "sae"] and meta["sae"]["name"] == SAEConfig().name()
    )


def test_an_artifact_of_another_sae_is_refused(track_with_sae, smollm, cache):
    other, _ = train_sae(
        track_with_sae.acts("public"),
        SAEConfig(n_latents=64, k=4, steps=5, batch=64, positions="last", seed=1),
        progress=False,
    )
    src = save_sae(other, cache / "other_sae")
    from challenge.sae import load_sae
    from challenge.statistics import save_statistics

    other = load_sae(src)  # names its folder: the artifact records its checksum
    save_statistics(
        build_statistics(track_with_sae, other, StatisticsConfig()),
        statistics_cache_dir(track_with_sae),
    )
    assert track_statistics(track_with_sae).meta["sae"]["name"] == src.name
    with pytest.raises(TrackIntegrityError, match="the artifact was built with"):
        statistics_inputs(track_with_sae)


def test_publish_ships_the_artifact_and_download_verifies_it(track_with_sae, cache, tmp_path):
    art = statistics_cache_dir(track_with_sae)
    stats = track_statistics(track_with_sae)
    reg = tmp_path / "registry"
    target = publish(track_with_sae.path, str(reg), statistics=art)
    got = download(str(reg), track_id=track_with_sae.spec.track_id,
                   version=track_with_sae.spec.version, cache_dir=tmp_path / "fetched")  # fmt: skip
    fetched = load_track(got)
    assert published_statistics_dir(fetched) == got / STATISTICS_FOLDER
    back = track_statistics(fetched, build=False)
    assert all(torch.equal(stats[k], back[k]) for k in stats.tensors)
    # a changed byte in the registry is refused by download, naming the file
    card = reg / track_with_sae.spec.track_id / f"v{track_with_sae.spec.version}"
    card = card / STATISTICS_FOLDER / "README.md"
    card.write_text(card.read_text() + " ")
    with pytest.raises(TrackIntegrityError, match="sha256 mismatch") as e:
        download(str(reg), track_id=track_with_sae.spec.track_id,
                 version=track_with_sae.spec.version, cache_dir=tmp_path / "again")  # fmt: skip
    assert e.value.file.endswith(f"{STATISTICS_FOLDER}/README.md")
    assert not (tmp_path / "again").exists()  # nothing written half-way
    # publishing another artifact (here: k = 12) into the same version is refused
    card.write_text(card.read_text()[:-1])
    other = statistics_cache_dir(track_with_sae, StatisticsConfig(k=12))
    track_statistics(track_with_sae, StatisticsConfig(k=12))
    assert json.loads((other / "manifest.json").read_text())["k"] == 12
    with pytest.raises(TrackIntegrityError, match="already has a different statistics artifact"):
        publish(track_with_sae.path, str(reg), statistics=other)
    assert target.endswith(f"v{track_with_sae.spec.version}")
