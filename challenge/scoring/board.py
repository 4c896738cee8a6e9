"""The leaderboard: score reports stored as files, rendered to markdown and a static HTML page.

```
leaderboard/<track_id>/<submission>.json   score report (schema-validated)
leaderboard/<track_id>/<submission>.png    its feature distributions vs held-out real
leaderboard/<track_id>/<submission>.npz    its arrays (per-point features, bootstrap scores)
leaderboard/<track_id>/README.md           one table per section; statistics-tier entries ranked by
                                           paired bootstrap differences (ties share a rank)
leaderboard/<track_id>/scores.png          every entry's score and 95 % interval, by section
leaderboard/<track_id>/plateaus.png        per entry: the share of its points whose plateau
                                           radius exceeds r, against held-out real (radius probe)
leaderboard/<track_id>/index.html          the same, sortable (no external assets), each entry's plot
leaderboard/<track_id>/null_band.cache     the real-vs-real null band's draws (JSON; keyed by the
                                           heldout_real record's bytes: challenge.scoring.null)
```

Sections (``SECTIONS``), from the record's ``submission.access`` that only the organiser's tools
write (``challenge.access``; never the free-text ``uses``): **statistics**-tier entries (generators
that see the statistics artifact and the SAE, never a row) are ranked; **synthetic** entries (the
rows tier: generators that see public rows) are listed unranked, since moved rows can enter it;
**reference** lines (the model run on other prompts, real rows, SAE reconstructions of real
rows) are shown for comparison and never ranked; **unverified** entries (activations whose
making nobody checked, and records without an access record) are listed in their own section,
sorted but without a rank. Rendering is rows -> sections -> tables, so a column (e.g. an
interval) is one entry of ``COLUMNS``.

Beside the clipped score each row shows the unclipped ``2 (1 - AUC)``, whether it lies at or
above the lower end of the board's real-vs-real null band (the ``heldout_real`` record's two
real halves under label swaps: *indistinguishable from real*), and a second statistic (the
energy distance of the standardised features, with the null from the same swaps); the band,
how it was drawn and how the ranked order changes under the second statistic are printed
above the tables (:mod:`challenge.scoring.null`).

Every submitted string is escaped (``html.escape``; :func:`md_escape` for markdown), and no
submitted string becomes a URL: a plot link is ``<name>.png`` built from a name that matches
``challenge.submission.NAME_PATTERN`` and its record's file name.
"""

from __future__ import annotations

import html
import json
import os
import stat
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np

from challenge.errors import ChallengeError
from challenge.scoring.config import BOARD_ROOT, SCHEMA_ID
from challenge.scoring.null import (
    CACHE_NAME,
    ORACLE,
    NullBand,
    RankChange,
    board_band,
    rank_changes,
    record_unclipped,
    second_statistic,
)
from challenge.scoring.ranking import rank
from challenge.scoring.report import ScoreReport
from challenge.submission import NAME_PATTERN

ROOT = BOARD_ROOT
SCORE_TEXT = (
    "Score = clip(2 (1 - AUC), 0, 1), the AUC averaged over five cross-fittings of a classifier "
    "telling the entry's plateau probes (radius around each point, sharpness toward its nearest "
    "real neighbour, radius along that direction) from those "
    "of held-out real activations in the same contexts: 1 = indistinguishable, 0 = always told "
    "apart. Intervals: 95 % bootstrap over scored rows, each with its contexts and reference "
    "partner. Statistics-tier entries are ranked by paired "
    "bootstrap differences: an entry not resolved from the one above shares its rank (tied); "
    "the other sections show the same paired difference to the entry above, without a rank. "
    "Beside it: the unclipped 2 (1 - AUC) (above 1 when the classifier does worse than chance), "
    "the mark indistinguishable from real for an unclipped score at or above the lower end of "
    "the board's real-vs-real null band (below), and a second statistic that uses no "
    "classifier: the energy distance between the entry's and the reference's standardised "
    "features, said to be above null when it exceeds what a second real sample reaches."
)
COLUMNS = [
    ("rank", "#"),
    ("name", "submission"),
    ("score", "score"),
    ("unclipped", "unclipped 2(1-AUC)"),
    ("ci", "95 % interval"),
    ("tie", "vs entry above"),
    ("real", "vs null band"),
    ("energy", "second statistic: energy distance"),
    ("mean_ks", "mean KS"),
    ("memorisation", "memorisation test"),
    ("verified_by", "verified"),
    ("uses", "uses"),
    ("sae", "SAE (sha256)"),
    ("generator", "generator"),
]
SECTIONS = {
    "statistics": (
        "Statistics tier (ranked)",
        "Generators that never see a real row: they get the track's statistics artifact "
        "(aggregates of the public split, each over at least k public rows: moments, per-token "
        "moments, SAE latent statistics; `plateau build-statistics`) and the track's SAE, "
        "nothing else, and are run by the organiser: in the sandbox (`plateau verify-generator "
        "--tier statistics`) or as an in-repo generator whose declared access is enforced. The "
        "only ranked section: a row moved inside its plateau cannot enter it.",
    ),
    "synthetic": (
        "Rows tier (not ranked: moved public rows can enter it)",
        "Model-free generators that see the public split's rows and the track's SAE, run by the "
        "organiser: in the sandbox (`plateau verify-generator`) or as an in-repo generator "
        "whose declared access is enforced. Listed with their tie to the entry above but not "
        "ranked: a generator that moves public rows inside their plateaus passes the copy check "
        "and reaches the top of this tier (docs/integrity.md, the attack table).",
    ),
    "reference": (
        "Reference lines (model-derived or real; not ranked)",
        "What real or model-made activations score: held-out real rows, SAE reconstructions of "
        "real rows, the model run on other prompts. For comparison only.",
    ),
    "unverified": (
        "Unverified submissions (activations only; not ranked)",
        "Activations whose making was not checked (`plateau submit` of a folder): they may come "
        "from the model or from real rows, so they are listed apart, sorted but not ranked.",
    ),
}
RANKED = frozenset({"statistics"})
"""The sections whose entries get a rank."""
MAX_RECORD_BYTES = 8 << 20
COLOURS = {
    "statistics": "#9467bd",
    "synthetic": "#1f77b4",
    "reference": "#7f7f7f",
    "unverified": "#ff7f0e",
}
"""Each section's colour in the board's figures."""


def _identity(rep) -> tuple[str, str, str]:
    """What must be equal for two records to be ranked together: scorer (schema and suite
    version), scorer config and track data."""
    scorer = (
        f"{SCHEMA_ID} scorer {rep.scorer_version} suite {rep.provenance.get('suite_version', '?')}"
    )
    return scorer, json.dumps(asdict(rep.config), sort_keys=True), rep.track.manifest_sha256


def _read_record(p: Path) -> dict | None:
    """A record file's JSON (``None`` when it is not a score report); refuses links, other
    file kinds and oversized files, naming the file."""
    st = os.lstat(p)
    if not stat.S_ISREG(st.st_mode):
        raise ChallengeError("not a regular file (a link, pipe or device)", file=str(p))
    if st.st_size > MAX_RECORD_BYTES:
        raise ChallengeError(f"{st.st_size} bytes, more than {MAX_RECORD_BYTES}", file=str(p))
    try:
        doc = json.loads(p.read_bytes().decode("utf-8"))
    except (ValueError, RecursionError) as e:
        raise ChallengeError(f"not valid JSON ({str(e)[:80]})", file=str(p)) from None
    return doc if isinstance(doc, dict) and doc.get("schema") == SCHEMA_ID else None


def load_records(track_id: str, root: Path = ROOT) -> dict[Path, ScoreReport]:
    """The ``plateau-score/1`` reports of a board (other JSON files are ignored), by file.

    Raises ``ChallengeError`` naming the file when a record is malformed, when its submission
    name is not a valid name or not its file's name, or when it was scored by another scorer
    version, with another scorer config or on other track data (manifest sha256) than the
    majority of the board: such numbers are not comparable (e.g. a ``--quick`` run)."""
    reps: dict[Path, ScoreReport] = {}
    for p in sorted((root / track_id).glob("*.json")):
        doc = _read_record(p)
        if doc is None:
            continue
        try:
            reps[p] = ScoreReport.from_json(doc)
            reps[p].path = p
        except (KeyError, TypeError, ChallengeError) as e:
            raise ChallengeError(f"not a valid score report: {e}", file=str(p)) from None
        name = reps[p].submission.get("name") if isinstance(reps[p].submission, dict) else None
        if not isinstance(name, str) or NAME_PATTERN.fullmatch(name) is None or name != p.stem:
            raise ChallengeError(
                f"submission name {str(name)[:80]!r} is not a valid name equal to the file's",
                file=str(p),
                field="submission.name",
            )
    if not reps:
        return reps
    ids = {p: _identity(r) for p, r in reps.items()}
    majority, count = Counter(ids.values()).most_common(1)[0]
    for p, key in ids.items():
        if key != majority:
            raise ChallengeError(
                f"scored by {key[0]} with config {key[1]} on track manifest {key[2]}, but "
                f"{count} of the {len(ids)} records are {majority[0]} with config {majority[1]} "
                f"on manifest {majority[2]}; records with other settings are not ranked "
                "together (score it again with the board's settings, or keep it on another board)",
                file=str(p),
            )
    return reps


def category(rep: ScoreReport) -> tuple[str, str]:
    """A record's section and how it was verified, from its organiser-written ``access``
    record (records without one are ``unverified``)."""
    acc = rep.submission.get("access") if isinstance(rep.submission, dict) else None
    if isinstance(acc, dict) and acc.get("category") in SECTIONS:
        return acc["category"], str(acc.get("verified_by", "none"))
    return "unverified", "none"


def _text(v) -> str:
    """A submitted value as text (lists joined)."""
    if isinstance(v, list):
        return ", ".join(str(x) for x in v)
    return "" if v is None else str(v)


def _bootstrap(rep: ScoreReport) -> np.ndarray:
    """An entry's bootstrap scores (its record's arrays, ``ScoreArrays.bootstrap``)."""
    boot = rep.load_arrays().bootstrap
    if boot is None:
        raise ChallengeError("no bootstrap scores stored", file=str(rep.path))
    return boot


class BoardRows(list):
    """A board's rows (a list of dicts) with what belongs to the whole board: the real-vs-real
    null band (``None``, and ``band_reason`` why not) and the ranked entries' rank change
    under the second statistic (``None``: fewer than two with features)."""

    band: NullBand | None = None
    band_reason: str = ""
    ranks: RankChange | None = None


REAL_MARK = "indistinguishable from real"


def load_entries(track_id: str, root: Path = ROOT) -> list[dict]:
    """The board's rows, grouped by section (``SECTIONS`` order), each sorted by score; the
    entries of a ranked section (``RANKED``: the statistics tier) are ranked by paired bootstrap
    differences (``challenge.scoring.ranking``: an entry not resolved from the one above shares
    its rank); ``tie`` says by how much in every section; ``rank`` is ``None`` outside the
    ranked sections. See :func:`load_records`."""
    return entries_of(load_records(track_id, root))


def entries_of(recs: dict[Path, ScoreReport]) -> BoardRows:
    """The board's rows (:func:`load_entries`) of records already loaded, with the null band
    (:func:`challenge.scoring.null.board_band`: made once, then cached beside the board)."""
    rows = BoardRows()
    rows.band, rows.band_reason = board_band(recs) if recs else (None, "no records")
    band = rows.band
    for key in SECTIONS:
        members = {
            rep.submission["name"]: (p, rep) for p, rep in recs.items() if category(rep)[0] == key
        }
        ranked = rank({n: (rep.headline.score, _bootstrap(rep)) for n, (_, rep) in members.items()})
        for r in ranked:
            rep = members[r.name][1]
            sub, h = rep.submission, rep.headline
            tie = ""
            if r.diff_ci is not None:  # this entry - the one above, and that difference's interval
                tie = (
                    f"{'tied' if r.tied_with_above else 'below'}: {-r.diff_to_above:+.3f} "
                    f"[{-r.diff_ci[1]:+.3f}, {-r.diff_ci[0]:+.3f}]"
                )
            unclipped, energy = record_unclipped(rep), second_statistic(rep)
            rows.append(
                {
                    "rank": r.rank if key in RANKED else None,
                    "name": sub["name"],
                    "section": key,
                    "verified_by": category(rep)[1],
                    "score": h.score,
                    "ci": f"[{h.ci[0]:.3f}, {h.ci[1]:.3f}]",
                    "ci_low": h.ci[0],
                    "ci_high": h.ci[1],
                    "tie": tie,
                    "unclipped": unclipped,
                    "real": (REAL_MARK if band.indistinguishable(unclipped) else "below band")
                    if band is not None
                    else "no band",
                    "energy": energy,
                    "energy_null": None
                    if band is None or energy is None
                    else bool(energy > band.energy_hi),
                    "mean_ks": h.mean_ks,
                    "memorisation": memorisation_text(rep),
                    "uses": _text(sub.get("uses")),
                    "sae": _sae_text(sub.get("sae")),
                    "track_sha256": rep.track.manifest_sha256,
                    "scored": _scored_text(rep),
                    "generator": _text(sub.get("generator")),
                    "plot": f"{sub['name']}.png",
                    "features": {k: v.ks for k, v in rep.features.items()},
                }
            )
    rows.ranks = rank_changes(
        [(r["name"], r["rank"], r["score"], r["energy"]) for r in rows if r["rank"] is not None]
    )
    for r in rows:
        r["energy_rank"] = rows.ranks.positions.get(r["name"]) if rows.ranks else None
    return rows


def memorisation_text(rep: ScoreReport) -> str:
    """The memorisation test's verdict of a record (``validation.memorisation_*``): its p-value,
    and "rows favour the public split" where it is at most alpha; "not run" for records made
    before validation computed it."""
    v = rep.validation or {}
    if "memorisation_p" not in v:
        return "not run"
    verdict = "rows favour the public split" if v["memorisation_refused"] else "passed"
    return f"{verdict} (p {v['memorisation_p']:.2g}, D+ {v['memorisation_ks']:.3f})"


def null_text(rows: list[dict], code: str = "`", em: str = "*") -> str:
    """The paragraph above the tables: the board's null band, how it was drawn, the rule of the
    mark, the second statistic's null and the rank change under it."""
    band, ranks = getattr(rows, "band", None), getattr(rows, "ranks", None)
    mark = f"{em}{REAL_MARK}{em}"
    if band is None:
        reason = (getattr(rows, "band_reason", "") or "not computed").replace("`", code)
        text = f"No real-vs-real null band: {reason}; no entry is marked {mark}."
    else:
        split = band.split_band()
        c = band.contexts
        text = (
            f"Real-vs-real null band: {band.lo:.3f} to {band.hi:.3f} (median {band.median:.3f}; "
            f"{band.share_clipped:.0%} of the draws at the clip, score 1.0): the 2.5-97.5 % range "
            f"of the unclipped score 2 (1 - AUC) over {band.n_swaps} label swaps of the "
            f"{code}{ORACLE}{code} record, whose two halves are disjoint real samples in the "
            f"same slots. In each draw every one of its {band.rows} rows exchanges its "
            "reference-half and oracle-half features"
            + (f" ({'both' if c == 2 else f'all {c}'} context slots together)" if c > 1 else "")
            + " with probability 1/2, and the scorer's cross-fitted classifier is run again "
            f"with the board's config, folds and seed. An entry whose unclipped score is at or "
            f"above the band's lower end ({band.lo:.3f}) is marked {mark} (a score above the "
            "band is no evidence of a difference either). "
        )
        if split is not None:
            n_split = sum(len(v) for v in band.splits.values())
            text += (
                f"Check by split halves ({band.split_rows} rows of one random half of the rows "
                "against the other half's, within the reference half and within the oracle "
                f"half; {n_split} draws at half the rows, so about sqrt 2 wider): "
                f"{split[0]:.3f} to {split[1]:.3f}. "
            )
        else:
            text += "No split-half check: half the rows are too few for the classifier. "
        text += (
            "Second statistic: the energy distance between the entry's and the reference's "
            "per-point features, each standardised by the reference half's mean and sd (no "
            f"classifier, no seed); under the same swaps it reaches {band.energy_hi:.4f} at "
            "97.5 %, and an entry above that is marked above null. "
            f"Draws cached in {code}{CACHE_NAME}{code}."
        )
    if ranks is not None:
        moved = (
            ", ".join(
                f"{n} (rank {r}" + (f"-{last}" if last > r else "") + f" -> {pos})"
                for n, r, last, pos in ranks.moved
            )
            or "none"
        )
        shifted = ", ".join(f"{n} {a} -> {b}" for n, a, b in ranks.shifted) or "none"
        text += (
            f" Ordered by energy distance instead of score, the {ranks.n} ranked entries "
            f"keep Kendall's tau = {ranks.tau:.2f}; entries leaving their score-rank tie "
            f"group: {moved}; every position that changes (by score -> by energy distance, "
            f"shown as #k in the energy column): {shifted}."
        )
    return text


def _scored_text(rep: ScoreReport) -> str:
    """How densely an entry was probed: points, radius directions and bisection rounds, P2 steps
    and bootstrap draws (a quick board's records say so)."""
    c, pr = rep.config, rep.config.probes
    k = c.contexts_per_row
    points = f"{rep.headline.n_points} points" + (
        f" ({rep.headline.n_points // k} rows x {k} contexts)" if k > 1 else ""
    )
    return (
        f"{points}; probes {', '.join(pr.probes)} (radius: "
        f"{pr.n_directions} directions x {pr.bisect_steps} bisection rounds; P2: {pr.p2_steps} "
        f"steps); {c.n_boot} bootstrap draws"
    )


def _sae_text(sae) -> str:
    """``<SAE name> <first 12 hex of its checksum>`` from a submission's ``sae`` field, else
    ``-`` (no SAE, or a record made before submissions named theirs)."""
    if not isinstance(sae, dict) or "sha256" not in sae:
        return "-"
    return f"{_text(sae.get('name'))} {str(sae['sha256'])[:12]}"


def data_line(rows: list[dict], code: str = "`") -> str:
    """Which track data the board was scored on (every ranked record shares it)."""
    shas = sorted({r.get("track_sha256") for r in rows if r.get("track_sha256")})
    scored = sorted({r["scored"] for r in rows if r.get("scored")})
    return (
        "Track data: manifest sha256 "
        + ", ".join(f"{code}{s}{code}" for s in shas)
        + ". Scored with "
        + "; ".join(scored)
        + "."
    )


def plot_scores(track_id: str, rows: list[dict], path: Path) -> Path:
    """Every entry's score with its 95 % interval: statistics-tier entries (by rank), then the
    reference lines and unverified entries in their own colours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from challenge.plots import save_figure

    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(rows) + 1.4))
    y = np.arange(len(rows))[::-1]
    band = getattr(rows, "band", None)
    if band is not None:
        ax.axvspan(min(band.lo, 1.0), 1.02, color="#2ca02c", alpha=0.12,
                   label=f"real-vs-real null band (from {band.lo:.2f})")  # fmt: skip
    for key, colour in COLOURS.items():
        idx = [i for i, r in enumerate(rows) if r["section"] == key]
        if not idx:
            continue
        s = np.array([rows[i]["score"] for i in idx])
        lo = np.array([rows[i]["ci_low"] for i in idx])
        hi = np.array([rows[i]["ci_high"] for i in idx])
        err = [np.maximum(s - lo, 0), np.maximum(hi - s, 0)]  # a percentile interval may exclude s
        ax.errorbar(s, y[idx], xerr=err, fmt="o", color=colour, capsize=3, label=key)
    labels = [f"{r['rank']}. {r['name']}" if r["rank"] else r["name"] for r in rows]
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("score = clip(2 (1 - AUC), 0, 1), 95 % bootstrap interval")
    ax.set_title(f"{track_id}: plateau score", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return save_figure(fig, path, dpi=90)


RADIUS = "radius.mean_log"
"""The per-point feature :func:`plot_plateau_curves` draws: mean log plateau radius over the
random directions, in units of the track's median write norm (``challenge.probes``)."""


def _radii(rep: ScoreReport) -> tuple[np.ndarray, np.ndarray] | None:
    """Plateau radii (``exp`` of :data:`RADIUS`) of an entry's points and of the reference
    points, or ``None`` when its record was probed without the radius probe."""
    data = rep.load_arrays() if not rep.arrays else rep.data
    if RADIUS not in data.submission or RADIUS not in data.reference:
        return None
    sub, ref = data.submission[RADIUS], data.reference[RADIUS]
    return np.exp(sub[np.isfinite(sub)]), np.exp(ref[np.isfinite(ref)])


def plot_plateau_curves(
    track_id: str, rows: list[dict], reports: dict[str, ScoreReport], path: Path
) -> Path | None:
    """One panel per entry (board order): the share of points whose plateau radius exceeds
    ``r`` (the distance along a random direction at which KL first reaches the probe's
    threshold; geometric mean over the directions), for the entry and for the held-out real
    reference in the same slots. ``None`` (nothing written) when no record has radius
    features."""
    curves = {r["name"]: _radii(reports[r["name"]]) for r in rows}
    named = [r for r in rows if curves[r["name"]] is not None]
    if not named:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from challenge.plots import save_figure

    every = np.concatenate([np.concatenate(curves[r["name"]]) for r in named])
    grid = np.geomspace(every.min(), every.max(), 200)
    cols = min(6, len(named))
    nrows = -(-len(named) // cols)
    fig, axes = plt.subplots(
        nrows, cols, figsize=(2.3 * cols, 1.9 * nrows + 0.6), sharex=True, sharey=True,
        squeeze=False,
    )  # fmt: skip
    for ax, r in zip(axes.flat, named, strict=False):
        sub, ref = curves[r["name"]]
        ax.plot(grid, (ref[:, None] > grid).mean(0), "k--", lw=1.2, label="held-out real")
        ax.plot(grid, (sub[:, None] > grid).mean(0), color=COLOURS[r["section"]], lw=1.5,
                label="entry")  # fmt: skip
        ax.set_xscale("log")
        ax.set_title(f"{r['name']} ({r['score']:.2f})", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(named) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    fig.supxlabel("r (units of the median write norm)", fontsize=8)
    fig.supylabel("share of points with plateau radius > r", fontsize=8)
    fig.suptitle(
        f"{track_id}: plateau radius around each point, entry vs held-out real", fontsize=9
    )
    return save_figure(fig, path, dpi=90)


def sections(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows by section, in ``SECTIONS`` order (empty sections left out)."""
    out = {k: [r for r in rows if r["section"] == k] for k in SECTIONS}
    return {k: v for k, v in out.items() if v}


_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*[]<>|"})


def md_escape(s: str) -> str:
    """``s`` safe inside a markdown table cell: line breaks become spaces, and the characters
    that end a cell, open code, a link, an image, a tag or emphasis (``| ` [ ] < > *`` and the
    backslash) are backslash-escaped. (``_`` is left alone: names use it, and inside a cell it
    can at most italicise.)"""
    s = " ".join(str(s).splitlines())
    return s.translate(_MD_SPECIAL)


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _cell(r: dict, key: str) -> str:
    if key == "rank" and r["rank"] is None:
        return "-"
    if key == "energy" and r.get("energy") is not None:
        null = r.get("energy_null")
        tail = [] if null is None else ["above null" if null else "within null"]
        tail += [f"#{r['energy_rank']}"] if r.get("energy_rank") else []
        return f"{r['energy']:.4f}" + (f" ({', '.join(tail)})" if tail else "")
    return _fmt(r.get(key))


def render_markdown(track_id: str, rows: list[dict]) -> str:
    head = "| " + " | ".join(c[1] for c in COLUMNS) + " |\n|" + "---|" * len(COLUMNS) + "\n"
    parts = []
    for key, section_rows in sections(rows).items():
        title, intro = SECTIONS[key]
        body = "".join(
            "| " + " | ".join(md_escape(_cell(r, c[0])) for c in COLUMNS) + " |\n"
            for r in section_rows
        )
        parts.append(f"## {title}\n\n{intro}\n\n{head}{body}")
    return (
        f"# Leaderboard: `{md_escape(track_id)}`\n\n"
        f"{SCORE_TEXT} Each entry's report is `<name>.json`, its plot `<name>.png`; design, "
        "probes and measured resolution: docs/scoring.md; sections and what is verified: "
        f"docs/integrity.md. {data_line(rows)}\n\n"
        f"{null_text(rows)}\n\n"
        "![scores with 95 % intervals](scores.png)\n\n" + _curves_md(rows) + "\n".join(parts)
    )


CURVES_TEXT = (
    "The plateau around each point: the share of an entry's points whose plateau radius exceeds "
    "r, against the held-out real points in the same contexts (the radius probe)."
)


def _curves_md(rows: list[dict]) -> str:
    return (
        f"{CURVES_TEXT}\n\n![plateau radius curves](plateaus.png)\n\n" if _has_curves(rows) else ""
    )


def _has_curves(rows: list[dict]) -> bool:
    return any(r.get("curves") for r in rows)


def render_html(track_id: str, rows: list[dict]) -> str:
    e = html.escape
    ths = "".join(
        f'<th data-key="{k}" onclick="sortBy(\'{k}\')">{e(label)}</th>' for k, label in COLUMNS
    )
    tables = []
    for key, section_rows in sections(rows).items():
        title, intro = SECTIONS[key]
        trs = []
        for r in section_rows:
            cells = "".join(
                f'<td data-key="{k}" data-v="{e(str(r.get(k)) if r.get(k) is not None else "")}">'
                f"{e(_cell(r, k))}</td>"
                for k, _ in COLUMNS
            )
            name = r["name"]  # NAME_PATTERN checked by load_records: safe as a link and an id
            trs.append(
                f'<tr id="row-{e(name)}">{cells}<td><a href="./{e(name)}.png">'
                f'<img src="./{e(name)}.png" alt="{e(name)} plot" width="360"></a></td></tr>'
            )
        tables.append(
            f'<h2>{e(title)}</h2>\n<p>{e(intro)}</p>\n<table class="board" id="board-{key}">'
            f"<thead><tr>{ths}<th>plot</th></tr></thead>\n<tbody>{''.join(trs)}</tbody></table>"
        )
    curves = (
        f'<p>{e(CURVES_TEXT)}</p>\n<p><img src="./plateaus.png" alt="plateau radius curves"></p>'
        if _has_curves(rows)
        else ""
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Plateau challenge leaderboard: {e(track_id)}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:24px;color:#222}} table{{border-collapse:collapse}}
th,td{{border:1px solid #ccc;padding:4px 8px;font-size:14px;vertical-align:top}}
th{{background:#eef;cursor:pointer;user-select:none}} th.sorted{{background:#ccf}}
</style></head><body>
<h1>Plateau challenge leaderboard: <code>{e(track_id)}</code></h1>
<p>{e(SCORE_TEXT)} Only statistics-tier entries are ranked (docs/integrity.md). Click a column to sort.</p>
<p>{e(data_line(rows, code=""))}</p>
<p>{e(null_text(rows, code="", em=""))}</p>
<p><img src="./scores.png" alt="every entry's score with its 95 % interval"></p>
{curves}
{chr(10).join(tables)}
<script>
let dir = {{}};
function sortBy(key) {{
  dir[key] = -(dir[key] || -1);
  document.querySelectorAll('table.board tbody').forEach(body => {{
    const rows = Array.from(body.rows);
    rows.sort((a, b) => {{
      const x = a.querySelector(`td[data-key="${{key}}"]`).dataset.v, y = b.querySelector(`td[data-key="${{key}}"]`).dataset.v;
      const nx = parseFloat(x), ny = parseFloat(y);
      const c = (isNaN(nx) || isNaN(ny)) ? x.localeCompare(y) : nx - ny;
      return dir[key] * c;
    }});
    rows.forEach(r => body.appendChild(r));
  }});
  document.querySelectorAll('th').forEach(th => th.classList.toggle('sorted', th.dataset.key === key));
  document.body.dataset.sortedBy = key;
}}
const m = location.hash.match(/sort=(\\w+)/);
if (m) sortBy(m[1]);
</script></body></html>
"""


def render(track_id: str, root: Path = ROOT) -> list[dict]:
    """Write ``<root>/<track id>/`` README.md, index.html, scores.png and plateaus.png from the
    board's records; returns its rows."""
    recs = load_records(track_id, root)
    rows = entries_of(recs)
    reports = {rep.submission["name"]: rep for rep in recs.values()}
    d = root / track_id
    d.mkdir(parents=True, exist_ok=True)
    if rows:
        plot_scores(track_id, rows, d / "scores.png")
        if plot_plateau_curves(track_id, rows, reports, d / "plateaus.png") is not None:
            for r in rows:
                r["curves"] = "plateaus.png"
    (d / "README.md").write_text(render_markdown(track_id, rows))
    (d / "index.html").write_text(render_html(track_id, rows))
    return rows
