"""plateau study-* on the tiny track at the sizes of tests/studies: each writes its result and
prints the headline it holds."""

import pytest

TINY = "smollm2-135m-l1-tiny"

STUDIES = {
    "output_states": ["--families", "city_weather", "--k-min", 2, "--k-max", 4, "--n-pairs", 4,
                      "--n-steps", 7],
    "layers": ["--n-pairs", 3, "--n-steps", 9, "--layers", 0, 29, "--n-stats", 64],
    "steering": ["--contrasts", "person_adjective:sentiment:negative:positive", "--n-bases", 4,
                 "--n-steps", 5],
    "boundaries": ["--n-paths", 3, "--n-steps", 7, "--align", 2],
    "sae_plateaus": ["--n-recon", 3, "--recon-steps", 5, "--n-paths", 2, "--path-steps", 7,
                     "--n-points", 2, "--n-dirs", 2, "--ray-steps", 6],
    "sae_collapse": ["--n-paths", 2, "--path-steps", 4, "--n-contexts", 3, "--n-near", 1,
                     "--n-far", 1, "--pair-steps", 3, "--n-boot", 20],
}  # fmt: skip


@pytest.mark.parametrize("name", STUDIES)
def test_study(name, plateau, printed, read_json, tiny_track_dir, tiny_sae_dir, tmp_path):
    args = STUDIES[name] + (["--sae", tiny_sae_dir] if name == "sae_plateaus" else [])
    if name == "sae_collapse":  # any SAELens directory fills both slots
        args += ["--sae", tiny_sae_dir, "--e2e-sae", tiny_sae_dir]
    out = plateau(
        f"study-{name.replace('_', '-')}", "--track", tiny_track_dir, *args, "--out", tmp_path
    )
    headline, path = printed(out)
    assert path == tmp_path / f"{name}.json"
    doc = read_json(path)
    assert doc["kind"] == name and doc["headline"] == headline and headline
    # the track is the result's TrackRef (where it was read), not a config field
    assert doc["track"]["id"] == TINY and doc["track"]["path"] == str(tiny_track_dir)
    assert not {"track", "out", "plot"} & set(doc["config"])
    assert (tmp_path / f"{name}.npz").exists() and (tmp_path / f"{name}.png").exists()
