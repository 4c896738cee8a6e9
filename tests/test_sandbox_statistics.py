"""The statistics tier in the bubblewrap sandbox, on the tiny track: the work folder holds the
track's statistics artifact and its SAE and no split; a generator fitted with ``fit(stats, sae)``
runs and is recorded in the statistics section; one that reaches for a split fails with one line
and writes nothing; the tier is refused without its SAE, its artifact or a matching SAE."""

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from challenge.errors import ConfigError, SubmissionError, TrackIntegrityError
from challenge.sae import SAEConfig, train_sae
from challenge.sae.io import CFG_FILE, SPARSITY_FILE, WEIGHTS_FILE
from challenge.sandbox import SandboxLimits, prepare_work, run_sandboxed, verify_generator
from challenge.statistics import StatisticsConfig, build_statistics, save_statistics
from challenge.statistics.artifact import CARD_FILE, MANIFEST, META_FILE, TENSORS_FILE

needs_bwrap = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="bubblewrap not installed (scripts/setup.sh installs it)"
)
LIMITS = SandboxLimits(wall_seconds=300, cpu_seconds=300, memory_gb=6)
TOY_SAE = SAEConfig(n_latents=128, k=8, steps=40, batch=128, positions="last")
K = 10

STATS_GAUSS = '''
import torch


class StatsGaussian:
    """N(mean, cov) of the statistics artifact."""

    def fit(self, stats, sae):
        self.mu = stats["mean"].double()
        cov = stats["cov"].double() + 1e-4 * torch.eye(len(self.mu), dtype=torch.float64)
        self.chol = torch.linalg.cholesky(cov)
        self.description = (
            f"N(mean, cov) of a {type(stats).__name__} with k={stats.k}, "
            f"SAE with {sae.n_latents} latents"
        )

    def sample(self, n, *, seed):
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.mu.shape[0], generator=g, dtype=torch.float64)
        return (self.mu + z @ self.chol.T).float()
'''

CHEAT = """
import glob
import os

import torch


class Cheat:
    def fit(self, stats, sae):
        {body}

    def sample(self, n, *, seed):
        return torch.zeros(n, 576)
"""

GLOB_BODY = """found = sorted(
            os.path.relpath(p, "/sandbox/work")
            for p in glob.glob("/sandbox/work/**/*", recursive=True)
        )
        split = [
            p for p in found
            if p.endswith(".safetensors") and not p.startswith(("statistics/", "sae/"))
        ]
        if not split:
            raise FileNotFoundError("no split among " + " ".join(found))
        torch.load(os.path.join("/sandbox/work", split[0]))"""


@pytest.fixture(scope="module")
def toy_sae(tiny_track):
    return train_sae(tiny_track.acts("public"), TOY_SAE, progress=False)[0]


@pytest.fixture(scope="module")
def artifact(tiny_track, toy_sae, tmp_path_factory) -> Path:
    """The tiny track's statistics artifact (k = 10), built with the toy SAE."""
    d = tmp_path_factory.mktemp("stats") / "statistics"
    save_statistics(build_statistics(tiny_track, toy_sae, StatisticsConfig(k=K)), d)
    return d


def _file(tmp_path, text, name="gen.py") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and msg.isprintable() and len(msg) < 700, msg
    return msg


def test_the_work_folder_holds_the_artifact_and_the_sae_and_no_split(
    tiny_track, toy_sae, artifact, tmp_path
):
    work = tmp_path / "work"
    work.mkdir()
    prepare_work(
        tiny_track, _file(tmp_path, STATS_GAUSS), work, toy_sae, tier="statistics",
        stats_dir=artifact,
    )  # fmt: skip
    files = sorted(str(p.relative_to(work)) for p in work.rglob("*") if p.is_file())
    assert files == sorted(
        ["generator.py", "track.json"]
        + [f"statistics/{f}" for f in (CARD_FILE, MANIFEST, META_FILE, TENSORS_FILE)]
        + [f"sae/{f}" for f in (CFG_FILE, SPARSITY_FILE, WEIGHTS_FILE)]
    )
    for f in (CARD_FILE, MANIFEST, META_FILE, TENSORS_FILE):  # the verified artifact, unchanged
        assert (work / "statistics" / f).read_bytes() == (artifact / f).read_bytes()
    doc = json.loads((work / "track.json").read_text())
    assert doc["spec"]["track_id"] == tiny_track.spec.track_id
    assert doc["meta"]["d_model"] == tiny_track.d_model == 576
    # the rows tier, for comparison, gets the public split
    rows = tmp_path / "rows"
    rows.mkdir()
    prepare_work(tiny_track, _file(tmp_path, STATS_GAUSS), rows, toy_sae)
    assert (rows / "public.safetensors").is_file() and not (rows / "statistics").exists()


@needs_bwrap
def test_a_statistics_generator_fits_on_the_artifact_in_the_sandbox(
    tiny_track, toy_sae, artifact, tmp_path
):
    import torch

    from challenge.statistics import load_statistics

    run = run_sandboxed(
        _file(tmp_path, STATS_GAUSS), tiny_track, 200, seed=3, sae=toy_sae, limits=LIMITS,
        tier="statistics", stats_dir=artifact,
    )  # fmt: skip
    assert run.acts.dtype == torch.float32 and tuple(run.acts.shape) == (200, 576)
    assert run.description == f"N(mean, cov) of a TrackStatistics with k={K}, SAE with 128 latents"
    mu = load_statistics(artifact)["mean"].float()
    pub = tiny_track.acts("public").float()
    # fitted on the artifact's mean: the sample's mean is nearer it than a zero mean would be
    assert (run.acts.mean(0) - mu).norm() < 0.5 * mu.norm()
    assert (run.acts.mean(0) - pub.mean(0)).norm() < 0.5 * pub.mean(0).norm()


@needs_bwrap
@pytest.mark.parametrize(
    "body, match",
    [
        (
            "from challenge.sandbox import SandboxTrack; "
            "SandboxTrack('/sandbox/work').acts('public')",
            r"PermissionError: this sandbox holds no split",
        ),
        (
            "open('/sandbox/work/public.safetensors', 'rb').read(16)",
            r"FileNotFoundError: .*No such file or directory: '/sandbox/work/public\.safetensors'",
        ),
        (GLOB_BODY, r"FileNotFoundError: no split among "),
        ("stats.acts('public')", r"AttributeError: .*TrackStatistics.* has no attribute 'acts'"),
    ],
    ids=["sandbox-track", "open-public", "glob-work", "rows-api"],
)
def test_reaching_for_a_split_fails_and_writes_nothing(
    tiny_track, smollm, toy_sae, artifact, tmp_path, body, match
):
    board, subs = tmp_path / "board", tmp_path / "subs"
    gen = _file(tmp_path, CHEAT.replace("{body}", body))
    with pytest.raises(SubmissionError, match=r"gen\.py: generator failed in the sandbox: ") as e:
        verify_generator(
            gen, tiny_track, smollm, name="cheat", authors=["red team"], sae=toy_sae,
            limits=LIMITS, board=board, submissions=subs, tier="statistics", stats_dir=artifact,
        )  # fmt: skip
    msg = _one_line(e)
    assert re.search(match, msg), msg
    assert not board.exists() and not subs.exists()
    if body is GLOB_BODY:  # what the sandbox holds: the artifact, the SAE, no split
        found = msg.split("no split among ", 1)[1].split()
        assert [f for f in found if "/" not in f] == [
            "generator.py", "job.json", "sae", "statistics", "track.json"
        ]  # fmt: skip
        assert sorted(f for f in found if f.endswith(".safetensors")) == sorted(
            [f"sae/{SPARSITY_FILE}", f"sae/{WEIGHTS_FILE}", f"statistics/{TENSORS_FILE}"]
        )


def test_the_statistics_tier_is_refused_without_its_sae_or_artifact(
    tiny_track, smollm, toy_sae, artifact, tmp_path
):
    """Checked before any sandbox starts (bwrap not needed): one line each, nothing written."""
    gen = _file(tmp_path, STATS_GAUSS)
    with pytest.raises(ConfigError, match=r"^field sae: the statistics tier needs the SAE") as e:
        run_sandboxed(gen, tiny_track, 128, tier="statistics", stats_dir=artifact, limits=LIMITS)
    _one_line(e)
    board, subs = tmp_path / "board", tmp_path / "subs"
    with pytest.raises(ConfigError, match=r"^field sae: the statistics tier needs the SAE") as e:
        verify_generator(
            gen, tiny_track, smollm, name="nosae", authors=["t"], limits=LIMITS, board=board,
            submissions=subs, tier="statistics", stats_dir=artifact,
        )  # fmt: skip
    _one_line(e)
    assert not board.exists() and not subs.exists()
    with pytest.raises(ConfigError, match=r"^field statistics: .*needs the track's statistics"):
        run_sandboxed(gen, tiny_track, 128, sae=toy_sae, tier="statistics", limits=LIMITS)
    with pytest.raises(ConfigError, match=r"^field tier: a statistics artifact is for the stat"):
        run_sandboxed(gen, tiny_track, 128, sae=toy_sae, stats_dir=artifact, limits=LIMITS)
    with pytest.raises(ConfigError, match=r"^field tier: must be one of \['rows', 'statistics'\]"):
        run_sandboxed(gen, tiny_track, 128, sae=toy_sae, tier="stats", limits=LIMITS)


def test_another_sae_or_a_changed_artifact_is_refused(tiny_track, toy_sae, artifact, tmp_path):
    """The artifact is verified before it is copied, and must name the SAE handed over."""
    gen = _file(tmp_path, STATS_GAUSS)
    other = train_sae(
        tiny_track.acts("public"), SAEConfig(n_latents=64, k=8, steps=5, batch=128), progress=False
    )[0]
    with pytest.raises(TrackIntegrityError, match=r"field sae: .*n_latents 128; this SAE has 64"):
        run_sandboxed(
            gen, tiny_track, 128, sae=other, tier="statistics", stats_dir=artifact, limits=LIMITS
        )
    changed = tmp_path / "changed"
    shutil.copytree(artifact, changed)
    (changed / CARD_FILE).write_text((changed / CARD_FILE).read_text() + "\nedited\n")
    with pytest.raises(TrackIntegrityError, match=rf"{CARD_FILE}, field sha256: sha256 mismatch"):
        run_sandboxed(
            gen, tiny_track, 128, sae=toy_sae, tier="statistics", stats_dir=changed, limits=LIMITS
        )


def test_the_cli_config_checks_the_tier():
    from challenge.cli.challenge import VerifyCommand

    assert VerifyCommand().tier == "rows" and VerifyCommand(tier="statistics").tier == "statistics"
    with pytest.raises(ConfigError, match=r"field tier: must be one of"):
        VerifyCommand(tier="stats")
    with pytest.raises(ConfigError, match=r"field with_sae: the statistics tier needs the SAE"):
        VerifyCommand(tier="statistics", with_sae=False)


@needs_bwrap
@pytest.mark.slow  # sandbox start + scoring: ~1-3 min on a busy 2-core machine
def test_a_statistics_entry_is_verified_scored_and_recorded(
    tiny_track, smollm, toy_sae, artifact, tmp_path
):
    from challenge.scoring import ScoreConfig
    from challenge.scoring.board import load_entries

    board, subs = tmp_path / "board", tmp_path / "subs"
    gen = _file(tmp_path, STATS_GAUSS)
    rep = verify_generator(
        gen, tiny_track, smollm, name="stats_gauss", authors=["tester"], sae=toy_sae,
        limits=LIMITS, score_cfg=ScoreConfig().quick(), board=board, submissions=subs,
        tier="statistics", stats_dir=artifact,
    )  # fmt: skip
    tid = tiny_track.spec.track_id
    doc = json.loads((board / tid / "stats_gauss.json").read_text())
    access = doc["submission"]["access"]
    assert access["category"] == "statistics" and access["verified_by"] == "sandbox"
    assert access["access"] == ["statistics", "sae"] and len(access["code_sha256"]) == 64
    assert "copy check" in doc["validation"]["checks"]
    assert rep.submission["name"] == "stats_gauss"
    meta = json.loads((subs / tid / "stats_gauss" / "submission.json").read_text())
    assert meta["uses"] == ["statistics_artifact", "sae"]
    assert meta["code"].startswith("gen.py (sha256 ") and meta["code"].endswith("in the sandbox")
    assert meta["generator"].startswith("N(mean, cov) of a TrackStatistics")
    assert sorted(os.listdir(subs / tid)) == ["stats_gauss"]
    rows = load_entries(tid, board)  # the board's ranked statistics section
    assert [(r["name"], r["section"], r["verified_by"], r["rank"]) for r in rows] == [
        ("stats_gauss", "statistics", "sandbox", 1)
    ]
