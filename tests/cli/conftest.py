"""The command line on the session's model and tiny track: ``load_model`` hands the embedded
SmolLM2 already loaded by the session (other specs load as usual), and ``$PLATEAU_CACHE`` points
at a session folder, so no command writes to the user's cache."""

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def cli_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("plateau_cache")


@pytest.fixture(autouse=True)
def session_model(smollm, cli_cache, monkeypatch):
    """Every command of a test sees the session's model and cache."""
    from challenge import models, track

    real = models.load_model

    def load_model(spec="smollm2-135m", device=None):
        s = models.ModelSpec(name=spec) if isinstance(spec, str) else spec
        return smollm if s == smollm.spec else real(spec, device)

    monkeypatch.setattr(models, "load_model", load_model)
    monkeypatch.setattr(track, "load_model", load_model)
    monkeypatch.setenv("PLATEAU_CACHE", str(cli_cache))


@pytest.fixture
def plateau(capsys):
    """Run ``plateau <args>`` in process; returns its stdout."""
    from challenge.cli import main

    def run(*args) -> str:
        capsys.readouterr()
        main([str(a) for a in args])
        return capsys.readouterr().out

    return run


@pytest.fixture
def read_json():
    """A written JSON document, checked against its committed schema when one is registered."""
    from challenge.schemas import schema_name, validate

    def read(path: Path) -> dict:
        doc = json.loads(path.read_text())
        if (name := schema_name(doc)) is not None:
            validate(doc, name)
        return doc

    return read


@pytest.fixture
def printed():
    """What a command printed: ``(headline, path)`` from its JSON headline and ``wrote`` line."""

    def parse(out: str):
        head, _, where = out.rpartition("\nwrote ")
        return json.loads(head[head.index("{") :]), Path(where.strip())

    return parse


@pytest.fixture(scope="session")
def tiny_sae_dir(tiny_track, tmp_path_factory):
    """A small TopK SAE of the tiny track's public split, in SAELens' format."""
    from challenge.sae import SAEConfig, save_sae, train_sae

    cfg = SAEConfig(n_latents=128, k=8, steps=40, batch=64, positions="last")
    sae, _ = train_sae(tiny_track.acts("public"), cfg, progress=False)
    return save_sae(sae, tmp_path_factory.mktemp("sae") / "tiny")
