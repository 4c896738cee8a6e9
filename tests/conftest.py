"""Shared fixtures. Every test runs offline on the embedded model."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(scope="session")
def smollm():
    """The embedded SmolLM2-135M-Instruct as a raw-weight HookedTransformer on CPU."""
    from challenge.models import load_model

    torch.set_grad_enabled(True)
    return load_model("smollm2-135m", device="cpu")


@pytest.fixture(scope="session")
def gemma():
    """The embedded Gemma 3 270M as a raw-weight HookedTransformer on CPU, loaded with every
    network connection refused (the first run also assembles and dequantises it, ~2-5 min)."""
    import socket

    from challenge.models import load_model

    tried = []

    def refuse(*args):
        tried.append(args[-1])
        raise OSError("network access during an offline model load")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket, "getaddrinfo", lambda host, *a, **k: refuse(host))
        torch.set_grad_enabled(True)
        lm = load_model("gemma3-270m", device="cpu")
    assert not tried, f"loading the embedded Gemma tried the network: {tried}"
    return lm


@pytest.fixture(scope="session")
def tiny_track_dir(smollm, tmp_path_factory):
    """The small registered track built once per session (256 / 128 / 64 rows)."""
    from challenge.track import build_track, get_spec

    return build_track(
        get_spec("smollm2-135m-l1-tiny"), tmp_path_factory.mktemp("tracks") / "tiny", lm=smollm
    )


@pytest.fixture(scope="session")
def tiny_track(tiny_track_dir):
    from challenge.track import load_track

    return load_track(tiny_track_dir)
