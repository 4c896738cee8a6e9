"""Every command answers ``--help`` and names every flag of its config."""

import inspect
import typing
from dataclasses import fields, is_dataclass

import pytest
import tyro

from challenge.cli import COMMANDS, main
from challenge.cli.protocols import P1Command, P2Command, P3Command


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


POSITIONAL = typing.get_args(tyro.conf.Positional[str])[1]


def config_flags(cls) -> set[str]:
    """A flag per field of a config dataclass (positional ones aside), nested configs' fields
    included."""
    hints = typing.get_type_hints(cls, include_extras=True)
    out = set()
    for f in fields(cls):
        t = hints[f.name]
        if POSITIONAL in typing.get_args(t)[1:]:
            continue
        out |= config_flags(t) if is_dataclass(t) else {_flag(f.name)}
    return out


def command_flags(fn) -> set[str]:
    """The flags of a command: its keyword parameters and the fields of its config."""
    hints = typing.get_type_hints(fn)
    out = set()
    for p in inspect.signature(fn).parameters.values():
        if p.kind is p.POSITIONAL_ONLY:
            continue
        t = hints[p.name]
        out |= config_flags(t) if is_dataclass(t) else {_flag(p.name)}
    return out


def help_text(capsys, *args) -> str:
    with pytest.raises(SystemExit) as e:
        main([*args, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


def test_help_lists_every_command(capsys):
    out = help_text(capsys)
    for cmd in COMMANDS:
        assert cmd in out


@pytest.mark.parametrize("cmd", [c for c in COMMANDS if c != "protocol"])
def test_command_help_names_its_flags(cmd, capsys):
    out = help_text(capsys, cmd)
    missing = [f for f in command_flags(COMMANDS[cmd]) if f not in out]
    assert not missing, f"{cmd} --help lacks {missing}"


@pytest.mark.parametrize(
    "name, cls, key",
    [
        ("p1", P1Command, ("--scheme", "--units", "--n-curves", "--n-steps")),
        ("p2", P2Command, ("--n-pairs", "--n-steps")),
        ("p3", P3Command, ("--n-base", "--sae")),
    ],
)
def test_protocol_help_names_its_config(name, cls, key, capsys):
    out = help_text(capsys, "protocol", name)
    flags = config_flags(cls)
    assert set(key) <= flags and "--track" in flags and "--out" in flags
    missing = [f for f in flags if f not in out]
    assert not missing, f"protocol {name} --help lacks {missing}"
    assert "--n " not in out  # one meaning per flag: each protocol names its own size


def test_score_and_main_expose_the_whole_score_config(capsys):
    for cmd in ("score", "submit", "main"):
        out = help_text(capsys, cmd)
        for flag in ("--n-points", "--n-directions", "--probes", "--n-boot", "--n-folds", "--seed"):
            assert flag in out, (cmd, flag)
    out = help_text(capsys, "main")
    for flag in ("--only", "--quick", "--board", "--track"):
        assert flag in out
