"""``plateau study-training``: train a model with log-spaced checkpoints, then measure plateaus,
MLP boundaries and local complexity at every checkpoint (``measure``); resumable (training from
``last.pt``, measurements from their per-checkpoint cache). Writes
``<out>/training_<model>.{json,npz,png}``; checkpoints and caches under ``<out>/<model>/``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from challenge.results import Result, load_result, save_result, to_jsonable
from challenge.schemas import JSON_CONFIG
from challenge.studies._common import StudyEnv, finish
from challenge.studies.training import measure as ME
from challenge.studies.training import train as T
from challenge.studies.training.config import TrainingConfig

MEASURE_FIELDS = ("n_points", "n_directions", "n_paths", "n_steps", "window", "lc_radius",
                  "lc_directions", "n_null", "n_boot", "seed", "prompt_len")  # fmt: skip
"""Config fields a cached checkpoint measurement depends on (besides the checkpoint)."""


@dataclass
class CheckpointRow:
    """One checkpoint's numbers (real = held-out activations, gaussian = N(mu, Sigma) points;
    ``*_lo``/``*_hi``: 95 % bootstrap interval of the paired difference real - gaussian)."""

    __pydantic_config__ = JSON_CONFIG

    step: int
    train_loss: float
    test_loss: float
    train_acc: float | None
    """modadd only"""
    test_acc: float | None
    """modadd only"""
    radius_real: float | None
    """mean log plateau radius / median write norm at real points"""
    radius_gaussian: float | None
    radius_diff_lo: float | None
    radius_diff_hi: float | None
    sharpness_real: float | None
    """P2 sharpness on KL at real points"""
    sharpness_gaussian: float | None
    sharpness_diff_lo: float | None
    sharpness_diff_hi: float | None
    coincidence_real: float | None
    """fraction of real-to-real paths whose busiest MLP-flip step is within ``window`` steps
    of the KL max-slope step"""
    coincidence_lo: float | None
    coincidence_hi: float | None
    coincidence_chance: float | None
    """the rate's exact mean under the step-shuffle null (another path's max-slope step)"""
    coincidence_p: float | None
    flips_per_path_real: float | None
    lc_real: float | None
    """local complexity: MLP units cut by the cross-polytope around real points (mean)"""
    lc_gaussian: float | None
    lc_diff_lo: float | None
    lc_diff_hi: float | None


@dataclass
class TrainingHeadline:
    """The per-checkpoint table and the training's landmarks."""

    __pydantic_config__ = JSON_CONFIG

    model: str
    grok_step: int | None
    """modadd: first evaluated step with test accuracy >= 0.95 (None: never; lm: None)"""
    train_seconds: float
    measure_seconds: float
    """measurement time of the checkpoints measured in this run (cached ones excluded)"""
    rows: list[CheckpointRow]


@dataclass
class TrainingResult(Result):
    """The training study's result; ``detail["checkpoints"]`` holds every checkpoint's document."""

    __pydantic_config__ = JSON_CONFIG

    kind: Literal["training"]
    config: TrainingConfig
    headline: TrainingHeadline


def _row(doc: dict, hist: dict) -> CheckpointRow:
    b = doc["boundaries"]["real"]["coincidence"]
    r, s, lc = doc["radius.mean_log"], doc["p2.sharpness_kl"], doc["local_complexity"]
    return CheckpointRow(
        step=doc["step"], train_loss=hist["train_loss"], test_loss=hist["test_loss"],
        train_acc=hist.get("train_acc"), test_acc=hist.get("test_acc"),
        radius_real=r["real"], radius_gaussian=r["gaussian"], radius_diff_lo=r["lo"], radius_diff_hi=r["hi"],
        sharpness_real=s["real"], sharpness_gaussian=s["gaussian"], sharpness_diff_lo=s["lo"], sharpness_diff_hi=s["hi"],
        coincidence_real=b["rate"], coincidence_lo=b["lo"], coincidence_hi=b["hi"],
        coincidence_chance=b["chance"], coincidence_p=b["p_value"],
        flips_per_path_real=doc["boundaries"]["real"]["flips_per_path"]["mean"],
        lc_real=lc["real"], lc_gaussian=lc["gaussian"], lc_diff_lo=lc["lo"], lc_diff_hi=lc["hi"],
    )  # fmt: skip


def measure_all(cfg: TrainingConfig, folder: Path, steps: list[int], toks, log=print):
    """Every checkpoint's measurement, from ``<folder>/measure/step_<step>.{json,npz}`` when it
    was made with the same measurement fields, else measured now and cached; returns
    (documents, arrays, seconds spent measuring)."""
    key = to_jsonable({f: getattr(cfg, f) for f in MEASURE_FIELDS})
    docs, arrs, measured = [], [], 0.0
    for step in steps:
        cache = folder / "measure" / f"step_{step:06d}.json"
        if cache.exists() and load_result(cache)[0].get("key") == key:
            doc, arr = load_result(cache)
        else:
            tm = time.perf_counter()
            model = T.load_checkpoint(cfg, folder / "checkpoints", step)
            doc, arr = ME.measure(cfg, model, step, toks)
            doc = to_jsonable(doc | {"key": key, "seconds": round(time.perf_counter() - tm, 2)})
            save_result(cache.parent, cache.stem, doc, arr)
            measured += time.perf_counter() - tm
            log(f"measured {cfg.model} step {step} in {doc['seconds']} s")
        docs.append(doc)
        arrs.append(arr)
    return docs, arrs, measured


def run(cfg: TrainingConfig, *, out: Path, draw: bool = True, log=print) -> TrainingResult:
    """Train (or resume), measure every checkpoint (or read its cache), write the result."""
    t0 = time.perf_counter()
    torch.set_num_threads(1)
    folder = Path(out) / cfg.model
    info = T.train(cfg, folder / "checkpoints", log=log)
    toks = ME.prompts(cfg)
    docs, arrs, measured = measure_all(cfg, folder, info["checkpoints"], toks, log)
    hist = {h["step"]: h for h in info["history"]}
    rows = [_row(d, hist[d["step"]]) for d in docs]
    head = TrainingHeadline(
        model=cfg.model,
        grok_step=T.grok_step(info["history"]) if cfg.model == "modadd" else None,
        train_seconds=info["seconds"],
        measure_seconds=round(measured, 1),
        rows=rows,
    )
    arrays = {k: np.stack([a[k] for a in arrs]) for k in arrs[0]} if arrs else {}
    arrays["steps"] = np.array(info["checkpoints"])
    last = T.load_checkpoint(cfg, folder / "checkpoints", info["checkpoints"][-1])
    track, lm, eng = ME.checkpoint_env(cfg, last, info["checkpoints"][-1], toks)
    detail = {
        "question": "Do plateaus (radius, P2 sharpness at real vs N(mu, Sigma) points), the "
        "coincidence of output jumps with bunched MLP flips, and local complexity change over "
        "training; before, at or after grokking; and at random init?",
        "write_hook": ME.WRITE,
        "read_hook": ME.READ,
        "history": info["history"],
        "steps_per_second": info["steps_per_second"],
        "checkpoints": docs,
    }
    env = StudyEnv(track, lm, eng, t0)
    name = f"training_{cfg.model}"
    return finish(
        env,
        cfg,
        name,
        TrainingResult,
        head,
        detail,
        arrays,
        plot,
        "training",
        out=Path(out),
        draw=draw,
    )


def _col(rows: list[CheckpointRow], name: str) -> np.ndarray:
    return np.array([np.nan if getattr(r, name) is None else getattr(r, name) for r in rows], float)


def plot(res: TrainingResult, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from challenge.plots import save_figure

    h, rows = res.headline, res.headline.rows
    x = _col(rows, "step")
    hist = res.detail["history"]
    hx = np.array([e["step"] for e in hist], float)
    fig, axes = plt.subplots(2, 3, figsize=(16, 8.5), sharex=True)
    ax = axes[0, 0]
    if h.model == "modadd":
        for k, c in (("train_acc", "C0"), ("test_acc", "C3")):
            ax.plot(hx, [e[k] for e in hist], color=c, label=k)
        ax.set_ylabel("accuracy")
    else:
        for k, c in (("train_loss", "C0"), ("test_loss", "C3")):
            ax.plot(hx, [e[k] for e in hist], color=c, label=k)
        ax.set_ylabel("loss (nats / byte)")
    panels = [
        (axes[0, 1], "radius", "mean log radius / write norm"),
        (axes[0, 2], "sharpness", "P2 sharpness (KL)"),
        (axes[1, 1], "lc", "local complexity (units cut)"),
    ]
    for ax2, key, label in panels:
        ax2.plot(x, _col(rows, f"{key}_real"), "o-", ms=3, color="C0", label="real")
        ax2.plot(x, _col(rows, f"{key}_gaussian"), "s-", ms=3, color="C3", label="N(mu, Sigma)")
        ax2.set_ylabel(label)
    ax = axes[1, 0]
    ax.plot(x, _col(rows, "radius_real") - _col(rows, "radius_gaussian"), "o-", ms=3, color="k",
            label="radius real - Gaussian")  # fmt: skip
    ax.fill_between(
        x, _col(rows, "radius_diff_lo"), _col(rows, "radius_diff_hi"), color="k", alpha=0.15
    )
    ax.axhline(0, color="k", lw=0.7, ls="--")
    ax.set_ylabel("paired difference (95 % CI)")
    ax = axes[1, 2]
    ax.plot(
        x, _col(rows, "coincidence_real"), "o-", ms=3, color="C0", label="jump at busiest flips"
    )
    ax.fill_between(
        x, _col(rows, "coincidence_lo"), _col(rows, "coincidence_hi"), color="C0", alpha=0.15
    )
    ax.plot(x, _col(rows, "coincidence_chance"), "--", color="grey", label="step-shuffle chance")
    ax.set_ylabel("coincidence rate (real paths)")
    for ax in axes.ravel():
        ax.set_xscale("symlog", linthresh=1)
        if h.grok_step is not None:
            ax.axvline(h.grok_step, color="green", lw=0.8, ls=":", label=f"grok {h.grok_step}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[1]:
        ax.set_xlabel("training step (symlog; 0 = init)")
    fig.suptitle(
        f"Plateaus over training: {h.model} (write {res.detail['write_hook']}, last position)",
        fontsize=10,
    )
    return save_figure(fig, path, dpi=100)


__all__ = ["CheckpointRow", "TrainingHeadline", "TrainingResult", "measure_all", "plot", "run"]
