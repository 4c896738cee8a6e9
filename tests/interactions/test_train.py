"""Tiny end-to-end run of the interactions training command on two layers."""

from __future__ import annotations

import json
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from challenge.errors import ConfigError  # noqa: E402
from challenge.interactions.train import InteractionsConfig, load_pairs, main  # noqa: E402


def _cfg(tmp_path) -> InteractionsConfig:
    return InteractionsConfig(
        layers=(2, 3),
        lambdas=(0.0, 0.5),
        n_latents=128,
        k=4,
        ctx=64,
        n_train_tokens=256,
        n_eval_tokens=126,
        batch_size=64,
        epochs=1,
        jac_eval_tokens=64,
        threads=1,
        out_dir=str(tmp_path / "run"),
        progress=False,
    )


def test_config_json_roundtrip(tmp_path):
    cfg = _cfg(tmp_path)
    assert InteractionsConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ConfigError, match="unknown fields"):
        InteractionsConfig.from_json('{"nope": 1}')


def test_tiny_run_writes_results(tmp_path):
    torch.set_num_threads(1)
    cfg = _cfg(tmp_path)
    res = main(cfg)
    out = tmp_path / "run" / "results.json"
    assert out.exists()
    disk = json.loads(out.read_text())
    assert disk["provenance"]["layers"] == [2, 3]
    assert disk["provenance"]["revision"] and disk["provenance"]["torch"]
    assert set(disk["per_lambda"]) == {"lam0", "lam0.5"}
    for ent in disk["per_lambda"].values():
        for row in ent["layers"].values():
            assert 0 <= row["fvu_in"] < 2 and 0 <= row["fvu_out"] < 2
            assert row["nnz@0.01"] <= cfg.k
        assert ent["ce_spliced_chain"] > 0
    assert disk["ce_clean"] == res["ce_clean"]
    from challenge.models import load_model

    pairs = load_pairs(tmp_path / "run", load_model("smollm2-135m", device="cpu").model, "lam0.5")
    assert sorted(pairs) == [2, 3] and pairs[2].sae_in.cfg.n_latents == 128


def test_bad_layers_refused(tmp_path):
    cfg = _cfg(tmp_path)
    cfg.layers = (99,)
    with pytest.raises(ConfigError, match="layers"):
        main(cfg)
