"""Tiny end-to-end run of the interactions training command on two layers of a track's model."""

from __future__ import annotations

import json
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from challenge.errors import ConfigError  # noqa: E402
from challenge.interactions import (  # noqa: E402
    InteractionsConfig,
    InteractionsResult,
    load_pairs,
    run,
    text_windows,
)
from challenge.prompts import PromptSpec  # noqa: E402


def _cfg() -> InteractionsConfig:
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
    )


def test_config_json_roundtrip():
    cfg = _cfg()
    assert InteractionsConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ConfigError, match="unknown fields"):
        InteractionsConfig.from_json('{"nope": 1}')


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("lambdas", ()),
        ("lambdas", (0.1, -1.0)),
        ("layers", (-1,)),
        ("k", 0),
        ("k", 4096),
        ("ctx", 1),
        ("n_train_tokens", 10),
        ("epochs", 0.0),
        ("lr", -1.0),
        ("jac_tokens", -1),
        ("thresholds", ()),
        ("thresholds", (0.01, 0.0)),
        ("layers", (1.5,)),
        ("eval_ce", 1),
    ],
)
def test_config_refuses_bad_values(field, value):
    with pytest.raises(ConfigError) as e:
        InteractionsConfig(**{field: value})
    assert e.value.field == field


def test_text_windows_refuse_unbounded_stream_and_too_many(smollm):
    with pytest.raises(ConfigError, match="max_chars"):
        text_windows(PromptSpec(source="hf:some/dataset"), smollm.tokenizer, 4, 64, seed=0)
    with pytest.raises(ConfigError, match="windows of"):
        text_windows(PromptSpec(), smollm.tokenizer, 10**6, 64, seed=0)


def test_tiny_run_writes_results(tmp_path, tiny_track_dir, smollm):
    torch.set_num_threads(1)
    cfg = _cfg()
    res = run(cfg, str(tiny_track_dir), out_dir=tmp_path / "run", progress=False)
    out = tmp_path / "run" / "results.json"
    assert isinstance(res, InteractionsResult) and res.path == out and out.exists()
    disk = json.loads(out.read_text())
    assert disk["kind"] == "interactions" and disk["track"]["id"] == "smollm2-135m-l1-tiny"
    assert disk["provenance"]["layers"] == [2, 3]
    assert disk["provenance"]["revision"] and disk["provenance"]["torch"]
    per_lambda = disk["detail"]["per_lambda"]
    assert set(per_lambda) == {"lam0", "lam0.5"} == set(disk["headline"]["per_lambda"])
    for key, ent in per_lambda.items():
        for row in ent["layers"].values():
            assert 0 <= row["fvu_in"] < 2 and 0 <= row["fvu_out"] < 2
            assert row["nnz@0.01"] <= cfg.k
        assert ent["ce_spliced_chain"] > 0
        head = res.headline.per_lambda[key]
        assert head.fvu_chain == ent["mean"]["fvu_chain"]
        assert head.nnz == {
            "nnz@0.01": ent["mean"]["nnz@0.01"],
            "nnz@0.05": ent["mean"]["nnz@0.05"],
        }
        assert head.ce_spliced_out == ent["ce_spliced_out"]
    assert disk["detail"]["ce_clean"] == res.detail["ce_clean"] == res.headline.ce_clean
    assert disk["headline"]["ce_clean"] == res.headline.ce_clean

    pairs = load_pairs(tmp_path / "run", smollm.model, "lam0.5")
    assert sorted(pairs) == [2, 3] and pairs[2].sae_in.n_latents == 128
    assert pairs[2].sae_in.k == 4 and pairs[3].mlp.s_x == per_lambda["lam0.5"]["layers"]["3"]["s_x"]
    # firing frequencies were measured on the training tokens: at most k of n latents per token
    # (float32 log10 storage: relative error ~ ln(10) * 1e-6 per latent)
    assert float(pairs[2].sae_in.firing_freq.sum()) <= 4 * (1 + 1e-5)
    with pytest.raises(ConfigError, match="model"):
        load_pairs(tmp_path / "run", smollm.model, "lam0.5", model_name="gpt2")


def test_the_config_holds_no_input_or_output():
    """The track and the output folder are the run's arguments (the CLI's flags), not config."""
    fields = set(InteractionsConfig.__dataclass_fields__)
    assert not fields & {"track", "out_dir", "save_dicts", "progress"}


def test_bad_layers_refused(tmp_path, tiny_track_dir):
    cfg = _cfg()
    cfg.layers = (99,)
    with pytest.raises(ConfigError, match="layers"):
        run(cfg, str(tiny_track_dir), out_dir=tmp_path / "run", progress=False)
