"""Shared fixtures of the SAE tests: a small TopK SAE trained on the tiny track's public split."""

import pytest

from challenge.sae import SAEConfig, train_sae

CFG = SAEConfig(n_latents=512, k=16, steps=300, batch=128, lr=2e-3, positions="last")


@pytest.fixture(scope="session")
def trained(tiny_track):
    """(SAE, stats) of ``CFG`` on the tiny track's public split. Do not mutate: copy first."""
    return train_sae(tiny_track.acts("public"), CFG, progress=False)
