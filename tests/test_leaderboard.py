"""Leaderboard rendering, and the HTML page in a real headless Chromium."""

import json
import shutil
import subprocess

import numpy as np
import pytest

from challenge.leaderboard import load_entries, render

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _report(name, gap, ks):
    return {
        "schema": "plateau-score/1",
        "headline": {"gap_closed": gap, "mean_ks": ks, "n_features": 2},
        "submission": {
            "name": name,
            "uses": ["public_activations"],
            "generator": f"{name} generator",
        },
        "features": {"origin.ms_l2": {"ks": ks}, "target.ms_kl": {"ks": ks}},
    }


@pytest.fixture()
def board(tmp_path):
    from PIL import Image

    d = tmp_path / "board" / "trk"
    d.mkdir(parents=True)
    for name, gap, ks in (("alpha", 0.2, 0.3), ("beta", 0.9, 0.1), ("gamma", -0.4, 0.5)):
        (d / f"{name}.json").write_text(json.dumps(_report(name, gap, ks)))
        Image.new("RGB", (120, 60), (30 * len(name), 120, 200)).save(d / f"{name}.png")
    render("trk", tmp_path / "board")
    return d


def test_sorted_by_gap_closed(board):
    rows = load_entries("trk", board.parent)
    assert [r["name"] for r in rows] == ["beta", "alpha", "gamma"]
    md = (board / "README.md").read_text()
    assert md.index("| 1 | beta |") < md.index("| 2 | alpha |")


@pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (scripts/setup.sh installs Debian's chromium)"
)
def test_html_renders_and_sorts_in_headless_chromium(board, tmp_path):
    from PIL import Image

    url = (board / "index.html").resolve().as_uri()
    shot = tmp_path / "shot.png"

    def run(*a):
        return subprocess.run(
            [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *a],
            capture_output=True,
            text=True,
            timeout=120,
        )

    run(f"--screenshot={shot}", "--window-size=1200,900", url)
    img = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert img.shape == (900, 1200) and img.std() > 5  # a page was drawn, not a blank canvas
    dom = run("--dump-dom", url + "#sort=name").stdout
    assert 'data-sorted-by="name"' in dom
    assert dom.index("row-alpha") < dom.index("row-beta") < dom.index("row-gamma")
    dom = run("--dump-dom", url).stdout
    assert dom.index("row-beta") < dom.index("row-alpha")
