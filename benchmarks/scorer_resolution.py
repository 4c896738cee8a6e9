"""The headline's spread across scorer seeds (the issue's resolution target: sd <= 0.025 over 5
seeds for every baseline). Each seed draws other contexts, radius directions, slot order of the
reference and submitted rows, folds and bootstrap; the per-point features of seed 0 are the
board's records (or ``<seeds-dir>/seed0``), those of seeds 1-4 come from
``benchmarks/scorer_seeds.py`` (e.g. ``--contexts-per-row 2``: every record's own config is
used). Headlines are
recomputed from the stored features, with the current classifier (mean over cross-fitting
repeats) and with one split (scorer 2.0), so both are measured on the same probes.

    python benchmarks/scorer_resolution.py --seeds-dir runs/seeds --out runs/seeds/resolution.json
    python benchmarks/scorer_resolution.py --seeds-dir runs/contexts2 --out runs/contexts2/resolution.json
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from challenge.scorer import ClassifierConfig, ScoreConfig, compare, stored_features

BOARD = Path("leaderboard/smollm2-135m-l1")
TARGET = 0.025


def features(npz: Path, slots: int | None = None) -> tuple[dict, dict]:
    """The record's reference and submission features (the first ``slots`` of each)."""
    with np.load(npz) as z:
        arrays = dict(z)
    ref, sub = stored_features(arrays, "reference"), stored_features(arrays, "submission")
    return {k: v[:slots] for k, v in ref.items()}, {k: v[:slots] for k, v in sub.items()}


def headline(
    npz: Path, seed: int, repeats: int, contexts: int | None = None
) -> tuple[dict, np.ndarray]:
    """The record's headline recomputed with ``repeats`` cross-fitting repeats (its own config
    otherwise: seed, contexts per row, bootstrap). ``contexts`` below the record's keeps only
    its first context rounds: the headline a run with that many contexts per row makes (round 0
    of a ``c``-context run is the one-context run's slots and features, bit for bit)."""
    rec = ScoreConfig(**json.loads(npz.with_suffix(".json").read_text())["config"])
    assert rec.seed == seed, npz
    c = rec.contexts_per_row if contexts is None else contexts
    if c > rec.contexts_per_row:
        raise SystemExit(f"{npz}: has {rec.contexts_per_row} contexts per row, not {c}")
    n = len(np.load(npz)["rows"])
    cfg = replace(rec, classifier=ClassifierConfig(n_repeats=repeats), contexts_per_row=c)
    head, _, arrays = compare(*features(npz, n * c), cfg)
    boot = arrays["bootstrap/score"]
    return {"score": head.score, "ci": list(head.ci), "boot_sd": float(np.std(boot))}, boot


def hanley_mcneil_sd(score: float, n: int) -> float:
    """The score's sd if its AUC came from ``n`` independent points per side (Hanley & McNeil
    1982, the exponential approximation): ``2 sd(AUC)`` at ``AUC = 1 - score / 2``."""
    a = 1.0 - score / 2.0
    q1, q2 = a / (2.0 - a), 2.0 * a * a / (1.0 + a)
    var = (a * (1.0 - a) + (n - 1) * (q1 - a * a) + (n - 1) * (q2 - a * a)) / n**2
    return 2.0 * float(np.sqrt(var))


def slots_of(npz: Path, contexts: int | None) -> int:
    """Slots of a record's headline at ``contexts`` per row (default: its own)."""
    rec = json.loads(npz.with_suffix(".json").read_text())["config"]
    return len(np.load(npz)["rows"]) * (contexts or rec.get("contexts_per_row", 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--seeds-dir",
        type=Path,
        nargs="+",
        default=[Path("runs/seeds")],
        help="folders of seed<s>/ reports; for each seed the first folder holding it is used",
    )
    ap.add_argument("--board", type=Path, default=BOARD, help="seed 0 where no folder has it")
    ap.add_argument(
        "--contexts",
        type=int,
        help="contexts per row (default: each record's own; fewer keep "
        "the first rounds of records made with more)",
    )
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    out = json.loads(a.out.read_text()) if a.out.exists() else {}
    boot_path = a.out.with_suffix(".boot.npz")
    boots = dict(np.load(boot_path)) if boot_path.exists() else {}
    names = sorted({p.stem for d in a.seeds_dir for p in d.glob("seed*/*.npz")})
    for name in names:
        files: dict[int, Path] = {}
        for root in a.seeds_dir:
            for d in sorted(root.glob("seed*")):
                if (d / f"{name}.npz").exists():
                    files.setdefault(int(d.name[4:]), d / f"{name}.npz")
        files.setdefault(0, a.board / f"{name}.npz")
        row = out.get(name, {})
        row["slots"] = slots_of(files[0], a.contexts)
        for seed, npz in sorted(files.items()):
            for r in (5, 1):
                key = f"seed{seed}/r{r}"
                if key not in row or (r == 5 and f"{name}/{key}" not in boots):
                    row[key], boot = headline(npz, seed, r, a.contexts)
                    if r == 5:
                        boots[f"{name}/{key}"] = boot
        out[name] = row
        a.out.write_text(json.dumps(out, indent=1, sort_keys=True))
        np.savez(boot_path, **boots)
    print(
        "| entry | seeds | " + " | ".join(f"seed {s}" for s in range(5)) + " | sd (5 repeats) "
        "| sd (one split, 2.0) | bootstrap sd | independent-points sd | sd <= 0.025 |"
    )
    print("|---" * 11 + "|")
    for name, row in sorted(out.items(), key=lambda kv: -kv[1]["seed0/r5"]["score"]):
        seeds = sorted(int(k[4:].split("/")[0]) for k in row if k.endswith("/r5"))
        s5 = np.array([row[f"seed{s}/r5"]["score"] for s in seeds])
        s1 = np.array([row[f"seed{s}/r1"]["score"] for s in seeds])
        boot = np.mean([row[f"seed{s}/r5"]["boot_sd"] for s in seeds])
        cells = [f"{row[f'seed{s}/r5']['score']:.3f}" if s in seeds else "-" for s in range(5)]
        hm = hanley_mcneil_sd(float(np.mean(s5)), row["slots"])
        if len(seeds) < 2:  # no spread to measure yet: say so rather than print NaN and "no"
            sds, verdict = "- | -", "not measured (one seed)"
        else:
            sd5, sd1 = np.std(s5, ddof=1), np.std(s1, ddof=1)
            sds = f"{sd5:.3f} | {sd1:.3f}"
            verdict = ("yes" if sd5 <= TARGET else "no") + (
                f" ({len(seeds)} seeds)" if len(seeds) < 5 else ""
            )
        print(
            f"| {name} | {len(seeds)} | "
            + " | ".join(cells)
            + f" | {sds} | {boot:.3f} | {hm:.3f} | {verdict} |"
        )

    # paired differences between entries neighbouring by their 5-seed mean, seed by seed (each
    # seed's bootstrap draws are shared by its entries): how often one seed "resolves" them
    full = {n: r for n, r in out.items() if all(f"seed{s}/r5" in r for s in range(5))}
    order = sorted(
        full, key=lambda n: -np.mean([full[n][f"seed{s}/r5"]["score"] for s in range(5)])
    )
    print(
        "\n| pair (upper - lower by 5-seed mean) | mean difference | sd over seeds | seeds resolving it (95 %) |"
    )
    print("|---|---|---|---|")
    for hi, lo in zip(order, order[1:], strict=False):
        d, res = [], 0
        for s in range(5):
            b = boots[f"{hi}/seed{s}/r5"] - boots[f"{lo}/seed{s}/r5"]
            d.append(full[hi][f"seed{s}/r5"]["score"] - full[lo][f"seed{s}/r5"]["score"])
            q = np.quantile(b, [0.025, 0.975])
            res += int(q[0] > 0 or q[1] < 0)
        print(f"| {hi} - {lo} | {np.mean(d):+.3f} | {np.std(d, ddof=1):.3f} | {res} of 5 |")


if __name__ == "__main__":
    main()
