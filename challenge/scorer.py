"""The scorer: do submitted activations sit on plateaus like held-out real ones?

Every candidate point v_i (submitted, or held-out real for the reference) is written at the
track's write point in context prompt c_i and probed with P1 both ways:

- **origin** (the plateau around v): path v_i -> a_{c_i}, the context's own real activation;
- **target** (v as the end of a real path): path a_{c_i} -> v_i;

each in the relative scheme (MS on L2 and KL, nonlinearity and area-ratio steps) and the
absolute scheme (plateau length), scale-free units. Per feature: KS between the candidate's and
the held-out reference's distributions, with a bootstrap CI. Two calibration points are scored
the same way: the **floor** (a second, disjoint held-out real sample: real-vs-real noise) and
the **ceiling** (N(mu, Sigma) of the public split: the random baseline). Per feature,
gap closed = (ceiling - submission) / (ceiling - floor), clipped above at 1; the headline is its
mean over features whose ceiling exceeds the floor by at least 0.05.

The result is a :class:`ScoreReport`, written as a ``plateau-score/1`` JSON document (schema:
``challenge/schemas/score_report.schema.json``, generated from the class).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import Field
from typing_extensions import TypedDict

import challenge
from challenge import checks, rng
from challenge import metrics as M
from challenge.directions import ActivationStats, gaussian_like
from challenge.metrics import Summary
from challenge.models import LoadedModel, cache_root
from challenge.protocols import UNITS, P1Config, Units, p1_probe, resolve_p1
from challenge.results import provenance, save_result, to_jsonable
from challenge.schemas import JSON_CONFIG
from challenge.submission import SubmissionMeta

SCHEMA_ID = "plateau-score/1"
SCHEMA_NAME = "score_report"
MIN_SPREAD = 0.05

Fraction = Annotated[float, Field(ge=0, le=1)]
AtMostOne = Annotated[float, Field(le=1)]


@dataclass
class ScoreConfig:
    """How a submission is probed; part of every report (and of the leaderboard's identity:
    records made with another config are not ranked together)."""

    __pydantic_config__ = JSON_CONFIG

    n_curves: int = 100
    """Curves per probe: submitted rows scored, and the reference, floor and ceiling samples."""
    n_steps: int = 50
    """Points per P1 path (relative scheme; the absolute scheme has ``n_steps + 1``); at least
    ``metrics.NL_FIT_STEPS`` (10)."""
    n_boot: int = 200
    """Bootstrap resamples of the KS confidence interval."""
    seed: int = 0
    """Run seed; the draws use the ``scorer.*`` streams of ``challenge.rng``."""
    units: Units = "scale_free"
    """P1 units: ``scale_free`` (the track's measured units) or ``gpt2``."""

    def __post_init__(self) -> None:
        checks.integer(self.n_curves, "n_curves", minimum=1)
        checks.integer(self.n_steps, "n_steps", minimum=M.NL_FIT_STEPS)
        checks.integer(self.n_boot, "n_boot", minimum=1)
        checks.integer(self.seed, "seed")
        checks.choice(self.units, UNITS, "units")


@dataclass
class ScoredTrack:
    """The track a report was scored on."""

    __pydantic_config__ = JSON_CONFIG

    id: str
    version: str
    manifest_sha256: Annotated[str, Field(pattern="^[0-9a-f]{64}$")]
    """sha256 of the track's ``manifest.json``: which data exactly."""
    units: dict[str, float]
    """The track's measured units (``Track.units``)."""


@dataclass
class ScoreHeadline:
    """The numbers a leaderboard ranks by."""

    __pydantic_config__ = JSON_CONFIG

    gap_closed: AtMostOne | None
    """Mean gap closed over the informative features (``None`` when none is)."""
    n_features: int
    """Informative features: ceiling KS - floor KS >= ``MIN_SPREAD``."""
    mean_ks: Fraction
    """Mean KS to the held-out reference over all features."""


@dataclass
class FeatureScore:
    """One plateau feature of a submission against the held-out reference."""

    __pydantic_config__ = JSON_CONFIG

    ks: Fraction
    ks_ci: tuple[float, float]
    """95 % percentile bootstrap interval of ``ks``."""
    floor: float
    """KS of a second held-out real sample (real-vs-real noise)."""
    ceiling: float
    """KS of N(mu, Sigma) of the public split (the random baseline)."""
    gap_closed: AtMostOne | None
    """(ceiling - ks) / (ceiling - floor), clipped at 1; ``None`` when the spread is too small."""
    submission: Summary
    reference: Summary


class ScoreProvenance(TypedDict):
    """How a report was made (``challenge.results.provenance``): the keys every report has; the
    model's and engine's other fields follow."""

    suite_version: str
    torch: str
    model: str
    write_hook: str
    read_hook: str


@dataclass
class ScoreReport:
    """A score report: what was scored (``submission``, ``track``, ``config``), the ranking
    numbers (``headline``), per-feature scores, provenance and, for a submission folder, its
    validation. ``to_json()`` is the ``plateau-score/1`` document; ``arrays`` (per-curve
    features, ``submission/<feature>`` and ``reference/<feature>``) go to the ``.npz``."""

    __pydantic_config__ = JSON_CONFIG

    schema: Literal["plateau-score/1"] = field(default=SCHEMA_ID, kw_only=True)
    submission: SubmissionMeta
    track: ScoredTrack
    config: ScoreConfig
    headline: ScoreHeadline
    features: Annotated[dict[str, FeatureScore], Field(min_length=1)]
    provenance: ScoreProvenance
    validation: dict[str, Any] | None = None
    """The validation report's checks and statistics (records always carry it)."""
    arrays: dict[str, Any] = field(default_factory=dict, repr=False)
    path: Path | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        doc = {
            "schema": self.schema,
            "submission": self.submission,
            "track": self.track,
            "config": self.config,
            "headline": self.headline,
            "features": self.features,
            "provenance": self.provenance,
        }
        if self.validation is not None:
            doc["validation"] = self.validation
        return to_jsonable(doc)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ScoreReport:
        """The report of a ``plateau-score/1`` document (``KeyError`` / ``TypeError`` /
        ``ConfigError`` when it is not one)."""
        if doc.get("schema") != SCHEMA_ID:
            raise KeyError(f"schema is {doc.get('schema')!r}, not {SCHEMA_ID!r}")
        return cls(
            schema=doc["schema"],
            submission=doc["submission"],
            track=ScoredTrack(**doc["track"]),
            config=ScoreConfig(**doc["config"]),
            headline=ScoreHeadline(**doc["headline"]),
            features={k: FeatureScore(**v) for k, v in doc["features"].items()},
            provenance=doc["provenance"],
            validation=doc.get("validation"),
        )

    def __getitem__(self, key: str) -> Any:
        """The JSON document's ``key`` (``report["headline"]["gap_closed"]``)."""
        return self.to_json()[key]

    def save(self, out_dir: str | Path, name: str) -> Path:
        """Write ``<out_dir>/<name>.json`` (+ ``.npz``); sets and returns ``self.path``."""
        self.path = save_result(out_dir, name, self.to_json(), self.arrays or None)
        return self.path


def probe_features(track, engine, points: torch.Tensor, cfg: ScoreConfig) -> dict[str, np.ndarray]:
    """P1 features of ``points`` written in the track's context prompts (origin and target)."""
    n = len(points)
    ctx_idx = torch.arange(n) % len(track.acts("context"))
    toks, real = track.tokens("context")[ctx_idx], track.acts("context")[ctx_idx]
    feats: dict[str, np.ndarray] = {}
    for scheme in ("relative", "absolute"):
        pc = P1Config(scheme=scheme, units=cfg.units, n_steps=cfg.n_steps, seed=cfg.seed)
        r = resolve_p1(pc, track.units)
        keep = ("ms_l2", "ms_kl", "nl_l2", "ar_l2") if scheme == "relative" else ("plateau_length",)
        for role, (a, b) in {"origin": (points, real), "target": (real, points)}.items():
            _, f = p1_probe(engine, toks, a, b, pc, r, desc=f"{role} {scheme}")
            feats |= {f"{role}.{k}": f[k] for k in keep}
    return feats


def reference_sets(track, cfg: ScoreConfig) -> dict[str, torch.Tensor]:
    """Held-out reference (A), disjoint held-out floor sample (B), random ceiling."""
    held = track.acts("heldout")
    n = min(cfg.n_curves, len(held) // 2)
    idx = rng.subset(len(held), 2 * n, cfg.seed, "scorer.reference")
    stats = ActivationStats.fit(track.acts("public"))
    return {
        "reference": held[idx[:n]],
        "floor": held[idx[n:]],
        "ceiling": gaussian_like(stats, n, rng.generator(cfg.seed, "scorer.ceiling")),
    }


def _ref_cache_path(track, cfg: ScoreConfig) -> Path:
    key = json.dumps(
        {"cfg": asdict(cfg), "manifest": track_checksum(track), "suite": challenge.__version__},
        sort_keys=True,
    )
    h = hashlib.sha256(key.encode()).hexdigest()[:16]
    return (
        cache_root()
        / "scores"
        / track.spec.track_id
        / f"v{track.spec.version}"
        / f"reference_{h}.npz"
    )


def track_checksum(track) -> str:
    """sha256 of the track's ``manifest.json`` (``"unknown"`` for a track held only in memory)."""
    return (
        hashlib.sha256((Path(track.path) / "manifest.json").read_bytes()).hexdigest()
        if track.path
        else "unknown"
    )


def reference_features(track, engine, cfg: ScoreConfig) -> dict[str, dict[str, np.ndarray]]:
    """Features of the reference, floor and ceiling sets; cached per track and config."""
    path = _ref_cache_path(track, cfg)
    if path.exists():
        z = np.load(path)
        out: dict[str, dict[str, np.ndarray]] = {}
        for key in z.files:
            group, feat = key.split("/", 1)
            out.setdefault(group, {})[feat] = z[key]
        return out
    sets = reference_sets(track, cfg)
    out = {g: probe_features(track, engine, pts, cfg) for g, pts in sets.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{f"{g}/{k}": v for g, f in out.items() for k, v in f.items()})
    return out


def gap_closed(ks_sub: float, floor: float, ceiling: float) -> float | None:
    spread = ceiling - floor
    if spread < MIN_SPREAD:
        return None
    return float(min(1.0, (ceiling - ks_sub) / spread))


def score_points(
    track,
    lm: LoadedModel,
    points: torch.Tensor,
    cfg: ScoreConfig,
    meta: SubmissionMeta | None = None,
    progress: bool = True,
) -> ScoreReport:
    """Score report (with its arrays) for a set of candidate activations (``progress``: a bar
    per probe on stderr)."""
    engine = track.engine(lm, progress=progress)
    ref = reference_features(track, engine, cfg)
    idx = rng.subset(len(points), cfg.n_curves, cfg.seed, "scorer.rows")
    sub = probe_features(track, engine, points[idx], cfg)
    per, gaps = {}, []
    for k in sub:
        ks = M.ks_bootstrap(sub[k], ref["reference"][k], n_boot=cfg.n_boot, seed=cfg.seed)
        floor = M.ks_statistic(ref["floor"][k], ref["reference"][k])
        ceiling = M.ks_statistic(ref["ceiling"][k], ref["reference"][k])
        g = gap_closed(ks["stat"], floor, ceiling)
        per[k] = FeatureScore(
            ks=ks["stat"],
            ks_ci=(ks["low"], ks["high"]),
            floor=floor,
            ceiling=ceiling,
            gap_closed=g,
            submission=M.summarise(sub[k]),
            reference=M.summarise(ref["reference"][k]),
        )
        if g is not None:
            gaps.append(g)
    arrays = {f"submission/{k}": v for k, v in sub.items()} | {
        f"reference/{k}": v for k, v in ref["reference"].items()
    }
    return ScoreReport(
        submission=meta or {},
        track=ScoredTrack(
            id=track.spec.track_id,
            version=track.spec.version,
            manifest_sha256=track_checksum(track),
            units=track.units,
        ),
        config=cfg,
        headline=ScoreHeadline(
            gap_closed=float(np.mean(gaps)) if gaps else None,
            n_features=len(gaps),
            mean_ks=float(np.mean([v.ks for v in per.values()])),
        ),
        features=per,
        provenance=provenance(lm.provenance | engine.describe()),
        arrays=arrays,
    )


def validate_report(report: ScoreReport | dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` unless the report matches its committed schema."""
    from challenge.schemas import validate

    validate(report.to_json() if isinstance(report, ScoreReport) else report, SCHEMA_NAME)


def plot_report(report: ScoreReport, path: Path) -> Path:
    """Histograms of each feature: submission vs held-out real."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from challenge.plots import save_figure

    arrays = report.arrays
    feats = list(report.features)
    cols = 5
    rows = (len(feats) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax, k in zip(axes.flat, feats, strict=False):
        a, b = arrays[f"reference/{k}"], arrays[f"submission/{k}"]
        edges = np.histogram_bin_edges(np.concatenate([a, b]), bins=20)
        ax.hist(a, bins=edges, alpha=0.5, label="held-out real", color="#1f77b4")
        ax.hist(b, bins=edges, alpha=0.5, label="submission", color="#2ca02c")
        ax.set_title(f"{k}  KS {report.features[k].ks:.2f}", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(feats) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    g = report.headline.gap_closed
    fig.suptitle(
        f"{report.submission.get('name', '?')} on {report.track.id}: gap closed {g:.2f}"
        if g is not None
        else "",
        fontsize=10,
    )
    return save_figure(fig, path, dpi=90)


def score_submission(
    folder: str | Path,
    track,
    lm: LoadedModel,
    cfg: ScoreConfig | None = None,
    out: Path | None = None,
) -> ScoreReport:
    """Validate, score and (if ``out``) write ``<out>/<name>.json`` + ``.npz`` + ``.png``."""
    from challenge.submission import read_submission
    from challenge.validate import validate_submission

    cfg = cfg or ScoreConfig()
    rep = validate_submission(folder, track)
    meta, acts = read_submission(folder)
    report = score_points(track, lm, acts, cfg, meta)
    report.validation = {"checks": rep.checks, **rep.stats}
    validate_report(report)
    if out is not None:
        report.save(out, meta["name"])
        plot_report(report, Path(out) / f"{meta['name']}.png")
    return report
