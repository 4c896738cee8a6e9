"""The main job on the second model family: a tiny Gemma 3 270M track, generators that need no
SAE (one of them writes new prompts through Gemma's tokenizer, ``<bos>`` first), scored and
ranked on its board."""

import json

import pytest
import torch
from safetensors.torch import load_file

from baselines.generators import GENERATORS
from challenge.pipeline import MainConfig, run_main
from challenge.probes import ProbeConfig
from challenge.scoring import ScoreConfig
from challenge.track import build_track, get_spec, load_track

ONLY = ("isotropic", "spliced_prompts", "heldout_real")


@pytest.mark.slow  # builds a tiny Gemma track and scores three entries: ~2-3 min on 2 cores
def test_main_job_on_a_tiny_gemma_track(gemma, tmp_path):
    track = load_track(build_track(get_spec("gemma3-270m-l1-tiny"), tmp_path / "track", lm=gemma))
    assert track.acts("public").shape[1] == gemma.model.cfg.d_model == 640
    cfg = MainConfig(
        only=ONLY,
        score=ScoreConfig(
            n_points=16,
            n_boot=20,
            contexts_per_row=1,
            probes=ProbeConfig(probes=("radius", "p2"), n_directions=2, bisect_steps=3, p2_steps=5),
        ),
        board=tmp_path / "board",
        submissions=tmp_path / "subs",
    )
    res = run_main(track, GENERATORS, cfg, lm=gemma)
    assert [res.headline[n].refused for n in ONLY] == [None, None, None]
    tid = track.spec.track_id
    for name in ONLY:
        acts = load_file(tmp_path / "subs" / tid / name / "activations.safetensors")
        x = next(iter(acts.values()))
        assert x.shape[1] == 640 and torch.isfinite(x).all()
        rec = json.loads((tmp_path / "board" / tid / f"{name}.json").read_text())
        assert rec["track"]["id"] == tid
        assert rec["provenance"]["embedded_as"] == "gemma3-270m"
        assert rec["provenance"]["write_hook"] == "blocks.1.hook_resid_pre"
        lo, hi = rec["headline"]["ci"]
        assert 0 <= lo <= rec["headline"]["score"] <= hi <= 1
    board = (tmp_path / "board" / tid / "README.md").read_text()
    assert "isotropic" in board and "spliced_prompts" in board and "heldout_real" in board
