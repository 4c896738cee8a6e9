"""Leaderboard rendering, and the HTML page in a real headless Chromium."""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from challenge.errors import ChallengeError
from challenge.leaderboard import load_entries, render

BOARD = Path(__file__).resolve().parents[1] / "leaderboard" / "smollm2-135m-l1"

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


def _report(name, gap, ks, **changes):
    """A real-format record: the committed ``gaussian`` record, renamed and re-scored."""
    rep = json.loads((BOARD / "gaussian.json").read_text())
    rep["submission"] |= {"name": name, "generator": f"{name} generator"}
    rep["headline"] |= {"gap_closed": gap, "mean_ks": ks}
    for k, v in changes.items():
        rep[k] = v if not isinstance(v, dict) else rep[k] | v
    return rep


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


def test_committed_board_renders_byte_identical(tmp_path):
    d = tmp_path / BOARD.name
    d.mkdir()
    for p in BOARD.glob("*.json"):
        shutil.copy(p, d / p.name)
    rows = render(BOARD.name, tmp_path)
    assert len(rows) == len(list(BOARD.glob("*.json")))
    for f in ("README.md", "index.html"):
        assert (d / f).read_bytes() == (BOARD / f).read_bytes(), f


@pytest.mark.parametrize(
    "changes, what",
    [
        ({"config": {"n_curves": 30, "n_steps": 20}}, "config"),  # a --quick run
        ({"track": {"manifest_sha256": "0" * 64}}, "manifest"),  # other track data
    ],
)
def test_records_of_other_settings_are_not_ranked_together(tmp_path, changes, what):
    d = tmp_path / "trk"
    d.mkdir()
    full = _report("alpha", 0.2, 0.3)
    (d / "alpha.json").write_text(json.dumps(full))
    (d / "zeta.json").write_text(json.dumps(_report("zeta", 0.5, 0.2, **changes)))
    with pytest.raises(ChallengeError, match=r"zeta\.json") as e:
        load_entries("trk", tmp_path)
    msg = str(e.value)
    if what == "config":
        assert '"n_curves": 30' in msg and '"n_curves": 100' in msg
    else:
        assert "0" * 64 in msg and full["track"]["manifest_sha256"] in msg
    # the same holds whatever the file order: the odd one out is named
    (d / "beta.json").write_text(json.dumps(_report("beta", 0.9, 0.1)))
    (d / "alpha.json").rename(d / "omega.json")
    with pytest.raises(ChallengeError, match=r"zeta\.json"):
        load_entries("trk", tmp_path)


def test_malformed_record_is_named(tmp_path):
    d = tmp_path / "trk"
    d.mkdir()
    rep = _report("alpha", 0.2, 0.3)
    del rep["config"]
    (d / "alpha.json").write_text(json.dumps(rep))
    (d / "notes.json").write_text(json.dumps({"not": "a report"}))  # other JSON: ignored
    with pytest.raises(ChallengeError, match=r"alpha\.json.*not a valid score report"):
        load_entries("trk", tmp_path)


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
