"""Declared generator access is enforced, and the board category follows from it."""

import pytest
import torch

from baselines.generators import GENERATORS
from challenge.access import AccessError, category_of, generator_access, guarded
from challenge.submission import generate


class _Peeker:
    """Declares the public split only, then reads what it names in ``fit``."""

    name, description, uses, access = "peeker", "reads too much", ["none"], ("public",)

    def __init__(self, touch):
        self.touch = touch

    def fit(self, track, lm):
        self.x = track.acts("public")
        if self.touch == "heldout":
            track.acts("heldout")
        elif self.touch == "splits":
            self.y = track.splits["heldout"]
        elif self.touch == "model":
            self.m = lm.model

    def sample(self, n, *, seed):
        return self.x[:n].clone()


@pytest.mark.parametrize(
    "touch, error, match",
    [
        ("heldout", AccessError, "read the 'heldout' split, which its declared access"),
        ("splits", KeyError, "heldout"),
        ("model", AccessError, r"used the model \(\.model\)"),
    ],
)
def test_undeclared_access_fails_and_writes_nothing(
    tiny_track, smollm, tmp_path, touch, error, match
):
    with pytest.raises(error, match=match):
        generate(_Peeker(touch), tiny_track, smollm, out_root=tmp_path)
    assert not any(tmp_path.rglob("submission.json"))


def test_declared_access_is_what_the_generator_gets(tiny_track, smollm):
    view, lm = guarded(tiny_track, smollm, GENERATORS["spliced_prompts"]())
    assert lm is smollm and set(view.splits) == {"public"} and view.path is None
    assert torch.equal(view.acts("public"), tiny_track.acts("public"))
    view, lm = guarded(tiny_track, smollm, GENERATORS["heldout_real"]())
    assert set(view.splits) == {"public", "heldout", "context"} and lm is not smollm


def test_categories_of_the_in_repo_generators():
    got = {name: generator_access(make())["category"] for name, make in GENERATORS.items()}
    reference = {"heldout_real", "spliced_prompts", "unigram_prompts", "sae_reconstruction"}
    reference |= {"e2e_sae_reconstruction"}  # SAE(x) of real rows through the e2e SAE
    reference |= {"noisy_copy"}  # public rows + 10 % noise: the copier's bar, shown not ranked
    assert {n for n, c in got.items() if c == "reference"} == reference
    assert {n for n, c in got.items() if c == "synthetic"} == set(GENERATORS) - reference
    assert category_of(["public", "sae"]) == "synthetic"
    assert category_of(["public", "model"]) == category_of(["heldout"]) == "reference"
