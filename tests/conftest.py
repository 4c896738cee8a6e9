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
