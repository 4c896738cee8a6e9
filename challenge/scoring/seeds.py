"""How much a headline moves with the scorer seed: score entries with several seeds, and the
resolution table (sd over seeds against the target, paired differences of neighbours).

Each seed draws other contexts, radius directions, slot order of the reference and submitted
rows, folds and bootstrap. :func:`score_seeds` writes each seed's report (JSON + per-point
features) to ``<out>/seed<s>/<name>.json`` and a ``summary.json``; seed 0 of an entry is its
board record. :func:`resolution` recomputes every headline from the stored features (with the
current classifier, ``n_repeats`` cross-fitting repeats, and with one split, scorer 2.0), so
both are measured on the same probes, and returns the table rows.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from challenge import checks, rng
from challenge.errors import ConfigError
from challenge.models import LoadedModel
from challenge.schemas import JSON_CONFIG
from challenge.scoring.classifier import compare
from challenge.scoring.config import ClassifierConfig, ScoreConfig
from challenge.scoring.probing import features_cache_path
from challenge.scoring.recording import score_points
from challenge.scoring.report import load_report
from challenge.scoring.validation import validate_submission
from challenge.track import TrackLike

TARGET_SD = 0.025
"""The resolution target: a headline's sd over 5 scorer seeds at most this."""


@dataclass
class SeedsConfig:
    """Which entries are scored with which scorer seeds."""

    __pydantic_config__ = JSON_CONFIG

    seeds: tuple[int, ...] = (1, 2)
    """scorer seeds (0 is the board's own record)"""
    entries: tuple[str, ...] = ("heldout_real", "gaussian", "token_cluster")
    """submission names (folders under <submissions>/<track id>/)"""
    contexts_per_row: int = 2
    """contexts each row is probed in (``ScoreConfig.contexts_per_row``)"""
    round0: Path | None = None
    """folder of one-context ``seed<s>/`` reports (seed 0: the board) whose features become the
    cached round 0, so only the new rounds are probed"""

    def __post_init__(self) -> None:
        checks.integer(self.contexts_per_row, "contexts_per_row", minimum=1)
        for s in self.seeds:
            checks.integer(s, "seeds")
        if not self.entries:
            raise ConfigError("name at least one entry", field="entries")


def prime_round0(track: TrackLike, acts, cfg: ScoreConfig, one: Path) -> bool:
    """Write the submission features of the one-context report ``one`` as the cached round 0 of
    ``acts`` under ``cfg`` (after checking that its rows are the ones ``cfg`` scores); ``False``
    when there is no such report or the cache already holds the round."""
    n = min(len(acts), track.required_n)
    n = n if cfg.n_points is None else min(cfg.n_points, n)
    rows = rng.subset(len(acts), n, cfg.seed, "scorer.rows")
    path = features_cache_path(track, cfg, len(rows), 0, acts[rows])
    if path.exists() or not one.exists():
        return False
    data = load_report(one).data
    if data.rows is None or not np.array_equal(data.rows, rows.numpy()):
        raise ConfigError(
            f"{one}: its rows are not the ones seed {cfg.seed} scores", field="round0"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **{k: v[:n] for k, v in data.submission.items()})
    tmp.replace(path)
    return True


def score_seeds(
    track: TrackLike,
    lm: LoadedModel,
    cfg: SeedsConfig,
    out: Path,
    *,
    submissions: Path = Path("submissions"),
    board: Path = Path("leaderboard"),
    score: ScoreConfig | None = None,
) -> dict[str, dict]:
    """Score every entry with every seed (entries outer), each report to
    ``<out>/seed<s>/<name>.json``; an existing report is kept (the job resumes). Returns and
    writes ``<out>/summary.json`` (``"<name>/seed<s>"``: score, interval, seconds)."""
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    base = score or ScoreConfig()
    for name in cfg.entries:
        folder = submissions / track.spec.track_id / name
        for seed in cfg.seeds:
            dest = out / f"seed{seed}"
            if (dest / f"{name}.json").exists():
                continue
            sub = validate_submission(
                folder, track, skip_copy_check="re-scored with a seed", memorisation=False
            )
            run = replace(base, seed=seed, contexts_per_row=cfg.contexts_per_row)
            if cfg.round0 is not None:
                one = board / track.spec.track_id if seed == 0 else cfg.round0 / f"seed{seed}"
                prime_round0(track, sub.acts, run, one / f"{name}.json")
            t = time.perf_counter()
            rep = score_points(track, lm, sub.acts, run, sub.meta, progress=False)
            rep.save(dest, name)
            h = rep.headline
            row = {"score": h.score, "ci": list(h.ci), "seconds": time.perf_counter() - t}
            print(f"{name}/seed{seed}", row, flush=True)
            summary[f"{name}/seed{seed}"] = row
            out.mkdir(parents=True, exist_ok=True)
            summary_path.write_text(json.dumps(summary, indent=1, sort_keys=True))
    return summary


# ------------------------------------------------------------------------ the resolution table
def headline_at(
    path: Path, repeats: int, contexts: int | None = None
) -> tuple[dict[str, float], np.ndarray]:
    """A record's headline recomputed from its stored features with ``repeats`` cross-fitting
    repeats (its own config otherwise). ``contexts`` below the record's keeps only its first
    context rounds: the headline a run with that many contexts per row makes (round 0 of a
    ``c``-context run is the one-context run's slots and features, bit for bit)."""
    rep = load_report(path)
    data = rep.data
    c = rep.config.contexts_per_row if contexts is None else contexts
    if c > rep.config.contexts_per_row:
        raise ConfigError(
            f"{path}: has {rep.config.contexts_per_row} contexts per row, not {c}",
            field="contexts",
        )
    m = len(data.rows) * c
    cfg = replace(rep.config, classifier=ClassifierConfig(n_repeats=repeats), contexts_per_row=c)
    ref = {k: v[:m] for k, v in data.reference.items()}
    sub = {k: v[:m] for k, v in data.submission.items()}
    head, _, arrays = compare(ref, sub, cfg)
    boot = arrays["bootstrap/score"]
    return {"score": head.score, "ci": list(head.ci), "boot_sd": float(np.std(boot))}, boot


def hanley_mcneil_sd(score: float, n: int) -> float:
    """The score's sd if its AUC came from ``n`` independent points per side (Hanley & McNeil
    1982, the exponential approximation): ``2 sd(AUC)`` at ``AUC = 1 - score / 2``."""
    a = 1.0 - score / 2.0
    q1, q2 = a / (2.0 - a), 2.0 * a * a / (1.0 + a)
    var = (a * (1.0 - a) + (n - 1) * (q1 - a * a) + (n - 1) * (q2 - a * a)) / n**2
    return 2.0 * float(np.sqrt(var))


@dataclass
class ResolutionRow:
    """One entry's headline over scorer seeds."""

    name: str
    scores: dict[int, float]
    """seed -> score (current classifier)"""
    sd: float | None
    """sd over seeds (ddof 1; ``None`` below two seeds)"""
    sd_one_split: float | None
    """the same with one cross-fitting split (scorer 2.0)"""
    boot_sd: float
    """mean bootstrap sd of the seeds' headlines"""
    independent_sd: float
    """:func:`hanley_mcneil_sd` at the 5-seed mean"""
    meets_target: bool | None
    """sd <= :data:`TARGET_SD` (``None`` below two seeds)"""
    boots: dict[int, np.ndarray] = field(default_factory=dict, repr=False)


def resolution(
    seeds_dirs: list[Path], board: Path, out: Path, contexts: int | None = None
) -> list[ResolutionRow]:
    """The resolution table of every entry with reports in ``<dir>/seed<s>/`` (for each seed the
    first folder holding it; seed 0 from ``board`` where none does), cached incrementally in
    ``out`` (JSON) and ``out.boot.npz`` (bootstrap scores). Rows sorted by the seed-0 score."""
    cache = json.loads(out.read_text()) if out.exists() else {}
    boot_path = out.with_suffix(".boot.npz")
    boots = dict(np.load(boot_path)) if boot_path.exists() else {}
    names = sorted({p.stem for d in seeds_dirs for p in d.glob("seed*/*.json")})
    rows = []
    for name in names:
        files: dict[int, Path] = {}
        for root in seeds_dirs:
            for d in sorted(root.glob("seed*")):
                if (d / f"{name}.json").exists():
                    files.setdefault(int(d.name[4:]), d / f"{name}.json")
        if (board / f"{name}.json").exists():
            files.setdefault(0, board / f"{name}.json")
        entry = cache.get(name, {})
        for seed, path in sorted(files.items()):
            for r in (5, 1):
                key = f"seed{seed}/r{r}"
                if key not in entry or (r == 5 and f"{name}/{key}" not in boots):
                    entry[key], boot = headline_at(path, r, contexts)
                    if r == 5:
                        boots[f"{name}/{key}"] = boot
        first = load_report(files[min(files)], arrays=False)
        entry["slots"] = first.headline.n_points if contexts is None else None
        if entry["slots"] is None:
            entry["slots"] = len(load_report(files[min(files)]).data.rows) * contexts
        cache[name] = entry
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(cache, indent=1, sort_keys=True))
        np.savez(boot_path, **boots)
        seeds = sorted(files)
        s5 = np.array([entry[f"seed{s}/r5"]["score"] for s in seeds])
        s1 = np.array([entry[f"seed{s}/r1"]["score"] for s in seeds])
        many = len(seeds) >= 2
        sd = float(np.std(s5, ddof=1)) if many else None
        rows.append(
            ResolutionRow(
                name=name,
                scores={s: float(v) for s, v in zip(seeds, s5, strict=True)},
                sd=sd,
                sd_one_split=float(np.std(s1, ddof=1)) if many else None,
                boot_sd=float(np.mean([entry[f"seed{s}/r5"]["boot_sd"] for s in seeds])),
                independent_sd=hanley_mcneil_sd(float(np.mean(s5)), entry["slots"]),
                meets_target=None if sd is None else sd <= TARGET_SD,
                boots={s: boots[f"{name}/seed{s}/r5"] for s in seeds},
            )
        )
    return sorted(rows, key=lambda r: -r.scores.get(0, next(iter(r.scores.values()))))


def resolution_markdown(rows: list[ResolutionRow], n_seeds: int = 5) -> str:
    """The resolution table and the table of paired differences between neighbours (by their
    mean over ``n_seeds`` seeds; each seed's bootstrap draws are shared by its entries)."""
    head = " | ".join(f"seed {s}" for s in range(n_seeds))
    lines = [
        f"| entry | seeds | {head} | sd | sd (one split, 2.0) | bootstrap sd "
        f"| independent-points sd | sd <= {TARGET_SD} |",
        "|---" * (n_seeds + 7) + "|",
    ]
    for r in rows:
        cells = " | ".join(f"{r.scores[s]:.3f}" if s in r.scores else "-" for s in range(n_seeds))
        if r.sd is None:
            sds, verdict = "- | -", "not measured (one seed)"
        else:
            sds = f"{r.sd:.3f} | {r.sd_one_split:.3f}"
            verdict = ("yes" if r.meets_target else "no") + (
                f" ({len(r.scores)} seeds)" if len(r.scores) < n_seeds else ""
            )
        lines.append(
            f"| {r.name} | {len(r.scores)} | {cells} | {sds} | {r.boot_sd:.3f} "
            f"| {r.independent_sd:.3f} | {verdict} |"
        )
    full = [r for r in rows if all(s in r.scores for s in range(n_seeds))]
    full.sort(key=lambda r: -np.mean([r.scores[s] for s in range(n_seeds)]))
    lines += [
        "",
        f"| pair (upper - lower by {n_seeds}-seed mean) | mean difference | sd over seeds "
        "| seeds resolving it (95 %) |",
        "|---|---|---|---|",
    ]
    for hi, lo in zip(full, full[1:], strict=False):
        d, res = [], 0
        for s in range(n_seeds):
            q = np.quantile(hi.boots[s] - lo.boots[s], [0.025, 0.975])
            d.append(hi.scores[s] - lo.scores[s])
            res += int(q[0] > 0 or q[1] < 0)
        lines.append(
            f"| {hi.name} - {lo.name} | {np.mean(d):+.3f} | {np.std(d, ddof=1):.3f} "
            f"| {res} of {n_seeds} |"
        )
    return "\n".join(lines) + "\n"
