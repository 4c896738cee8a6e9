"""generate, validate, score, submit, leaderboard and main on the tiny track."""

import json

import pytest

from challenge.cli.challenge import MainCommand
from challenge.scoring import ScoreConfig

TINY = "smollm2-135m-l1-tiny"
SMALL = (
    "--n-points", 10, "--n-directions", 2, "--bisect-steps", 3,
    "--p2-steps", 5, "--n-boot", 10, "--contexts-per-row", 1,
)  # fmt: skip


@pytest.fixture(scope="module")
def submission(smollm, tiny_track, tmp_path_factory):
    from baselines.generators import Gaussian
    from challenge.submission import generate

    return generate(Gaussian(), tiny_track, smollm, out_root=tmp_path_factory.mktemp("subs"))


def test_generate(plateau, tiny_track, tiny_track_dir, tmp_path, read_json):
    out = plateau(
        "generate", "isotropic", "--track", tiny_track_dir, "--seed", 3, "--out", tmp_path
    )
    folder = tmp_path / TINY / "isotropic"
    assert f"wrote {folder}" in out
    meta = read_json(folder / "submission.json")
    assert meta["name"] == "isotropic" and meta["seed"] == 3
    assert meta["n"] == tiny_track.required_n and (folder / "activations.safetensors").exists()


def test_unknown_generator_is_a_clear_error(plateau, tiny_track_dir, capsys):
    with pytest.raises(SystemExit) as e:
        plateau("generate", "nope", "--track", tiny_track_dir)
    assert e.value.code == 2 and "unknown generator 'nope'" in capsys.readouterr().err


def test_validate(plateau, submission, tiny_track, tiny_track_dir):
    out = plateau("validate", submission, "--track", tiny_track_dir)
    assert out.startswith(f"valid: {tiny_track.required_n} x 576; checks: ")


def test_score_writes_a_report_not_a_record(
    plateau, submission, tiny_track_dir, tmp_path, read_json
):
    out = plateau("score", submission, "--track", tiny_track_dir, *SMALL, "--out", tmp_path)
    rep = read_json(tmp_path / TINY / "gaussian.json")
    assert rep["schema"] == "plateau-score/2" and rep["submission"]["name"] == "gaussian"
    cfg = rep["config"]
    assert (cfg["n_points"], cfg["n_boot"], cfg["seed"]) == (10, 10, 0)
    assert (cfg["probes"]["n_directions"], cfg["probes"]["bisect_steps"]) == (2, 3)
    assert rep["headline"]["n_points"] == 10 and 0 <= rep["headline"]["score"] <= 1
    assert (tmp_path / TINY / "gaussian.png").exists()
    assert '"mean_ks"' in out and f"wrote {tmp_path / TINY / 'gaussian.json'}" in out
    assert not (tmp_path / TINY / "README.md").exists()


def test_submit_then_leaderboard(plateau, submission, tiny_track_dir, tmp_path, read_json):
    board = tmp_path / "board"
    plateau("submit", submission, "--track", tiny_track_dir, *SMALL, "--board", board)
    rep = read_json(board / TINY / "gaussian.json")
    assert rep["config"]["n_boot"] == 10
    assert "gaussian" in (board / TINY / "README.md").read_text()
    assert (board / TINY / "index.html").exists()
    for track in (TINY, tiny_track_dir):  # a registered id, or a track directory
        out = plateau("leaderboard", "--track", track, "--board", board)
        assert f"# Leaderboard: `{TINY}`" in out and "| - | gaussian |" in out
        assert out.index("## Unverified") < out.index("| - | gaussian |")  # activations only
    assert rep["submission"]["access"] == {
        "category": "unverified", "verified_by": "none", "access": []
    }  # fmt: skip


def test_rescore_remakes_older_records_from_their_features(
    plateau, submission, tiny_track_dir, tmp_path, read_json
):
    """``plateau rescore``: a record of scorer 2.0 (one cross-fitting split) is re-made under the
    current scorer from its stored features, giving the headline a fresh submit gives; a current
    record is left as it is."""
    board = tmp_path / "board"
    plateau("submit", submission, "--track", tiny_track_dir, *SMALL, "--board", board)
    record = board / TINY / "gaussian.json"
    fresh = read_json(record)
    before = record.read_bytes()
    out = plateau("rescore", "--track", tiny_track_dir, "--board", board)
    assert record.read_bytes() == before and f"# Leaderboard: `{TINY}`" in out
    old = json.loads(before) | {"scorer_version": "2.0"}
    old["config"]["classifier"]["n_repeats"] = 1
    record.write_text(json.dumps(old))
    out = plateau("rescore", "--track", tiny_track_dir, "--board", board)
    new = read_json(record)
    assert "gaussian: " in out and "(scorer 2.1)" in out
    assert new["scorer_version"] == "2.1" and new["config"] == fresh["config"]
    assert new["headline"] == fresh["headline"] and new["features"] == fresh["features"]
    assert new["provenance"]["rescored"]["from_scorer"] == "2.0"


def test_an_existing_name_is_refused_unless_replace(
    plateau, submission, tiny_track_dir, tmp_path, capsys
):
    board = tmp_path / "board"
    record = board / TINY / "gaussian.json"
    plateau("submit", submission, "--track", tiny_track_dir, *SMALL, "--board", board)
    before = record.read_bytes()
    with pytest.raises(SystemExit) as e:
        plateau("submit", submission, "--track", tiny_track_dir, *SMALL, "--board", board)
    err = capsys.readouterr().err
    assert e.value.code == 2 and "'gaussian' is already on the board" in err and "--replace" in err
    assert record.read_bytes() == before
    plateau(
        "submit", submission, "--track", tiny_track_dir, *SMALL, "--seed", 1, "--board", board,
        "--replace",
    )  # fmt: skip
    assert json.loads(record.read_text())["config"]["seed"] == 1


def test_main_job(plateau, printed, tiny_track_dir, tmp_path, read_json):
    board, subs = tmp_path / "board", tmp_path / "subs"
    out = plateau(
        "main", "--track", tiny_track_dir, "--only", "isotropic", "heldout_real", *SMALL,
        "--board", board, "--submissions", subs,
    )  # fmt: skip
    for name in ("isotropic", "heldout_real"):
        assert (subs / TINY / name / "submission.json").exists()
        assert read_json(board / TINY / f"{name}.json")["config"]["n_points"] == 10
        assert f'"{name}"' in out
    assert (board / TINY / "index.html").exists() and f"wrote {board / TINY / 'index.html'}" in out
    rows = (board / TINY / "README.md").read_text()
    # the rows tier is listed without ranks (moved rows can enter it); the oracle: reference
    assert "| - | isotropic |" in rows and "| - | heldout_real |" in rows
    assert rows.index("## Rows tier") < rows.index("isotropic") < rows.index("## Reference")
    assert rows.index("## Reference") < rows.index("heldout_real")
    oracle = read_json(board / TINY / "heldout_real.json")
    assert oracle["submission"]["access"]["category"] == "reference"
    assert "copy check skipped: reference line, not ranked" in oracle["validation"]["checks"]

    # the board's records were made on other track data (another machine rebuilt the track:
    # fp32 noise changes its manifest): main re-scores every entry, then renders once
    for name in ("isotropic", "heldout_real"):
        p = board / TINY / f"{name}.json"
        doc = read_json(p)
        doc["track"]["manifest_sha256"] = "0" * 64
        p.write_text(json.dumps(doc))
    out = plateau(
        "main", "--track", tiny_track_dir, "--only", "isotropic", "heldout_real", *SMALL,
        "--board", board, "--submissions", subs,
    )  # fmt: skip
    headline, _ = printed(out)
    assert [e["refused"] for e in headline.values()] == [None, None]
    for name in ("isotropic", "heldout_real"):
        assert read_json(board / TINY / f"{name}.json")["track"]["manifest_sha256"] != "0" * 64


def test_main_quick_is_the_quick_score_config():
    job = MainCommand(quick=True, only=("gaussian",)).job()
    assert job.score == ScoreConfig().quick() and job.only == ("gaussian",)
    assert (job.score.n_points, job.score.probes.n_directions) == (40, 2)
    assert type(job).__name__ == "MainConfig"
    assert MainCommand().job().score == ScoreConfig()  # every row, the full probes
