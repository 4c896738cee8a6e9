"""CLI commands of the challenge: generate, validate, score, submit, leaderboard, main."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from challenge.errors import ChallengeError


def _generators() -> dict:
    from baselines.generators import GENERATORS

    return GENERATORS


def _lm(track):
    from challenge.models import load_model

    return load_model(track.spec.model)


def generate(
    generator: str,
    /,
    track: str = "smollm2-135m-l1",
    seed: int = 0,
    out: Path = Path("submissions"),
) -> Path:
    """Run a registered generator (see baselines/generators.py) and write its submission folder.

    Args:
        generator: registered generator name.
        track: registered track id or a track directory.
        out: root of submission folders; writes <out>/<track_id>/<generator>/.
    """
    from challenge.cli import _track
    from challenge.submission import generate as _generate

    gens = _generators()
    if generator not in gens:
        raise ChallengeError(
            f"unknown generator {generator!r}; known: {sorted(gens)}", field="generator"
        )
    tr = _track(track)
    path = _generate(gens[generator](), tr, _lm(tr), seed=seed, out_root=out)
    print(f"wrote {path}")
    return path


def validate(submission: Path, /, track: str = "smollm2-135m-l1") -> None:
    """Validate a submission folder against a track (shape, dtype, norms, duplicates, memorisation, metadata)."""
    from challenge.cli import _track
    from challenge.validate import validate_submission

    rep = validate_submission(submission, _track(track))
    print(f"valid: {rep.n} x {rep.d_model}; checks: {', '.join(rep.checks)}")


def _score(submission: Path, track: str, n_curves: int, n_steps: int, seed: int, root: Path):
    """Validate and score ``submission`` on ``track``; the report goes to ``<root>/<track id>/``."""
    from challenge.cli import _track
    from challenge.scorer import ScoreConfig, score_submission

    tr = _track(track)
    cfg = ScoreConfig(n_curves=n_curves, n_steps=n_steps, seed=seed)
    return tr, score_submission(submission, tr, _lm(tr), cfg, out=root / tr.spec.track_id)


def score(
    submission: Path,
    /,
    track: str = "smollm2-135m-l1",
    n_curves: int = 100,
    n_steps: int = 50,
    seed: int = 0,
    out: Path = Path("runs/scores"),
) -> dict:
    """Validate and score a submission; write its report (JSON + arrays + PNG) to <out>, not the leaderboard."""
    _, rep = _score(submission, track, n_curves, n_steps, seed, out)
    print(json.dumps(rep["headline"], indent=1))
    return rep


def submit(
    submission: Path,
    /,
    track: str = "smollm2-135m-l1",
    n_curves: int = 100,
    n_steps: int = 50,
    seed: int = 0,
    board: Path = Path("leaderboard"),
) -> dict:
    """Validate + score + record on the leaderboard, then re-render it. Invalid submissions record nothing."""
    from challenge.leaderboard import render

    tr, rep = _score(submission, track, n_curves, n_steps, seed, board)
    render(tr.spec.track_id, board)
    g = rep["headline"]["gap_closed"]
    print(
        f"{rep['submission']['name']}: gap closed {g if g is None else round(g, 3)}, mean KS {rep['headline']['mean_ks']:.3f}"
    )
    return rep


def leaderboard(track: str = "smollm2-135m-l1", board: Path = Path("leaderboard")) -> None:
    """Render leaderboard/<track>/README.md and index.html from the recorded reports, and print the table."""
    from challenge.leaderboard import render, render_markdown

    tid = Path(track).name if (Path(track) / "track.json").exists() else track
    rows = render(tid, board)
    print(render_markdown(tid, rows))


def main(
    track: str = "smollm2-135m-l1",
    only: tuple[str, ...] = (),
    n_curves: int = 100,
    n_steps: int = 50,
    quick: bool = False,
    board: Path = Path("leaderboard"),
) -> None:
    """The main job: build (or reuse) the track, generate and submit every baseline, render the leaderboard.

    Args:
        track: registered track id or a track directory.
        only: a subset of generator names (default: all).
        quick: a smaller run for smoke tests (30 curves x 20 steps).
    """
    from challenge.cli import _track

    if quick:
        n_curves, n_steps = 30, 20
    t0 = time.perf_counter()
    tr = _track(track)
    names = list(only) or list(_generators())
    for name in names:
        t1 = time.perf_counter()
        path = generate(name, track=str(tr.path), out=Path("submissions"))
        try:
            submit(path, track=str(tr.path), n_curves=n_curves, n_steps=n_steps, board=board)
        except ChallengeError as e:
            print(f"[main] {name} refused: {e}", file=sys.stderr)
        print(f"[main] {name}: {time.perf_counter() - t1:.0f} s", file=sys.stderr)
    leaderboard(track=tr.spec.track_id, board=board)
    print(
        f"[main] done in {time.perf_counter() - t0:.0f} s; open {board / tr.spec.track_id / 'index.html'}",
        file=sys.stderr,
    )


COMMANDS = {
    "generate": generate,
    "validate": validate,
    "score": score,
    "submit": submit,
    "leaderboard": leaderboard,
    "main": main,
}
