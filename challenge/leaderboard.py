"""The leaderboard: score reports stored as files, rendered to markdown and a static HTML page.

```
leaderboard/<track_id>/<submission>.json   score report (schema-validated)
leaderboard/<track_id>/<submission>.png    its feature distributions vs held-out real
leaderboard/<track_id>/<submission>.npz    its arrays (per-point features, bootstrap scores)
leaderboard/<track_id>/README.md           the table, ranked by paired bootstrap (ties share a rank)
leaderboard/<track_id>/scores.png          every entry's score and 95 % interval
leaderboard/<track_id>/index.html          sortable table (no external assets), each entry's plot
```
"""

from __future__ import annotations

import html
import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np

from challenge.errors import ChallengeError
from challenge.ranking import rank
from challenge.scorer import SCHEMA_ID, ScoreReport

ROOT = Path("leaderboard")
SCORE_TEXT = (
    "Score = clip(2 (1 - AUC), 0, 1) of a cross-fitted classifier telling the entry's plateau "
    "probes (radius around each point, sharpness toward its nearest real neighbour) from those "
    "of held-out real activations in the same contexts: 1 = indistinguishable, 0 = always told "
    "apart. Intervals: 95 % bootstrap over contexts; ranks from paired bootstrap differences, "
    "and an entry not resolved from the one above shares its rank (tied)."
)
COLUMNS = [
    ("rank", "#"),
    ("name", "submission"),
    ("score", "score"),
    ("ci", "95 % interval"),
    ("tie", "vs entry above"),
    ("mean_ks", "mean KS"),
    ("uses", "uses"),
    ("generator", "generator"),
]


def _identity(rep) -> tuple[str, str]:
    """What must be equal for two records to be ranked together: scorer config and track data."""
    cfg = json.dumps({"scorer": rep.scorer_version, **asdict(rep.config)}, sort_keys=True)
    return cfg, rep.track.manifest_sha256


def load_records(track_id: str, root: Path = ROOT) -> dict[Path, ScoreReport]:
    """The ``plateau-score/2`` reports of a board (other JSON files are ignored), by file.

    Raises ``ChallengeError`` naming the file when a record is malformed, or when a record was
    scored with another scorer config or on other track data (manifest sha256) than the
    majority of the board: such numbers are not comparable (e.g. a ``--quick`` run)."""
    reps: dict[Path, ScoreReport] = {}
    for p in sorted((root / track_id).glob("*.json")):
        doc = json.loads(p.read_text())
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA_ID:
            continue
        try:
            reps[p] = ScoreReport.from_json(doc)
        except (KeyError, TypeError, ChallengeError) as e:
            raise ChallengeError(f"not a valid score report: {e}", file=str(p)) from None
    if not reps:
        return reps
    ids = {p: _identity(r) for p, r in reps.items()}
    majority, count = Counter(ids.values()).most_common(1)[0]
    for p, key in ids.items():
        if key != majority:
            raise ChallengeError(
                f"scored with config {key[0]} on track manifest {key[1]}, but {count} of the "
                f"{len(ids)} records use config {majority[0]} on manifest {majority[1]}; "
                "records with other settings are not ranked together (score it again with the "
                "board's settings, or keep it on another board)",
                file=str(p),
            )
    return reps


def _bootstrap(path: Path) -> np.ndarray:
    npz = path.with_suffix(".npz")
    try:
        with np.load(npz) as z:
            return z["bootstrap/score"]
    except (OSError, KeyError, ValueError) as e:
        raise ChallengeError(f"bootstrap scores unreadable: {e}", file=str(npz)) from None


def load_entries(track_id: str, root: Path = ROOT) -> list[dict]:
    """The board's rows, ranked by paired bootstrap differences (``challenge.ranking``): an
    entry not resolved from the one above shares its rank; see :func:`load_records`."""
    recs = load_records(track_id, root)
    by_name = {rep.submission["name"]: (p, rep) for p, rep in recs.items()}
    ranked = rank({n: (rep.headline.score, _bootstrap(p)) for n, (p, rep) in by_name.items()})
    rows = []
    for r in ranked:
        rep = by_name[r.name][1]
        sub, h = rep.submission, rep.headline
        tie = (
            ""
            if r.diff_ci is None
            else f"{'tied' if r.tied_with_above else 'below'}: "
            f"-{r.diff_to_above:.3f} [{r.diff_ci[0]:.3f}, {r.diff_ci[1]:.3f}]"
        )
        rows.append(
            {
                "rank": r.rank,
                "name": sub["name"],
                "score": h.score,
                "ci": f"[{h.ci[0]:.3f}, {h.ci[1]:.3f}]",
                "ci_low": h.ci[0],
                "ci_high": h.ci[1],
                "tie": tie,
                "mean_ks": h.mean_ks,
                "uses": ", ".join(sub["uses"]),
                "generator": sub["generator"],
                "plot": f"{sub['name']}.png",
                "features": {k: v.ks for k, v in rep.features.items()},
            }
        )
    return rows


def plot_scores(track_id: str, rows: list[dict], path: Path) -> Path:
    """Every entry's score with its 95 % interval, in rank order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from challenge.plots import save_figure

    fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.2))
    y = np.arange(len(rows))[::-1]
    s = np.array([r["score"] for r in rows])
    lo, hi = np.array([r["ci_low"] for r in rows]), np.array([r["ci_high"] for r in rows])
    ax.errorbar(s, y, xerr=[s - lo, hi - s], fmt="o", color="#1f77b4", capsize=3)
    ax.set_yticks(y, [f"{r['rank']}. {r['name']}" for r in rows], fontsize=8)
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("score = clip(2 (1 - AUC), 0, 1), 95 % bootstrap interval")
    ax.set_title(f"{track_id}: plateau score", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, path, dpi=90)


def _fmt(v) -> str:
    return "n/a" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def render_markdown(track_id: str, rows: list[dict]) -> str:
    head = "| " + " | ".join(c[1] for c in COLUMNS) + " |\n|" + "---|" * len(COLUMNS) + "\n"
    body = "".join("| " + " | ".join(_fmt(r[c[0]]) for c in COLUMNS) + " |\n" for r in rows)
    return (
        f"# Leaderboard: `{track_id}`\n\n"
        f"{SCORE_TEXT} Each entry's report is `<name>.json`, its plot `<name>.png`; "
        "design, probes and measured resolution in `docs/scoring.md`.\n\n"
        "![scores](scores.png)\n\n" + head + body
    )


def render_html(track_id: str, rows: list[dict]) -> str:
    e = html.escape
    ths = "".join(
        f'<th data-key="{k}" onclick="sortBy(\'{k}\')">{e(label)}</th>' for k, label in COLUMNS
    )
    trs = []
    for r in rows:
        cells = "".join(
            f'<td data-key="{k}" data-v="{e(str(r[k]) if r[k] is not None else "")}">{e(_fmt(r[k]))}</td>'
            for k, _ in COLUMNS
        )
        trs.append(
            f'<tr id="row-{e(r["name"])}">{cells}<td><a href="{e(r["plot"])}"><img src="{e(r["plot"])}" alt="{e(r["name"])} plot" width="360"></a></td></tr>'
        )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Plateau challenge leaderboard: {e(track_id)}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:24px;color:#222}} table{{border-collapse:collapse}}
th,td{{border:1px solid #ccc;padding:4px 8px;font-size:14px;vertical-align:top}}
th{{background:#eef;cursor:pointer;user-select:none}} th.sorted{{background:#ccf}}
</style></head><body>
<h1>Plateau challenge leaderboard: <code>{e(track_id)}</code></h1>
<p>{e(SCORE_TEXT)} Click a column to sort.</p>
<p><img src="scores.png" alt="scores with 95 % intervals"></p>
<table id="board"><thead><tr>{ths}<th>plot</th></tr></thead>
<tbody>{"".join(trs)}</tbody></table>
<script>
let dir = {{}};
function sortBy(key) {{
  const body = document.querySelector('#board tbody');
  const rows = Array.from(body.rows);
  dir[key] = -(dir[key] || -1);
  rows.sort((a, b) => {{
    const x = a.querySelector(`td[data-key="${{key}}"]`).dataset.v, y = b.querySelector(`td[data-key="${{key}}"]`).dataset.v;
    const nx = parseFloat(x), ny = parseFloat(y);
    const c = (isNaN(nx) || isNaN(ny)) ? x.localeCompare(y) : nx - ny;
    return dir[key] * c;
  }});
  rows.forEach(r => body.appendChild(r));
  document.querySelectorAll('th').forEach(th => th.classList.toggle('sorted', th.dataset.key === key));
  document.body.dataset.sortedBy = key;
}}
const m = location.hash.match(/sort=(\\w+)/);
if (m) sortBy(m[1]);
</script></body></html>
"""


def render(track_id: str, root: Path = ROOT) -> list[dict]:
    rows = load_entries(track_id, root)
    d = root / track_id
    d.mkdir(parents=True, exist_ok=True)
    if rows:
        plot_scores(track_id, rows, d / "scores.png")
    (d / "README.md").write_text(render_markdown(track_id, rows))
    (d / "index.html").write_text(render_html(track_id, rows))
    return rows
