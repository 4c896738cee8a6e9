"""The installed ``plateau`` script and ``python -m challenge.cli``."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def _plateau() -> str:
    here = Path(sys.executable).parent / "plateau"
    found = str(here) if here.exists() else shutil.which("plateau")
    if found is None:
        pytest.fail("the plateau script is not installed (pip install -e .)")
    return found


@pytest.mark.parametrize("entry", ["script", "module"])
def test_plateau_help(entry):
    cmd = [_plateau()] if entry == "script" else [sys.executable, "-m", "challenge.cli"]
    done = subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "usage: plateau" in done.stdout and "study-sae-plateaus" in done.stdout
