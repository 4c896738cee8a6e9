"""CLI commands of the baselines: train-sae, find-features (collected by ``challenge.cli``)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from baselines.feature_finding import FeatureFindingConfig
from challenge.sae import SAEConfig


def train_sae(
    track: str = "smollm2-135m-l1",
    /,
    cfg: SAEConfig = SAEConfig(),
    out: Path | None = None,
    retrain: bool = False,
    pretrained: bool = True,
    results: Path = Path("runs/saes"),
) -> Path:
    """Train (or fetch) a track's SAE and report variance explained, L0 and dead fraction.

    GPT-2 tracks use the published SAELens SAE at the write hook (`gpt2-small-res-jb`, from the
    hub) unless --no-pretrained; other tracks train a TopK/ReLU SAE on the public prompts (cached
    in $PLATEAU_CACHE/saes/<track>/v<version>/<cfg>/, SAELens' on-disk format). Writes a summary
    JSON to <results>/<track>_<cfg>.json.

    Args:
        track: registered track id or a track directory.
        out: also save the SAE to this directory.
        retrain: train even when a cached SAE with this config exists.
        pretrained: for GPT-2 tracks, use the published SAE instead of training one.
    """
    import shutil

    from challenge.cli import _track
    from challenge.results import provenance, save_result
    from challenge.sae import (
        TRACK_RELEASES,
        describe,
        evaluate_sae,
        save_sae,
        track_sae,
        track_sae_dir,
    )

    tr = _track(track)
    t0 = time.perf_counter()
    use_pub = pretrained and tr.spec.model.name in TRACK_RELEASES
    if retrain and not use_pub:
        shutil.rmtree(track_sae_dir(tr, cfg), ignore_errors=True)
    sae = track_sae(tr, None if use_pub else cfg)
    evals = {s: evaluate_sae(sae, tr.acts(s)) for s in ("public", "heldout", "context")}
    doc = {
        "track": {"id": tr.spec.track_id, "version": tr.spec.version},
        "sae": describe(sae),
        "eval": evals,
        "seconds": round(time.perf_counter() - t0, 1),
        "provenance": provenance(),
    }
    name = f"{tr.spec.track_id}_{'pretrained' if use_pub else cfg.name()}"
    path = save_result(results, name, doc)
    if out is not None:
        save_sae(sae, out)
    for split, e in evals.items():
        print(
            f"{split:8s} variance explained {e['variance_explained']:.4f}  L0 {e['l0']:.1f}  "
            f"never fire {e['dead_fraction']:.3f}  dead (train) {e['dead_fraction_train']:.3f}"
        )
    print(f"wrote {path}")
    return path


def find_features(
    track: str = "smollm2-135m-l1",
    /,
    cfg: FeatureFindingConfig = FeatureFindingConfig(),
    sae: Path | None = None,
    no_sae: bool = False,
    out: Path = Path("runs/feature_finding"),
    plot: Path | None = None,
) -> Path:
    """Find the directions the output is most sensitive to at the write point (Jacobian,
    optimisation) and compare their P3 curves with SAE, PCA and random directions.

    Writes <out>/<track>_feature_finding.json (+ .npz, .png, .md table).

    Args:
        track: registered track id or a track directory.
        sae: an SAE directory (default: the track's SAE, see `plateau train-sae`).
        no_sae: skip the SAE directions and the alignment statistics.
        plot: also write the plot here (e.g. docs/img/feature_finding.png).
    """
    from baselines.feature_finding import plot_feature_finding, run_feature_finding, table_markdown
    from challenge.cli import _track
    from challenge.models import load_model
    from challenge.results import provenance, save_result
    from challenge.sae import load_sae, track_sae

    tr = _track(track)
    lm = load_model(tr.spec.model)
    s = None if no_sae else (load_sae(sae) if sae is not None else track_sae(tr, lm=lm))
    doc, arrays = run_feature_finding(tr, lm, s, cfg)
    doc["provenance"] = provenance(lm.provenance | tr.engine(lm).describe())
    name = f"{tr.spec.track_id}_feature_finding"
    path = save_result(out, name, doc, arrays)
    table = table_markdown(doc)
    (out / f"{name}.md").write_text(table)
    plot_feature_finding(doc, arrays, out / f"{name}.png")
    if plot is not None:
        plot_feature_finding(doc, arrays, plot)
    print(table)
    print(json.dumps(doc["agreement"], indent=1))
    print(f"wrote {path}")
    return path


def diagnose_submissions(
    track: str = "smollm2-135m-l1",
    /,
    submissions: Path | None = None,
    out: Path = Path("runs/baselines"),
) -> Path:
    """Where each submission's rows sit: norm, distance to the nearest public real activation and
    to the nearest last-token mean, fraction inside a real last-token cluster.

    Args:
        track: registered track id or a track directory.
        submissions: folder of submission folders (default: submissions/<track id>).
    """
    from baselines.diagnostics import diagnose
    from challenge.cli import _track
    from challenge.results import provenance, save_result

    tr = _track(track)
    folder = submissions or Path("submissions") / tr.spec.track_id
    rows = diagnose(tr, folder)
    doc = {"track": {"id": tr.spec.track_id, "version": tr.spec.version}, "placement": rows}
    doc["provenance"] = provenance()
    path = save_result(out, f"{tr.spec.track_id}_placement", doc)
    print(
        "| submission | norm median | nearest public (median) | nearest token mean (median) | in a token cluster |"
    )
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        if not name.startswith("_"):
            print(
                f"| {name} | {r['norm_median']:.1f} | {r['nn_public_median']:.1f} | "
                f"{r['nn_token_mean_median']:.1f} | {r['in_token_cluster']:.2f} |"
            )
    print(f"wrote {path}")
    return path


COMMANDS = {
    "train-sae": train_sae,
    "find-features": find_features,
    "diagnose-submissions": diagnose_submissions,
}
