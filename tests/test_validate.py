"""Every bad submission is refused with one line naming the file and field; nothing is recorded."""

import json

import pytest
import torch
from safetensors.torch import save_file

from baselines.generators import Gaussian
from challenge.errors import SubmissionError
from challenge.submission import ACTS_FILE, META_FILE, generate, read_submission, write_submission
from challenge.validate import required_n, validate_submission


@pytest.fixture(scope="module")
def good(smollm, tiny_track, tmp_path_factory):
    return generate(
        Gaussian(), tiny_track, smollm, seed=0, out_root=tmp_path_factory.mktemp("subs")
    )


def _variant(good, tmp_path, acts=None, **meta_changes):
    meta, a = read_submission(good)
    meta.update(meta_changes)
    for k, v in list(meta.items()):
        if v is None:
            del meta[k]
    folder = write_submission(tmp_path / "bad", meta, a)
    if acts is not None:  # written raw: write_submission would normalise dtype and shape
        save_file({"activations": acts.contiguous()}, str(folder / ACTS_FILE))
    return folder


def test_good_submission_passes(good, tiny_track):
    rep = validate_submission(good, tiny_track)
    assert rep.n == required_n(tiny_track) and rep.d_model == 576
    assert "no memorisation" in rep.checks


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda a: a[:, :100].contiguous(), "d_model is 100"),
        (lambda a: a[:10].clone(), "N is 10"),
        (lambda a: a.double(), "dtype is torch.float64"),
        (lambda a: a.flatten(), r"shape \("),
        (
            lambda a: a.index_put_((torch.tensor([3]),), torch.full((576,), float("nan"))),
            "NaN or inf",
        ),
        (lambda a: a * 100, "norms outside the real band"),
        (lambda a: torch.cat([a[:-1], a[:1]]), "1 duplicate rows"),
    ],
)
def test_bad_activations_are_refused(good, tiny_track, tmp_path, change, match):
    _, a = read_submission(good)
    bad = _variant(good, tmp_path, acts=change(a.clone()))
    with pytest.raises(SubmissionError, match=match) as e:
        validate_submission(bad, tiny_track)
    assert ACTS_FILE in str(e.value)


def test_memorised_public_activations_are_refused(good, tiny_track, tmp_path):
    pub = tiny_track.acts("public")
    n = required_n(tiny_track)
    bad = _variant(good, tmp_path, acts=pub[:n].clone() + 1e-3 * torch.randn(n, 576))
    with pytest.raises(SubmissionError, match="memorisation"):
        validate_submission(bad, tiny_track)


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"track_version": "9.9.9"}, "track_version"),
        ({"track_id": "other"}, "track_id"),
        ({"seed": "zero"}, "seed"),
        ({"authors": None}, "authors"),
        ({"uses": ["telepathy"]}, "uses"),
    ],
)
def test_bad_metadata_is_refused(good, tiny_track, tmp_path, changes, field):
    bad = _variant(good, tmp_path, **changes)
    with pytest.raises(SubmissionError, match=f"field {field}") as e:
        validate_submission(bad, tiny_track)
    assert META_FILE in str(e.value)


def test_not_safetensors_and_missing_files(good, tiny_track, tmp_path):
    bad = _variant(good, tmp_path)
    (bad / ACTS_FILE).write_bytes(b"\x80\x04pickle, not safetensors")
    with pytest.raises(SubmissionError, match="not a safetensors file"):
        validate_submission(bad, tiny_track)
    save_file({"acts": torch.zeros(2, 2)}, str(bad / ACTS_FILE))
    with pytest.raises(SubmissionError, match="no tensor named 'activations'"):
        validate_submission(bad, tiny_track)
    (bad / META_FILE).write_text("{not json")
    with pytest.raises(SubmissionError, match="not valid JSON"):
        validate_submission(bad, tiny_track)
    (bad / META_FILE).unlink()
    with pytest.raises(SubmissionError, match="metadata file missing"):
        validate_submission(bad, tiny_track)


def test_invalid_submission_records_nothing(good, smollm, tiny_track, tmp_path):
    from challenge.scorer import ScoreConfig, score_submission

    _, a = read_submission(good)
    bad = _variant(good, tmp_path, acts=a * 100)
    board = tmp_path / "board"
    with pytest.raises(SubmissionError):
        score_submission(bad, tiny_track, smollm, ScoreConfig().quick(), out=board)
    assert not board.exists()
    assert json.loads((good / META_FILE).read_text())["n"] == required_n(tiny_track)
