"""Every bad submission is refused with one line naming the file and field; nothing is recorded."""

import json

import pytest
import torch
from safetensors.torch import save_file

from baselines.generators import Gaussian
from challenge.errors import SubmissionError
from challenge.scoring import validate_submission
from challenge.submission import ACTS_FILE, META_FILE, generate, read_submission, write_submission


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
    sub = validate_submission(good, tiny_track)
    rep = sub.report
    assert rep.n == tiny_track.required_n and rep.d_model == 576
    assert "copy check" in rep.checks and rep.name == "gaussian"


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
    n = tiny_track.required_n
    bad = _variant(good, tmp_path, acts=pub[:n].clone() + 1e-3 * torch.randn(n, 576))
    with pytest.raises(SubmissionError, match=f"copy check: {n} of {n} rows lie closer to a real"):
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
    from challenge.scoring import ScoreConfig, score_folder

    _, a = read_submission(good)
    bad = _variant(good, tmp_path, acts=a * 100)
    board = tmp_path / "board"
    with pytest.raises(SubmissionError):
        score_folder(bad, tiny_track, smollm, ScoreConfig().quick(), out=board)
    assert not board.exists()
    assert json.loads((good / META_FILE).read_text())["n"] == tiny_track.required_n


# ------------------------------------------------------------------ names, files and records
@pytest.mark.parametrize(
    "name",
    ["../../evil", "/tmp/abs", "a/b", "", "Heldout", "javascript:alert(1)", "x" * 65, "a\nb", 7],
)
def test_bad_names_are_refused(good, tiny_track, tmp_path, name):
    bad = _variant(good, tmp_path)
    meta = json.loads((bad / META_FILE).read_text())
    (bad / META_FILE).write_text(json.dumps(meta | {"name": name}))
    with pytest.raises(
        SubmissionError, match="field name: (must be str|.* is not a submission name)"
    ):
        validate_submission(bad, tiny_track)


def test_a_bad_name_is_never_written(good, tmp_path):
    meta, a = read_submission(good)
    with pytest.raises(SubmissionError, match="not a submission name"):
        write_submission(tmp_path / "x", meta | {"name": "../escape"}, a)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "raw, match",
    [
        (b"[" * 30_000 + b"]" * 30_000, "nested too deeply"),
        (b'{"seed": ' + b"9" * 5000 + b"}", "not valid JSON .*digits"),
        (b'{"name": "\xff\xfe"}', r"not UTF-8 \(byte 10\)"),
        (b'{"seed": NaN}', "NaN is not a JSON number"),
        (b"\x00" * 10, "not valid JSON"),
        (b" " * 70_000, "more than the 65536 allowed"),
    ],
)
def test_malformed_json_is_one_line(good, tiny_track, tmp_path, raw, match):
    bad = _variant(good, tmp_path)
    (bad / META_FILE).write_bytes(raw)
    with pytest.raises(SubmissionError, match=match) as e:
        validate_submission(bad, tiny_track)
    assert "\n" not in str(e.value) and META_FILE in str(e.value)


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"access": {"category": "synthetic"}}, r"unknown keys \['access'\]"),
        ({"generator": "x" * 2001}, "field generator: is 2001 characters"),
        ({"authors": ["ok", 3]}, "field authors: must be str"),
        ({"authors": []}, "field authors: needs 1 to"),
        ({"code": "a\x1b[2Jb"}, "field code: contains control"),
        ({"seed": -1}, "field seed: must be in"),
        ({"uses": [["none"]]}, "field uses: must be at most"),
    ],
)
def test_metadata_limits(good, tiny_track, tmp_path, changes, match):
    bad = _variant(good, tmp_path)
    meta = json.loads((bad / META_FILE).read_text())
    (bad / META_FILE).write_text(json.dumps(meta | changes))
    with pytest.raises(SubmissionError, match=match):
        validate_submission(bad, tiny_track)


def test_only_regular_files_inside_the_folder_are_read(good, tiny_track, tmp_path):
    import os
    import threading

    bad = _variant(good, tmp_path)
    outside = tmp_path / "outside.json"
    outside.write_text((bad / META_FILE).read_text())
    (bad / META_FILE).unlink()
    (bad / META_FILE).symlink_to(outside)
    with pytest.raises(SubmissionError, match="metadata file is a symbolic link"):
        validate_submission(bad, tiny_track)
    (bad / META_FILE).unlink()
    os.mkfifo(bad / META_FILE)  # a pipe nobody writes to: opening it for reading would block
    done = []
    t = threading.Thread(target=lambda: done.append(_refusal(bad, tiny_track)), daemon=True)
    t.start()
    t.join(timeout=20)
    assert done and "not a regular file" in done[0]
    (bad / META_FILE).unlink()
    (bad / META_FILE).write_text(outside.read_text())
    os.remove(bad / ACTS_FILE)
    os.mkfifo(bad / ACTS_FILE)
    with pytest.raises(SubmissionError, match="activations file is not a regular file"):
        validate_submission(bad, tiny_track)


def _refusal(folder, track) -> str:
    try:
        validate_submission(folder, track)
    except SubmissionError as e:
        return str(e)
    return "accepted"


def test_activation_file_size_and_extra_tensors(good, tiny_track, tmp_path):
    _, a = read_submission(good)
    bad = _variant(good, tmp_path)
    save_file({"activations": a, "extra": torch.zeros(8, 8)}, str(bad / ACTS_FILE))
    with pytest.raises(SubmissionError, match=r"only the 'activations' tensor .*\['extra'\]"):
        validate_submission(bad, tiny_track)
    save_file({"activations": a, "extra": torch.zeros(len(a), 2 * 576)}, str(bad / ACTS_FILE))
    with pytest.raises(SubmissionError, match="activations file is .* bytes, more than"):
        validate_submission(bad, tiny_track)
