"""The leaderboard: score reports stored as files, rendered to markdown and a static HTML page.

```
leaderboard/<track_id>/<submission>.json   score report (schema-validated)
leaderboard/<track_id>/<submission>.png    its feature distributions vs held-out real
leaderboard/<track_id>/README.md           the table, sorted by gap closed
leaderboard/<track_id>/index.html          sortable table (no external assets), each entry's plot
```
"""

from __future__ import annotations

import html
import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from challenge.errors import ChallengeError
from challenge.scorer import SCHEMA_ID, ScoreReport

ROOT = Path("leaderboard")
COLUMNS = [
    ("rank", "#"),
    ("name", "submission"),
    ("gap_closed", "gap closed"),
    ("mean_ks", "mean KS"),
    ("uses", "uses"),
    ("generator", "generator"),
]


def _identity(rep) -> tuple[str, str]:
    """What must be equal for two records to be ranked together: scorer config and track data."""
    return json.dumps(asdict(rep.config), sort_keys=True), rep.track.manifest_sha256


def load_records(track_id: str, root: Path = ROOT) -> dict[Path, ScoreReport]:
    """The ``plateau-score/1`` reports of a board (other JSON files are ignored), by file.

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


def load_entries(track_id: str, root: Path = ROOT) -> list[dict]:
    """The board's rows, ranked by gap closed (then mean KS); see :func:`load_records`."""
    rows = []
    for rep in load_records(track_id, root).values():
        sub = rep.submission
        rows.append(
            {
                "name": sub["name"],
                "gap_closed": rep.headline.gap_closed,
                "mean_ks": rep.headline.mean_ks,
                "uses": ", ".join(sub["uses"]),
                "generator": sub["generator"],
                "plot": f"{sub['name']}.png",
                "features": {k: v.ks for k, v in rep.features.items()},
            }
        )
    rows.sort(
        key=lambda r: (-(r["gap_closed"] if r["gap_closed"] is not None else -1e9), r["mean_ks"])
    )
    for i, r in enumerate(rows, 1):
        r["rank"] = i
    return rows


def _fmt(v) -> str:
    return "n/a" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def render_markdown(track_id: str, rows: list[dict]) -> str:
    head = "| " + " | ".join(c[1] for c in COLUMNS) + " |\n|" + "---|" * len(COLUMNS) + "\n"
    body = "".join("| " + " | ".join(_fmt(r[c[0]]) for c in COLUMNS) + " |\n" for r in rows)
    return (
        f"# Leaderboard: `{track_id}`\n\n"
        "Gap closed = (ceiling - KS) / (ceiling - floor), averaged over plateau features: 1 means as "
        "close to held-out real activations as a second real sample, 0 as far as N(mu, Sigma). "
        "See `challenge/scorer.py`; each entry's report is `<name>.json`, its plot `<name>.png`. "
        "Resolution (measured on smollm2-135m-l1): at the default 100 curves per probe, rescoring "
        "with scorer seeds 1 and 2 moved the top entries' gap closed by up to 0.37, so entries "
        "closer than that are not separated "
        "(docs/baselines.md, scorer resolution).\n\n" + head + body
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
<p>Gap closed = (ceiling &minus; KS) / (ceiling &minus; floor), averaged over plateau features. At 100 curves per probe (measured on smollm2-135m-l1), entries closer than ~0.4 are not separated by the scorer (docs/baselines.md). Click a column to sort.</p>
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
    (d / "README.md").write_text(render_markdown(track_id, rows))
    (d / "index.html").write_text(render_html(track_id, rows))
    return rows
