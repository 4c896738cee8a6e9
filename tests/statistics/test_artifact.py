"""The statistics artifact (challenge.statistics): every aggregate over >= k public rows, the
checksummed round trip, and no artifact row within the copy check's tau of a real row."""

import json

import pytest
import torch

from challenge.access import TrackView
from challenge.errors import ConfigError, TrackIntegrityError
from challenge.sae import SAEConfig, train_sae
from challenge.scoring.copycheck import calibrate
from challenge.statistics import (
    StatisticsConfig,
    TrackStatistics,
    build_statistics,
    check_k,
    load_statistics,
    save_statistics,
    verify_statistics,
)
from challenge.statistics.artifact import GLOBAL, k_levels, k_quantiles, pool_rare
from challenge.statistics.attack import ATTACKS, candidates, measure, sign_oracle

K = 2
"""The tiny track's 256 public rows: k = 2 lists 31 tokens, so per-token statistics exist."""
TINY_SAFE_K = 8
"""The smallest k at which no attack candidate lies within tau on the tiny track with the toy
SAE (measured: ``python benchmarks/attack_statistics.py --track smollm2-135m-l1-tiny --sae toy``;
its tau, 1.71, is set by one six-row token whose rows lie within 1.4-2.1 of each other, so
that token's mean sits within tau of them up to k = 6)."""
TOY_SAE = SAEConfig(n_latents=128, k=8, steps=40, batch=128, positions="last")


@pytest.fixture(scope="module")
def toy_sae(tiny_track):
    return train_sae(tiny_track.acts("public"), TOY_SAE, progress=False)[0]


@pytest.fixture(scope="module")
def stats(tiny_track, toy_sae):
    public_only = TrackView(tiny_track, ("public",), "statistics")  # any other split raises
    return build_statistics(public_only, toy_sae, StatisticsConfig(k=K))


def _copy(s: TrackStatistics) -> TrackStatistics:
    return TrackStatistics(
        {n: v.clone() for n, v in s.tensors.items()},
        {n: v.clone() for n, v in s.rows.items()},
        json.loads(json.dumps(s.meta)),
    )


def test_every_statistic_aggregates_at_least_k_rows(stats, tiny_track):
    check_k(stats)
    n = len(tiny_track.acts("public"))
    assert stats.n_rows == n and stats.meta["split"] == "public"
    for name, v in stats.tensors.items():
        rows = stats.rows[name]
        assert int(rows.min()) >= K, name
        assert rows.numel() == (1 if name in GLOBAL else v.shape[0]), name
    # something qualifies at k = 2, so the per-token and per-latent statistics are exercised
    assert 0 < len(stats["token_ids"]) and 0 < len(stats["latent_ids"])
    assert len(stats["cofiring_pairs"]) > 0
    # rare things are pooled: the listed tokens and "other" account for every row
    other = int(stats["token_other_count"][0]) if "token_other_count" in stats else 0
    assert int(stats["token_counts"].sum()) + other == n and (other == 0 or other >= K)
    last = tiny_track.tokens("public")[:, -1]
    for t, c in zip(stats["token_ids"].tolist(), stats["token_counts"].tolist(), strict=True):
        assert int((last == t).sum()) == c >= K
    # the listed latents are exactly those firing on >= k rows; profiles cover only them
    assert stats["token_profiles"].shape == (len(stats["token_ids"]), len(stats["latent_ids"]))
    assert int(stats["cofiring_counts"].min()) >= K


def test_check_k_names_the_statistic_that_fails(stats):
    check_k(stats, k=K)
    with pytest.raises(ConfigError, match="fewer than k=3") as e:
        check_k(stats, k=3)
    assert e.value.field  # names a statistic
    for name in ("token_means", "latent_value_quantiles", "cofiring_counts", "cov"):
        bad = _copy(stats)
        bad.rows[name][0] = 1
        with pytest.raises(ConfigError, match="aggregates 1 rows") as e:
            check_k(bad)
        assert e.value.field == name
    bad = _copy(stats)
    del bad.rows["token_profiles"]
    with pytest.raises(ConfigError, match="records no row counts") as e:
        check_k(bad)
    assert e.value.field == "token_profiles"
    bad = _copy(stats)
    bad.rows["token_means"] = bad.rows["token_means"][:1]
    with pytest.raises(ConfigError, match="row counts") as e:
        check_k(bad)
    assert e.value.field == "token_means"
    with pytest.raises(ConfigError) as e:
        save_statistics(bad, "/nonexistent/never-written")
    assert e.value.field == "token_means"


def test_config_is_validated():
    with pytest.raises(ConfigError) as e:
        StatisticsConfig(k=0)
    assert e.value.field == "k"
    with pytest.raises(ConfigError) as e:
        StatisticsConfig(quantiles=(0.5, 0.1))
    assert e.value.field == "quantiles"
    with pytest.raises(ConfigError) as e:
        StatisticsConfig(max_cofiring_pairs=-1)
    assert e.value.field == "max_cofiring_pairs"
    assert StatisticsConfig.from_dict(StatisticsConfig(k=5).to_dict()) == StatisticsConfig(k=5)


def test_quantiles_keep_k_rows_on_either_side_and_rare_ids_are_pooled():
    x = torch.arange(20, dtype=torch.float64)
    for k in (1, 3, 5, 10):  # n = 20 >= 2k - 1
        q, lv = k_quantiles(x, torch.tensor([0.0, 0.5, 1.0]), k)
        for v in q:
            assert int((x <= v).sum()) >= k and int((x >= v).sum()) >= k
    q, lv = k_quantiles(x, torch.tensor([0.0, 1.0]), 11)  # fewer than 2k - 1: the median
    assert lv.tolist() == [0.5, 0.5] and q.tolist() == [9.5, 9.5]
    assert torch.equal(k_levels(torch.tensor([0.0, 1.0]), 5, 4), torch.tensor([0.5, 0.5]).double())
    ids, counts, other = pool_rare(torch.tensor([7, 8, 9]), torch.tensor([5, 3, 1]), 3)
    assert ids.tolist() == [7] and counts.tolist() == [5] and other == 4  # 1 row alone: pooled
    ids, counts, other = pool_rare(torch.tensor([7, 9]), torch.tensor([5, 4]), 3)
    assert ids.tolist() == [7, 9] and other == 0


def test_build_reads_only_the_public_split(tiny_track, toy_sae):
    class PublicOnly:
        spec, meta, path = tiny_track.spec, tiny_track.meta, None

        def acts(self, split):
            assert split == "public", split
            return tiny_track.acts(split)

        def tokens(self, split):
            assert split == "public", split
            return tiny_track.tokens(split)

    s = build_statistics(PublicOnly(), toy_sae, StatisticsConfig(k=K, max_cofiring_pairs=10))
    assert len(s["cofiring_pairs"]) <= 10


def test_round_trip_verifies_checksums_and_refuses_a_tampered_file(stats, tmp_path):
    d = tmp_path / "stats"
    manifest = save_statistics(stats, d)
    assert set(manifest["files"]) == {"statistics.safetensors", "statistics.json", "README.md"}
    assert manifest["k"] == K and verify_statistics(d)["sha256"] == manifest["sha256"]
    back = load_statistics(d)
    assert set(back.tensors) == set(stats.tensors)
    for n in stats.tensors:
        assert torch.equal(back[n], stats[n]) and torch.equal(back.rows[n], stats.rows[n])
    assert back.k == K and back.meta["track_id"] == stats.meta["track_id"]
    assert "k = 2" in (d / "README.md").read_text()
    for name in ("statistics.safetensors", "README.md", "statistics.json"):
        p = d / name
        good = p.read_bytes()
        p.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
        with pytest.raises(TrackIntegrityError, match="sha256 mismatch: expected") as e:
            load_statistics(d)
        assert e.value.file == str(p)
        p.write_bytes(good)
    (d / "extra.bin").write_bytes(b"x")
    with pytest.raises(TrackIntegrityError, match="not in the manifest"):
        load_statistics(d)
    (d / "extra.bin").unlink()
    (d / "README.md").unlink()
    with pytest.raises(TrackIntegrityError, match="missing") as e:
        load_statistics(d)
    assert e.value.file == str(d / "README.md")
    (d / "manifest.json").unlink()
    with pytest.raises(TrackIntegrityError, match="without a manifest"):
        load_statistics(d)


def test_no_artifact_row_lies_within_tau_of_a_real_row(tiny_track, toy_sae):
    """Every attack of challenge.statistics.attack (each turns the artifact into candidate
    rows) at the k measured on this track: no candidate equals or lies within the copy check's
    tau of a real row. k = 1 publishes copies; k = 2 per-token variances pin the rows of
    two-row tokens down to one sign per coordinate (the bound)."""
    from challenge.neighbours import nearest

    real = torch.cat([tiny_track.acts(s) for s in sorted(tiny_track.splits)])
    tau = calibrate(real).tau
    stats = build_statistics(tiny_track, toy_sae, StatisticsConfig(k=TINY_SAFE_K))
    cands = candidates(stats, toy_sae)
    assert {"token_means", "global_eigen", "token_eigen", "profile_decode"} <= set(cands)
    assert set(cands) <= set(ATTACKS)
    for name, r in measure(cands, real, tau).items():
        assert r["within_tau"] == 0 and r["min"] > 1.0, (name, r)
    for name in ("mean", "token_means"):  # the artifact's own d_model-shaped arrays
        assert float(nearest(stats[name].reshape(-1, stats.d_model), real)[0].min()) > tau
    s1 = build_statistics(tiny_track, toy_sae, StatisticsConfig(k=1))
    r1 = measure({"token_means": candidates(s1)["token_means"]}, real, tau)["token_means"]
    assert r1["within_tau"] > 0 and r1["min"] == 0.0 and r1["singles"] > 0
    s2 = build_statistics(tiny_track, toy_sae, StatisticsConfig(k=2))
    assert (s2["token_counts"] == 2).any()
    bound = sign_oracle(s2, tiny_track.acts("public"), tiny_track.tokens("public")[:, -1])
    assert measure({"b": bound}, real, tau)["b"]["min"] < 1e-3
