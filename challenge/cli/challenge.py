"""Challenge commands: generate, validate, score, submit, verify-generator, leaderboard, rescore,
main, and the scorer's own measurements (score-seeds, resolution, verify-records, attest-sae)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from challenge.cli._common import library_config, report
from challenge.distributed import DistributedConfig
from challenge.errors import ConfigError
from challenge.pipeline import MainConfig
from challenge.scoring import ScoreConfig, ScoreReport
from challenge.scoring.seeds import SeedsConfig
from challenge.track import DEFAULT_TRACK, resolve_track


def _track_id(track: str) -> str:
    """A registered track id as given, or the id of the track directory ``track``."""
    from challenge.track import TRACKS

    return track if track in TRACKS else resolve_track(track, build=False).spec.track_id


def _model(track):
    from challenge import models

    return models.load_model(track.spec.model)


def generate(
    generator: str, /, track: str = DEFAULT_TRACK, seed: int = 0, out: Path = Path("submissions")
) -> Path:
    """Run a registered generator (baselines/generators.py, baselines/statistics_generators.py)
    and write its submission folder.

    Args:
        generator: registered generator name.
        track: registered track id or a track directory.
        seed: seed of the generator's sample.
        out: root of submission folders; writes <out>/<track_id>/<generator>/.
    """
    from baselines.catalog import GENERATORS
    from challenge.submission import generate as _generate

    if generator not in GENERATORS:
        raise ConfigError(
            f"unknown generator {generator!r}; known: {sorted(GENERATORS)}", field="generator"
        )
    tr = resolve_track(track)
    gen, lm = GENERATORS[generator](), _model(tr)
    if {"sae", "statistics"} & set(getattr(gen, "access", ())):
        from challenge.sae import track_sae

        track_sae(
            tr, lm=lm
        )  # the organiser's SAE, ready-made (the generator may not run the model)
    path = _generate(gen, tr, lm, seed=seed, out_root=out)
    print(f"wrote {path}")
    return path


def validate(submission: Path, /, track: str = DEFAULT_TRACK) -> None:
    """Validate a submission folder against a track (shape, dtype, norms, duplicates,
    memorisation, metadata)."""
    from challenge.scoring import validate_submission

    rep = validate_submission(submission, resolve_track(track)).report
    print(f"valid: {rep.n} x {rep.d_model}; checks: {', '.join(rep.checks)}")


@dataclass
class ScoreCommand(ScoreConfig):
    """How a submission is probed, on which track, and where its report goes."""

    track: str = DEFAULT_TRACK
    """registered track id or a track directory"""
    out: Path = Path("runs/scores")
    """the report (JSON + arrays + PNG) goes to <out>/<track id>/"""
    heldout: Path | None = None
    """score against this private test split (`plateau build --private`) instead of the
    published held-out split (which becomes the dev split)"""
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    """run the probes on Ray workers (`--workers N`, `--address` for a cluster; same report)"""


def _track(track: str, heldout: Path | None):
    """The track, with its held-out split replaced by a private test split when given."""
    tr = resolve_track(track)
    if heldout is None:
        return tr
    from challenge.private import with_test_split

    return with_test_split(tr, heldout)


def score(submission: Path, /, cfg: ScoreCommand = ScoreCommand()) -> ScoreReport:
    """Validate and score a submission; write its report to <out>/<track id>/, not the
    leaderboard."""
    from challenge.scoring import score_folder

    tr = _track(cfg.track, cfg.heldout)
    out = cfg.out / tr.spec.track_id
    rep = score_folder(
        submission, tr, _model(tr), library_config(cfg), out=out, distributed=cfg.distributed
    )
    report(rep)
    return rep


@dataclass
class SubmitCommand(ScoreConfig):
    """How a submission is probed, on which track, and which leaderboard records it."""

    track: str = DEFAULT_TRACK
    """registered track id or a track directory"""
    board: Path = Path("leaderboard")
    """leaderboard root; the report goes to <board>/<track id>/"""
    replace: bool = False
    """replace the board's record of the same name (otherwise an existing name is refused)"""
    heldout: Path | None = None
    """score against this private test split (`plateau build --private`); use a board of its
    own (--board): records of the test and dev splits are never ranked together"""
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    """run the probes on Ray workers (`--workers N`, `--address` for a cluster; same record)"""


def submit(submission: Path, /, cfg: SubmitCommand = SubmitCommand()) -> ScoreReport:
    """Validate + score + record on the leaderboard (in its unverified section: activations
    only), then re-render it. Invalid submissions, and names already on the board (without
    --replace), record nothing."""
    from challenge.scoring import submit as _submit

    tr = _track(cfg.track, cfg.heldout)
    rep = _submit(
        submission,
        tr,
        _model(tr),
        library_config(cfg),
        cfg.board,
        replace=cfg.replace,
        distributed=cfg.distributed,
    )
    report(rep)
    return rep


def leaderboard(track: str = DEFAULT_TRACK, board: Path = Path("leaderboard")) -> None:
    """Render <board>/<track id>/README.md and index.html from the recorded reports, and print
    the table.

    Args:
        track: registered track id (or a track directory: its track id is used).
        board: leaderboard root.
    """
    from challenge.scoring.board import render, render_markdown

    tid = _track_id(track)
    print(render_markdown(tid, render(tid, board)))


def publish_reference(
    track: str = DEFAULT_TRACK, /, board: Path = Path("leaderboard"), dest: Path | None = None
) -> Path:
    """Publish a board's reference features (the held-out half's probe features that every
    record of the board was scored against) with its track, so that scorers elsewhere probe
    only the submission and compare it with the same features (docs/scoring.md).

    Args:
        track: registered track id or a track directory.
        board: leaderboard root holding <board>/<track id>/.
        dest: a registry root (writes <dest>/<track id>/v<version>/reference_features/);
            default: the repository's registry.
    """
    from challenge.scoring.board import load_records
    from challenge.scoring.reference import FOLDER, publish_board_reference
    from challenge.track import local_registry

    tr = resolve_track(track)
    root = Path(dest) if dest is not None else local_registry()
    folder = root / tr.spec.track_id / f"v{tr.spec.version}" / FOLDER
    if not (folder.parent / "manifest.json").exists():
        raise ConfigError(
            f"{folder.parent} holds no published {tr.spec.track_id} v{tr.spec.version}; "
            "`plateau publish` it first",
            field="dest",
        )
    path = publish_board_reference(tr, load_records(tr.spec.track_id, board), folder)
    print(f"published {path}")
    return path


def extend_records(
    track: str = DEFAULT_TRACK,
    /,
    probes: tuple[str, ...] = ("p2dir",),
    board: Path = Path("leaderboard"),
    only: tuple[str, ...] = (),
) -> None:
    """Re-make a board's records with added probes: each record's stored features kept, only
    the added probes run at its points in its slots (the reference's once), scored again and
    written as it lands; then re-render the board. Each submission folder is validated again
    and must be the one its record scored. Resumable: records that already run the probes are
    skipped. Publish the widened reference with `plateau publish-reference` afterwards.

    Args:
        track: registered track id or a track directory.
        probes: probes to add (e.g. p2dir).
        board: leaderboard root holding <board>/<track id>/.
        only: record names (default: every record of the board).
    """
    from challenge.models import load_model
    from challenge.scoring.board import render, render_markdown
    from challenge.scoring.extension import extend_records as _extend

    tr = resolve_track(track)
    _extend(tr, load_model(tr.spec.model), tuple(probes), board, tuple(only) or None)
    print(render_markdown(tr.spec.track_id, render(tr.spec.track_id, board)))


def rescore(track: str = DEFAULT_TRACK, board: Path = Path("leaderboard")) -> None:
    """Re-make every record of <board>/<track id>/ under the current scorer version and
    classifier from the per-point features it stores (no model run; e.g. scorer 2.0 -> 2.1, the
    mean over cross-fitting repeats), then re-render the board. A record whose features cannot
    be re-used is refused, naming its file.

    Args:
        track: registered track id (or a track directory: its track id is used).
        board: leaderboard root.
    """
    import json
    from dataclasses import asdict

    from tqdm.auto import tqdm

    from challenge.scoring import SCORER_VERSION, ClassifierConfig
    from challenge.scoring import rescore as _rescore
    from challenge.scoring.board import render, render_markdown

    tid = _track_id(track)
    paths = sorted(p for p in (board / tid).glob("*.json") if p.with_suffix(".npz").exists())
    for p in tqdm(paths, desc=f"rescore {tid}", unit="record"):
        doc = json.loads(p.read_text())
        current = doc.get("scorer_version") == SCORER_VERSION
        if current and doc.get("config", {}).get("classifier") == asdict(ClassifierConfig()):
            continue  # already made by this scorer and classifier
        h = _rescore(p).headline
        print(f"{p.stem}: {h.score:.3f} [{h.ci[0]:.3f}, {h.ci[1]:.3f}] (scorer {SCORER_VERSION})")
    print(render_markdown(tid, render(tid, board)))


@dataclass
class MainCommand(MainConfig):
    """The main job on a track."""

    track: str = DEFAULT_TRACK
    """registered track id or a track directory (built into the cache when missing)"""
    quick: bool = False
    """a smaller run for smoke tests (``ScoreConfig.quick``: 40 points, lighter probes)"""
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    """run every entry's probes on Ray workers (`--workers N`, `--address` for a cluster; same
    records; an interrupted job resumes)"""

    def job(self) -> MainConfig:
        """The library config this command runs (``quick`` applied)."""
        cfg = library_config(self)
        if self.quick:
            cfg.score = cfg.score.quick()
        return cfg


def main(cfg: MainCommand) -> None:
    """The main job: build (or reuse) the track, generate and submit every baseline generator,
    render the leaderboard. A line on stderr as each entry starts and finishes says where it is
    (entry i of n, time elapsed, time left); interrupted (Ctrl-C), the same command resumes it
    from the caches."""
    from baselines.catalog import GENERATORS
    from challenge.pipeline import run_main

    tr = resolve_track(cfg.track)
    report(run_main(tr, GENERATORS, cfg.job(), lm=_model(tr), distributed=cfg.distributed))


@dataclass
class VerifyCommand(ScoreConfig):
    """A generator file run in the sandbox, then validated, scored and recorded."""

    name: str = ""
    """the entry's name on the board ([a-z0-9_-]{1,64})"""
    authors: tuple[str, ...] = ("anonymous",)
    """who made the generator"""
    track: str = DEFAULT_TRACK
    """registered track id or a track directory"""
    generate_seed: int = 0
    """seed of the generator's sample"""
    class_name: str | None = None
    """the generator class, when the file defines several"""
    tier: Literal["rows", "statistics"] = "rows"
    """rows: fit(track, lm) on the public split (recorded as synthetic); statistics:
    fit(stats, sae) on the track's statistics artifact and its SAE, no split in the sandbox
    (recorded in the statistics section)"""
    with_sae: bool = True
    """give the generator the track's SAE (track.sae()); trained first when missing (the
    statistics tier always has it)"""
    wall_seconds: float = 600.0
    """wall-clock limit of the sandboxed run"""
    cpu_seconds: int = 1200
    """CPU-time limit of the sandboxed run"""
    memory_gb: float = 8.0
    """address-space limit of the sandboxed run"""
    board: Path = Path("leaderboard")
    """leaderboard root; the record goes to <board>/<track id>/"""
    submissions: Path = Path("submissions")
    """the output is written as a submission to <submissions>/<track id>/<name>/"""
    replace: bool = False
    """replace the board's record of the same name"""
    heldout: Path | None = None
    """score against this private test split (`plateau build --private`)"""

    def __post_init__(self) -> None:
        from challenge import checks

        super().__post_init__()
        checks.choice(self.tier, ("rows", "statistics"), "tier")
        if self.tier == "statistics" and not self.with_sae:
            raise ConfigError(
                "the statistics tier needs the SAE its artifact was built with; drop --no-with-sae",
                field="with_sae",
            )


def verify_generator(generator_file: Path, /, cfg: VerifyCommand = VerifyCommand()) -> ScoreReport:
    """Run a generator file (a class with fit(track, lm) and sample(n, *, seed)) in the
    bubblewrap sandbox (only the public split and the SAE; no model, held-out split or
    network; time and memory limits), then validate, score and record its output as a
    verified synthetic entry (docs/integrity.md). With --tier statistics the class has
    fit(stats, sae) and the sandbox holds only the track's statistics artifact and its SAE (no
    split); the entry goes to the statistics section."""
    from challenge.sandbox import SandboxLimits
    from challenge.sandbox import verify_generator as _verify

    if not cfg.name:
        raise ConfigError("give the entry a name (--name)", field="name")
    tr = _track(cfg.track, cfg.heldout)
    lm = _model(tr)
    sae, stats_dir = None, None
    if cfg.with_sae:
        from challenge.sae import track_sae

        sae = track_sae(resolve_track(cfg.track), lm=lm)
    if cfg.tier == "statistics":  # the artifact (built when missing) and the SAE it names
        from challenge.sandbox import statistics_sources

        stats_dir, sae = statistics_sources(resolve_track(cfg.track))
    lim = SandboxLimits(
        wall_seconds=cfg.wall_seconds, cpu_seconds=cfg.cpu_seconds, memory_gb=cfg.memory_gb
    )
    rep = _verify(
        generator_file,
        tr,
        lm,
        name=cfg.name,
        authors=list(cfg.authors),
        seed=cfg.generate_seed,
        sae=sae,
        class_name=cfg.class_name,
        limits=lim,
        score_cfg=library_config(cfg),
        board=cfg.board,
        submissions=cfg.submissions,
        replace=cfg.replace,
        tier=cfg.tier,
        stats_dir=stats_dir,
    )
    from challenge.scoring.board import render

    render(tr.spec.track_id, cfg.board)
    report(rep)
    return rep


@dataclass
class SeedsCommand(SeedsConfig):
    """Which entries are scored with which scorer seeds, on which track, and where."""

    track: str = DEFAULT_TRACK
    """registered track id or a track directory"""
    out: Path = Path("runs/seeds")
    """reports go to <out>/seed<s>/<name>.json, scores to <out>/summary.json"""
    submissions: Path = Path("submissions")
    """root of submission folders (<submissions>/<track id>/<name>/)"""
    board: Path = Path("leaderboard")
    """leaderboard root (seed 0's one-context records for --round0)"""


def score_seeds(cfg: SeedsCommand) -> None:
    """Score entries with several scorer seeds (other contexts, directions, row orders, folds
    and bootstrap): how much a headline moves with the seed. Resumes: existing reports are
    kept. Then `plateau resolution` makes the table."""
    from challenge.scoring.seeds import score_seeds as _score_seeds

    tr = resolve_track(cfg.track)
    _score_seeds(
        tr,
        _model(tr),
        library_config(cfg),
        cfg.out,
        submissions=cfg.submissions,
        board=cfg.board,
    )
    print(f"wrote {cfg.out / 'summary.json'}")


def resolution(
    seeds_dir: tuple[Path, ...] = (Path("runs/seeds"),),
    track: str = DEFAULT_TRACK,
    board: Path = Path("leaderboard"),
    contexts: int | None = None,
    out: Path = Path("runs/seeds/resolution.json"),
) -> None:
    """The resolution table: every entry's headline over scorer seeds (recomputed from the
    stored features; sd against the 0.025 target) and the paired differences of neighbours.

    Args:
        seeds_dir: folders of seed<s>/ reports (`plateau score-seeds`); for each seed the first
            folder holding it is used.
        track: registered track id (its board's records are seed 0).
        board: leaderboard root.
        contexts: contexts per row (default: each record's own; fewer keep the first rounds).
        out: the recomputed headlines (JSON, incremental) and their bootstrap scores (.boot.npz).
    """
    from challenge.scoring.seeds import resolution as _resolution
    from challenge.scoring.seeds import resolution_markdown

    tid = _track_id(track)
    rows = _resolution(list(seeds_dir), board / tid, out, contexts)
    print(resolution_markdown(rows))


def verify_records(track: str = DEFAULT_TRACK, board: Path = Path("leaderboard")) -> None:
    """Re-make every record of <board>/<track id>/ from its stored per-point features under its
    own config and compare with what is stored, bit for bit (JSON and arrays); writes nothing.
    Exits 1 when any record differs.

    Args:
        track: registered track id (or a track directory: its track id is used).
        board: leaderboard root.
    """
    from tqdm.auto import tqdm

    from challenge.scoring.recording import verify_record

    tid = _track_id(track)
    paths = sorted(p for p in (board / tid).glob("*.json") if p.with_suffix(".npz").exists())
    bad = 0
    for p in tqdm(paths, desc=f"verify {tid}", unit="record"):
        diffs = verify_record(p)
        bad += bool(diffs)
        print(f"{p.stem}: {'identical' if not diffs else 'DIFFERS in ' + ', '.join(diffs)}")
    print(f"{len(paths) - bad} of {len(paths)} records re-made bit for bit")
    if bad:
        raise SystemExit(1)


def attest_sae(
    track: str = DEFAULT_TRACK,
    board: Path = Path("leaderboard"),
    submissions: Path = Path("submissions"),
) -> None:
    """Name the SAE behind board records made before submissions named theirs: each such
    generator is re-run and its SAE recorded only when the output equals the committed
    submission bit for bit (docs/scoring.md).

    Args:
        track: registered track id or a track directory.
        board: leaderboard root.
        submissions: root of submission folders.
    """
    from baselines.generators import GENERATORS
    from challenge.scoring.attest import attest_sae as _attest

    tr = resolve_track(track)
    for a in _attest(tr, _model(tr), GENERATORS, board=board, submissions=submissions):
        if a.attested:
            print(f"{a.name}: attested {a.sae['name']} {a.sae['sha256'][:12]}")
        else:
            print(f"{a.name}: NOT attested (max abs difference {a.max_abs_diff}); left as it is")
