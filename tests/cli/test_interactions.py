"""interactions (a tiny two-lambda run on one layer), then interactions-circuit on its
dictionaries."""

import pytest


@pytest.mark.slow  # two CLI runs with training: ~2 min on a 2-core machine
def test_interactions_then_circuit(plateau, printed, read_json, tiny_track_dir, tmp_path):
    run_dir = tmp_path / "run"
    out = plateau(
        "interactions", "--track", tiny_track_dir, "--layers", 3, "--lambdas", 0, 0.5,
        "--n-latents", 64, "--k", 4, "--ctx", 32, "--n-train-tokens", 64, "--n-eval-tokens", 31,
        "--batch-size", 32, "--epochs", 1, "--jac-eval-tokens", 16, "--no-eval-ce",
        "--no-progress", "--out-dir", run_dir,
    )  # fmt: skip
    headline, path = printed(out)
    assert path == run_dir / "results.json"
    doc = read_json(path)
    assert doc["kind"] == "interactions" and doc["headline"] == headline
    assert doc["config"]["layers"] == [3] and doc["config"]["lambdas"] == [0, 0.5]
    assert (run_dir / "dicts" / "lam0.5" / "L3").is_dir()

    out = plateau(
        "interactions-circuit", "--track", tiny_track_dir, "--run-dir", run_dir, "--lam", "lam0.5",
        "--n-out", 2, "--n-in", 1, "--n-up", 1, "--min-layer", 3, "--n-random", 2,
    )  # fmt: skip
    headline, path = printed(out)
    assert path == run_dir / "circuit_lam0.5.json"
    doc = read_json(path)
    assert doc["kind"] == "interactions_circuit" and doc["headline"] == headline
