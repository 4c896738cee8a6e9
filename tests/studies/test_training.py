"""Issue 33 part 1: the training study on tiny settings (p = 7 / 11 modular addition, a few
steps; a tiny byte LM)."""

import json

import numpy as np
import pytest
import torch

from challenge.errors import ConfigError
from challenge.studies.training import measure as ME
from challenge.studies.training import study
from challenge.studies.training import train as T
from challenge.studies.training.config import TrainingConfig, checkpoint_steps

TINY = dict(n_points=4, n_directions=2, n_paths=4, n_steps=7, lc_directions=3, n_null=19, n_boot=20)


def tiny(model="modadd", **kw):
    base = dict(model=model, p=7, frac=0.5, steps=3, eval_every=1, batch=4, n_ctx=8, prompt_len=6)
    return TrainingConfig(**(base | TINY | kw))


def test_schedule_and_config():
    assert checkpoint_steps(100, 4) == [0, 1, 2, 3, 6, 10, 18, 32, 56, 100]
    assert checkpoint_steps(5, 8)[:1] == [0] and checkpoint_steps(5, 8)[-1] == 5
    # a longer run only adds checkpoints
    assert set(checkpoint_steps(50, 8)) - {50} <= set(checkpoint_steps(500, 8))
    with pytest.raises(ConfigError, match="frac"):
        TrainingConfig(frac=1.0)
    with pytest.raises(ConfigError, match="model"):
        TrainingConfig(model="cnn")


@pytest.mark.parametrize("model", ["modadd", "lm"])
def test_step0_checkpoint_is_the_initialisation(tmp_path, model):
    cfg = tiny(model, steps=2)
    T.train(cfg, tmp_path, log=lambda s: None)
    init = T.new_model(cfg).state_dict()
    saved = torch.load(T.ckpt_path(tmp_path, 0), weights_only=True)
    assert saved.keys() == init.keys()
    assert all(torch.equal(saved[k], init[k]) for k in init)
    # and training moved the weights
    last = torch.load(T.ckpt_path(tmp_path, 2), weights_only=True)
    assert not torch.equal(last["embed.W_E"], init["embed.W_E"])


def test_fast_forward_equals_the_hooked_model():
    cfg = tiny(p=11)
    model = T.new_model(cfg)
    toks = T.Task(cfg).test[0]
    with torch.no_grad():
        fast = T.modadd_logits(dict(model.named_parameters()), toks)
        ref = model(toks)[:, -1]
    assert torch.allclose(fast, ref, atol=1e-5)
    # the frozen halves of the split layer are zero: the MLP input is Nanda's resid_mid
    p = dict(model.named_parameters())
    assert not p["blocks.0.mlp.W_in"].any() and not p["blocks.1.attn.W_O"].any()
    _, cache = model.run_with_cache(toks[:2])
    assert torch.equal(cache["blocks.1.hook_resid_pre"], cache["blocks.0.hook_resid_post"])


def test_a_few_steps_reduce_the_loss(tmp_path):
    info = T.train(tiny(steps=20, lr=3e-3), tmp_path, log=lambda s: None)
    h = info["history"]
    assert h[0]["step"] == 0 and h[-1]["step"] == 20
    assert h[-1]["train_loss"] < h[0]["train_loss"] - 0.5


@pytest.mark.parametrize("model", ["modadd", "lm"])
def test_resume_gives_the_uninterrupted_state(tmp_path, model):
    T.train(tiny(model, steps=5), tmp_path / "a", log=lambda s: None)
    T.train(tiny(model, steps=3), tmp_path / "b", log=lambda s: None)
    info = T.train(tiny(model, steps=5), tmp_path / "b", log=lambda s: None)  # resumes at 3
    a = torch.load(T.ckpt_path(tmp_path / "a", 5), weights_only=True)
    b = torch.load(T.ckpt_path(tmp_path / "b", 5), weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [e["step"] for e in info["history"]] == [0, 1, 2, 3, 4, 5]


def test_measure_writes_finite_fields(tmp_path):
    cfg = tiny(p=11, steps=2)
    T.train(cfg, tmp_path, log=lambda s: None)
    doc, arrays = ME.measure(cfg, T.load_checkpoint(cfg, tmp_path, 2), 2, ME.prompts(cfg))
    for feat in ("radius.mean_log", "p2.sharpness_kl", "p2.sharpness_l2", "local_complexity"):
        d = doc[feat]  # P2 sharpness is NaN where the path's end KL is 0 (suite definition)
        assert d["n"] == 4 or (feat.startswith("p2") and d["n"] >= 1)
        assert all(np.isfinite(d[k]) for k in ("real", "gaussian", "diff", "lo", "hi"))
        assert d["lo"] <= d["diff"] <= d["hi"]
    for kind in ("real", "gaussian"):
        b = doc["boundaries"][kind]["coincidence"]
        assert b["n_paths"] + b["n_without_flips"] == 4
        assert arrays[f"{kind}_flips_total"].shape == (4, 6)
        assert (arrays[f"{kind}_lc"] >= 0).all() and (arrays[f"{kind}_lc"] <= 512).all()
    # local complexity of a zero-radius polytope is zero
    eng = ME.checkpoint_env(cfg, T.load_checkpoint(cfg, tmp_path, 2), 2, ME.prompts(cfg))[2]
    toks = ME.prompts(cfg)["heldout"][:3]
    pts = ME.write_point_acts(eng, toks)
    assert (ME.local_complexity(eng, toks, pts, 0.0, 3, 0) == 0).all()
    assert (ME.local_complexity(eng, toks, pts, 1e3, 3, 0) > 0).all()


def test_run_writes_and_resumes(tmp_path):
    cfg = tiny(p=11, steps=3)
    res = study.run(cfg, out=tmp_path, log=lambda s: None)
    assert res.path == tmp_path / "training_modadd.json"
    doc = json.loads(res.path.read_text())
    assert doc["kind"] == "training"
    steps = [r.step for r in res.headline.rows]
    assert steps == checkpoint_steps(3, cfg.per_decade) and steps[0] == 0
    assert (tmp_path / "training_modadd.png").exists()
    assert np.load(tmp_path / "training_modadd.npz")["real_lc"].shape == (len(steps), 4)
    again = study.run(cfg, out=tmp_path, draw=False, log=lambda s: None)  # all cached
    assert again.headline.measure_seconds == 0.0
    assert again.headline.rows == res.headline.rows


def test_cli_registered():
    from challenge.cli import COMMANDS

    assert "study-training" in COMMANDS
