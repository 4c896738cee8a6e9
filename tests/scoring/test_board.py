"""Leaderboard rendering, and the HTML page in a real headless Chromium."""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from challenge.errors import ChallengeError
from challenge.scoring.board import COLUMNS, load_entries, render, render_html, render_markdown

BOARD = Path(__file__).resolve().parents[2] / "leaderboard" / "smollm2-135m-l1"

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


SYNTHETIC = {"category": "synthetic", "verified_by": "in_repo", "access": ["public"]}
STATISTICS = {"category": "statistics", "verified_by": "in_repo", "access": ["statistics", "sae"]}


def _report(name, score, ks, access=STATISTICS, **changes):
    """A real-format record: the committed ``gaussian`` record, renamed and re-scored, with the
    organiser's ``access`` record (``None``: none, as a bare ``score`` report has)."""
    rep = json.loads((BOARD / "gaussian.json").read_text())
    rep["submission"] |= {"name": name, "generator": f"{name} generator"}
    rep["submission"].pop("access", None)  # the committed record's own
    if access is not None:
        rep["submission"]["access"] = access
    ci = [max(0.0, score - 0.05), min(1.0, score + 0.05)]
    rep["headline"] |= {"score": score, "ci": ci, "auc": 1 - score / 2, "mean_ks": ks}
    for k, v in changes.items():
        rep[k] = v if not isinstance(v, dict) else rep[k] | v
    return rep


def _write(d: Path, doc: dict, name: str | None = None) -> None:
    """The record's JSON and its ``.npz`` of bootstrap scores (paired draws: one shared noise
    series of sd 0.02 plus the entry's own of sd 0.005, so entries 0.1 apart are resolved)."""
    name = name or doc["submission"]["name"]
    (d / f"{name}.json").write_text(json.dumps(doc))
    g = np.random.default_rng(len(name))
    shared = np.random.default_rng(0).normal(0, 0.02, 200)
    boot = doc["headline"]["score"] + shared + g.normal(0, 0.005, 200)
    np.savez(d / f"{name}.npz", **{"bootstrap/score": boot})


@pytest.fixture()
def board(tmp_path):
    from PIL import Image

    d = tmp_path / "board" / "trk"
    d.mkdir(parents=True)
    for name, gap, ks in (("alpha", 0.2, 0.3), ("beta", 0.9, 0.1), ("gamma", 0.05, 0.5)):
        _write(d, _report(name, gap, ks))
        Image.new("RGB", (120, 60), (30 * len(name), 120, 200)).save(d / f"{name}.png")
    render("trk", tmp_path / "board")
    return d


def test_sorted_by_score(board):
    rows = load_entries("trk", board.parent)
    assert [r["name"] for r in rows] == ["beta", "alpha", "gamma"]
    md = (board / "README.md").read_text()
    assert md.index("| 1 | beta |") < md.index("| 2 | alpha |")
    # the board says how densely its records were probed (the committed record's config)
    cfg = json.loads((BOARD / "gaussian.json").read_text())["config"]
    n = json.loads((BOARD / "gaussian.json").read_text())["headline"]["n_points"]
    k = cfg["contexts_per_row"]
    rows = f" ({n // k} rows x {k} contexts)" if k > 1 else ""
    assert f"Scored with {n} points{rows};" in md
    assert f"{cfg['probes']['n_directions']} directions x" in md


REFERENCE = {"category": "reference", "verified_by": "in_repo", "access": ["heldout"]}


def test_sections_come_from_the_access_record_not_from_uses(tmp_path):
    d = tmp_path / "trk"
    d.mkdir()
    docs = {
        "oracle": _report("oracle", 0.99, 0.05, REFERENCE),
        "claims": _report("claims", 0.95, 0.06, None),  # no access record: unverified
        "mid": _report("mid", 0.3, 0.3, SYNTHETIC),
        "top": _report("top", 0.5, 0.2, SYNTHETIC),
        "s_lo": _report("s_lo", 0.2, 0.3),
        "s_hi": _report("s_hi", 0.45, 0.2),
        "lone": _report(
            "lone", 0.97, 0.05, {"category": "unverified", "verified_by": "none", "access": []}
        ),
    }
    docs["claims"]["submission"]["uses"] = ["none"]  # free text: decides nothing
    for doc in docs.values():
        _write(d, doc)
    rows = load_entries("trk", tmp_path)
    got = [(r["section"], r["name"], r["rank"]) for r in rows]
    assert got == [
        ("statistics", "s_hi", 1), ("statistics", "s_lo", 2),
        ("synthetic", "top", None), ("synthetic", "mid", None), ("reference", "oracle", None),
        ("unverified", "lone", None), ("unverified", "claims", None),
    ]  # fmt: skip
    by = {r["name"]: r for r in rows}
    assert by["mid"]["tie"].startswith("below: -0.200")  # the rows tier keeps its paired diff
    md = render_markdown("trk", rows)
    st, syn, ref, unv = (
        md.index(f"## {t}") for t in ("Statistics tier", "Rows tier", "Reference", "Unverified")
    )
    assert st < md.index("| 1 | s_hi |") < md.index("| 2 | s_lo |") < syn
    assert syn < md.index("| - | top |") < md.index("| - | mid |") < ref
    assert ref < md.index("| - | oracle |") < unv < md.index("| - | lone |")
    page = render_html("trk", rows)
    assert page.index('id="board-statistics"') < page.index("row-s_hi") < page.index("row-s_lo")
    assert page.index('id="board-synthetic"') < page.index("row-top") < page.index("row-mid")
    assert page.index('id="board-reference"') < page.index("row-oracle")


def test_submitted_strings_are_escaped_and_never_a_url(tmp_path):
    d = tmp_path / "trk"
    d.mkdir()
    doc = _report("evil", 0.4, 0.2)
    doc["submission"]["generator"] = (
        "x\n| 1 | fake winner | 9.999 |\n`code` <script>alert(1)</script> [a](javascript:alert(1))"
    )
    doc["submission"]["uses"] = ["a|b"]
    _write(d, doc)
    rows = load_entries("trk", tmp_path)
    md = render_markdown("trk", rows)
    table = [ln for ln in md.splitlines() if ln.startswith("| ") and "evil" in ln]
    assert len(table) == 1 and "fake winner" in table[0]  # one row: the newline did not split it
    assert table[0].count(" | ") == len(COLUMNS) - 1  # the injected pipes are escaped: \|
    assert "\\`code\\`" in table[0] and "\\<script\\>" in table[0] and "\\[a\\]" in table[0]
    page = render_html("trk", rows)
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'href="./evil.png"' in page and "javascript:" not in page.split("<td")[0]
    hrefs = [h.split('"')[0] for h in page.split('href="')[1:]]
    assert hrefs == ["./evil.png"]


@pytest.mark.parametrize(
    "name, match",
    [
        ("javascript:alert(1)", "not a valid name"),
        ("../x", "not a valid name"),
        ("other", "equal to the file"),
    ],
)
def test_records_with_bad_names_are_refused(tmp_path, name, match):
    d = tmp_path / "trk"
    d.mkdir()
    doc = _report("alpha", 0.2, 0.3)
    doc["submission"]["name"] = name
    _write(d, doc, "alpha")
    with pytest.raises(ChallengeError, match=rf"alpha\.json, field submission.name: .*{match}"):
        load_entries("trk", tmp_path)


def test_linked_record_is_refused(tmp_path):
    d = tmp_path / "trk"
    d.mkdir()
    (tmp_path / "elsewhere.json").write_text(json.dumps(_report("alpha", 0.2, 0.3)))
    (d / "alpha.json").symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(ChallengeError, match=r"alpha\.json: not a regular file"):
        load_entries("trk", tmp_path)


def test_committed_board_renders_byte_identical(tmp_path):
    d = tmp_path / BOARD.name
    d.mkdir()
    for p in [*BOARD.glob("*.json"), *BOARD.glob("*.npz")]:
        shutil.copy(p, d / p.name)
    rows = render(BOARD.name, tmp_path)
    assert len(rows) == len(list(BOARD.glob("*.json")))
    for f in ("README.md", "index.html"):  # (scores.png: matplotlib output, not compared)
        assert (d / f).read_bytes() == (BOARD / f).read_bytes(), f


def test_the_board_is_scored_on_the_published_track_and_its_saes():
    """Every committed record names the track version, manifest and data that the repository's
    registry publishes, and each SAE entry an SAE published with it (so any machine fetches the
    bits the board was scored on: ``plateau download registry``)."""
    import hashlib

    from challenge.store import verify_published_saes, verify_track
    from challenge.track import TRACKS, load_track, published_copy

    spec = TRACKS[BOARD.name]
    pub = published_copy(spec)
    assert pub is not None, f"registry/ does not publish {spec.track_id} v{spec.version}"
    verify_track(pub)
    saes = verify_published_saes(pub)
    manifest = hashlib.sha256((pub / "manifest.json").read_bytes()).hexdigest()
    data = load_track(pub).data_sha256
    records = sorted(BOARD.glob("*.json"))
    assert len(records) >= 10
    for p in records:
        rep = json.loads(p.read_text())
        assert rep["track"]["version"] == spec.version, p.name
        assert rep["track"]["manifest_sha256"] == manifest, p.name
        assert rep["track"]["data_sha256"] == data, p.name
        if "sae" in rep["submission"]:
            sae = rep["submission"]["sae"]
            assert saes.get(sae["name"]) == sae["sha256"], p.name


@pytest.mark.parametrize(
    "changes, what",
    [
        ({"config": {"n_points": 40}}, "config"),  # a --quick run
        ({"track": {"manifest_sha256": "0" * 64}}, "manifest"),  # other track data
        ({"provenance": {"suite_version": "9.9.9"}}, "scorer"),  # another scorer version
    ],
)
def test_records_of_other_settings_are_not_ranked_together(tmp_path, changes, what):
    d = tmp_path / "trk"
    d.mkdir()
    full = _report("alpha", 0.2, 0.3)
    _write(d, full)
    _write(d, _report("zeta", 0.5, 0.2, **changes))
    with pytest.raises(ChallengeError, match=r"zeta\.json") as e:
        load_entries("trk", tmp_path)
    msg = str(e.value)
    if what == "config":
        assert '"n_points": 40' in msg and '"n_points": null' in msg
    elif what == "scorer":
        assert "suite 9.9.9" in msg and "suite 0.1.0" in msg
    else:
        assert "0" * 64 in msg and full["track"]["manifest_sha256"] in msg
    # the same holds whatever the file order: the odd one out is named
    _write(d, _report("beta", 0.9, 0.1))
    (d / "alpha.json").unlink()
    _write(d, _report("omega", 0.2, 0.3))
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


def test_the_difference_to_the_entry_above_is_printed_with_its_own_interval(board):
    """``vs entry above``: this entry minus the one above, inside its paired interval (the
    interval was once printed for the opposite difference)."""
    import re

    rows = [r for r in load_entries("trk", board.parent) if r["tie"]]
    assert [r["name"] for r in rows] == ["alpha", "gamma"]
    for r in rows:
        m = re.fullmatch(r"(tied|below): ([+-][0-9.]+) \[([+-][0-9.]+), ([+-][0-9.]+)\]", r["tie"])
        assert m, r["tie"]
        d, lo, hi = (float(m.group(i)) for i in (2, 3, 4))
        assert lo <= d <= hi < 0 and m.group(1) == "below"  # 0.7 and 0.15 below, resolved


def test_plateau_curves_are_drawn_from_the_records_radius_features(board, tmp_path):
    """The board's curve panel (``plateaus.png``, linked from README and HTML) exists only when
    records carry the radius probe's features, and each curve is the share of points whose
    radius exceeds r: 1 below the smallest radius, 0 above the largest, never rising."""
    from challenge.scoring import load_report
    from challenge.scoring.board import RADIUS, _radii

    assert not (board / "plateaus.png").exists()  # bootstrap-only records: no curves
    assert "plateaus.png" not in (board / "README.md").read_text()
    d = tmp_path / BOARD.name
    d.mkdir()
    for name in ("gaussian", "heldout_real"):
        for ext in (".json", ".npz"):
            shutil.copy(BOARD / f"{name}{ext}", d / f"{name}{ext}")
    render(BOARD.name, tmp_path)
    assert (d / "plateaus.png").read_bytes()[:4] == b"\x89PNG"
    assert "![plateau radius curves](plateaus.png)" in (d / "README.md").read_text()
    assert '<img src="./plateaus.png"' in (d / "index.html").read_text()
    rep = load_report(d / "gaussian.json")
    sub, ref = _radii(rep)
    want = rep.data.submission[RADIUS].astype(np.float64)
    # exp then log in float64: a few ulp of the largest |log r|
    tol = 4 * np.finfo(np.float64).eps * max(1.0, np.abs(want).max())
    np.testing.assert_allclose(np.log(sub), want, rtol=0, atol=tol)
    grid = np.geomspace(sub.min() / 2, sub.max() * 2, 50)
    share = (sub[:, None] > grid).mean(0)
    assert share[0] == 1.0 and share[-1] == 0.0 and (np.diff(share) <= 0).all()
    # N(mu, Sigma) points have smaller plateaus than held-out real ones (docs/scoring.md)
    assert np.median(sub) < np.median(ref)


def test_a_board_without_an_oracle_record_says_it_has_no_null_band(board):
    """No ``heldout_real`` record: no band, no mark, and the README and page say so; the new
    columns are still there (the unclipped score from each record's AUC)."""
    rows = load_entries("trk", board.parent)
    assert rows.band is None and "no `heldout_real` record" in rows.band_reason
    for r in rows:
        assert r["real"] == "no band" and r["energy"] is None  # bootstrap-only records
        auc = json.loads((board / f"{r['name']}.json").read_text())["headline"]["auc"]
        assert r["unclipped"] == 2 * (1 - auc)
    md = (board / "README.md").read_text()
    assert "No real-vs-real null band: this board has no `heldout_real` record" in md
    assert "| unclipped 2(1-AUC) |" in md and "| vs null band |" in md
    assert "No real-vs-real null band" in (board / "index.html").read_text()


def test_the_null_band_marks_entries_and_is_printed_above_the_tables(tmp_path):
    """A copy of the quick board's oracle and two entries: the band is the committed board's
    (same record bytes, so nothing is drawn again), printed before the first table, and an entry
    is marked indistinguishable exactly when its unclipped score is at or above the band's lower
    end; the energy column says whether it exceeds the swaps' null."""
    from challenge.scoring.board import REAL_MARK

    quick = BOARD.parent / "quick" / "gemma3-270m-l1"
    if not (quick / "null_band.cache").exists():
        pytest.skip("the quick board's band is not rendered")
    d = tmp_path / "gemma3-270m-l1"
    d.mkdir()
    for name in ("heldout_real", "gaussian", "token_cluster"):
        for ext in (".json", ".npz"):
            shutil.copy(quick / f"{name}{ext}", d / f"{name}{ext}")
    for name in ("gaussian", "token_cluster"):  # ranked, so the second statistic's tau is printed
        doc = json.loads((d / f"{name}.json").read_text())
        doc["submission"]["access"] |= {"category": "statistics"}
        (d / f"{name}.json").write_text(json.dumps(doc))
    rows = render(d.name, tmp_path)
    band = rows.band
    assert band is not None and len(band.unclipped) == 40 and band.lo < 1 < band.hi
    by = {r["name"]: r for r in rows}
    for r in rows:
        assert (r["real"] == REAL_MARK) == (r["unclipped"] >= band.lo)
        assert r["energy_null"] == (r["energy"] > band.energy_hi)
    assert by["gaussian"]["real"] == "below band" and by["gaussian"]["energy_null"]
    assert by["heldout_real"]["real"] == REAL_MARK
    md = (d / "README.md").read_text()
    assert md.index("Real-vs-real null band: ") < md.index("## Statistics tier")
    assert f"{band.lo:.3f} to {band.hi:.3f}" in md and "40 label swaps" in md
    assert "Kendall's tau" in md
    page = (d / "index.html").read_text()
    assert page.index("Real-vs-real null band: ") < page.index('id="board-statistics"')
