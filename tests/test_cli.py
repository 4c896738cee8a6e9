"""The command line: help texts, a protocol run on a track directory, clear errors."""

import json

import pytest

from challenge.cli import main


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("build", "publish", "download", "protocol"):
        assert cmd in out


def test_protocol_command_writes_json_and_plot(tiny_track_dir, tmp_path, capsys):
    main(["protocol", "p1", "--track", str(tiny_track_dir), "--n", "4", "--out", str(tmp_path)])
    doc = json.loads((tmp_path / "smollm2-135m-l1-tiny_p1_relative_scale_free.json").read_text())
    assert doc["provenance"]["write_hook"] == "blocks.1.hook_resid_pre"
    assert doc["provenance"]["model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert doc["resolved"]["units"] == "scale_free"
    png = tmp_path / "smollm2-135m-l1-tiny_p1_relative_scale_free.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_track_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["protocol", "p1", "--track", "nope"])
    assert e.value.code == 2
    assert "unknown track 'nope'" in capsys.readouterr().err
