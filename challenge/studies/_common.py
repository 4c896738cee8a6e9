"""What the studies share: a loaded track with its model and engine (:class:`StudyEnv`),
:func:`trace` (paths through :meth:`PerturbationEngine.curves`, reduced to per-step statistics
chunk by chunk so that nothing large is kept), templated prompt activations, small statistics,
and :func:`finish`, the one writer of a study's result (JSON + npz + PNG)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from challenge import hooks
from challenge.activations import capture
from challenge.divergence import js_rows
from challenge.engine import PerturbationEngine
from challenge.errors import ConfigError
from challenge.results import Result, TrackRef, provenance

R = TypeVar("R", bound=Result)


@dataclass
class StudyEnv:
    """A loaded track, its model and the engine at the track's write / read hooks."""

    track: Any
    lm: Any
    eng: PerturbationEngine
    t0: float


def make_env(track, lm, progress: bool = False) -> StudyEnv:
    """A study environment from a loaded ``Track`` and ``LoadedModel`` (tests, notebooks)."""
    return StudyEnv(track, lm, track.engine(lm, progress=progress), time.perf_counter())


def load_env(track: str | Path, progress: bool = False) -> StudyEnv:
    """Track (registered id, built into the cache when missing, or a directory), model, engine."""
    from challenge.models import load_model
    from challenge.track import resolve_track

    t0 = time.perf_counter()
    tr = resolve_track(track)
    lm = load_model(tr.spec.model)
    return StudyEnv(tr, lm, tr.engine(lm, progress=progress), t0)


def as_env(env: StudyEnv | str | Path) -> StudyEnv:
    """``env`` itself, or the study environment of a track (registered id or directory)."""
    return env if isinstance(env, StudyEnv) else load_env(env)


@torch.no_grad()
def trace(
    eng: PerturbationEngine,
    tokens: Int[Tensor, "batch pos"],
    paths: Float[Tensor, "batch step d_model"],
    *,
    capture_mlp_pre: bool = False,
    extra: Callable[[dict[str, Tensor], Tensor], dict[str, Tensor]] | None = None,
    max_rows: int | None = None,
) -> dict[str, np.ndarray]:
    """Run ``paths`` (written at the engine's write point, in the ``tokens`` contexts) through
    :meth:`PerturbationEngine.curves` (a ``reduce`` hook; ``max_rows`` curve-steps per forward
    call), and return ``[B, S]`` arrays (``S - 1`` for per-step ones):

    - ``l2``, ``kl``, ``js``, ``ce``, ``top1_changed``: against step 0, as ``engine.curves``
      computes them (``challenge.engine.distribution_divergences``);
    - ``top1``: the argmax token per step; ``step_js``: JS between consecutive steps;
    - with ``capture_mlp_pre``: ``flips [B, S-1, layers]``, the number of MLP units per layer
      whose gate pre-activation changes sign between consecutive steps (the raw pre-activations
      ``[B, S, layers, d_mlp]`` are reduced chunk by chunk, never kept);
    - anything ``extra(out, logp)`` returns (``out`` is the forward dict, ``logp`` the
      log-softmax of its logits ``[b, S, V]``), concatenated over chunks.
    """
    tokens = torch.as_tensor(tokens)
    paths = torch.as_tensor(paths, dtype=torch.float32)
    if paths.ndim != 3 or tokens.shape[0] != paths.shape[0]:
        raise ConfigError(
            f"tokens [B,T] and paths [B,S,d] expected, got {tuple(tokens.shape)}, {tuple(paths.shape)}",
            field="paths",
        )
    S = paths.shape[1]

    def reduce(out: dict[str, Tensor]) -> dict[str, Tensor]:
        logp = torch.log_softmax(out["logits"].float(), dim=-1)
        red = {"top1": logp.argmax(-1)}
        if S > 1:
            red["step_js"] = torch.stack([js_rows(lp[:-1], lp[1:]) for lp in logp])
        if capture_mlp_pre:
            pos = out["mlp_pre"] > 0  # [b, S, layers, d_mlp]
            red["flips"] = (pos[:, 1:] != pos[:, :-1]).sum(-1).to(torch.int32)
        if extra is not None:
            red |= extra(out, logp)
        return red

    c = eng.curves(
        tokens,
        paths,
        capture_mlp_pre=capture_mlp_pre,
        keep_mlp_pre=False,
        reduce=reduce,
        max_rows=max_rows,
    )
    base = {k: c[k] for k in ("l2", "kl", "js", "ce", "top1_changed")}
    return base | c.extra


def write_point_acts(
    eng: PerturbationEngine, tokens: Int[Tensor, "n pos"]
) -> Float[Tensor, "n d_model"]:
    """Clean activations at the engine's write point, last position."""
    return eng.clean(torch.as_tensor(tokens), read=False)["write"].cpu()


@dataclass
class TemplateSet:
    """A templated family's prompts with their write-point activations."""

    family: str
    tokens: Tensor  # [n, T]
    acts: Tensor  # [n, d] at the write point, last position
    labels: dict[str, np.ndarray]
    n_dropped: int


def template_set(env: StudyEnv, family: str, seed: int = 0) -> TemplateSet:
    """A templated family's prompts (modal token length), tokenised, with write-point acts."""
    from challenge.prompts import template_windows

    tw = template_windows(family, env.lm.tokenizer, seed=seed)
    toks = torch.from_numpy(tw.tokens)
    return TemplateSet(family, toks, write_point_acts(env.eng, toks), tw.labels, tw.n_dropped)


def clean_logp(
    eng: PerturbationEngine, tokens: Int[Tensor, "n pos"], acts: Float[Tensor, "n d_model"]
) -> Float[Tensor, "n V"]:
    """Next-token log-probabilities of the unperturbed prompts (each writes its own clean
    activation: a one-point path through the engine)."""
    outs = []
    with torch.no_grad():
        for i in range(0, len(tokens), 256):
            lg = eng.forward(tokens[i : i + 256], acts[i : i + 256, None, :])["logits"][:, 0]
            outs.append(torch.log_softmax(lg.float(), dim=-1).cpu())
    return torch.cat(outs)


def same_length(d: Float[Tensor, "n d"], length: Float[Tensor, " n"]) -> Float[Tensor, "n d"]:
    """Rows of ``d`` rescaled to the given norms."""
    n = d.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return d / n * length.reshape(-1, 1)


def corr(x: np.ndarray, y: np.ndarray) -> dict[str, float | None]:
    """Pearson and Spearman correlation of two flat samples (finite pairs only)."""
    from scipy import stats

    x, y = np.asarray(x, float).ravel(), np.asarray(y, float).ravel()
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 3 or x.std() == 0 or y.std() == 0:
        return {"pearson": None, "spearman": None, "n": int(len(x))}
    return {
        "pearson": float(stats.pearsonr(x, y)[0]),
        "spearman": float(stats.spearmanr(x, y)[0]),
        "n": int(len(x)),
    }


def finish(
    env: StudyEnv,
    cfg: Any,
    name: str,
    result_cls: type[R],
    headline: Any,
    detail: dict,
    arrays: dict | None = None,
    plot: Callable[[R, Path], Any] | None = None,
    kind: str | None = None,
    *,
    out: Path,
    draw: bool = True,
) -> R:
    """Build the study's typed result (``kind`` defaults to ``name``; track, provenance with
    wall time, config) and write ``<out>/<name>.json`` (+ ``.npz``), then
    ``plot(result, <out>/<name>.png)`` when ``draw``. ``detail["plot"]`` names the PNG
    (``None`` when none is drawn); the result's ``path`` is the JSON."""
    png = Path(out) / f"{name}.png"
    draw = plot is not None and draw
    res = result_cls(
        kind=kind or name,
        config=cfg,
        headline=headline,
        detail={**detail, "plot": str(png) if draw else None},
        track=TrackRef.of(env.track),
        provenance=provenance(
            env.lm.provenance
            | {"engine": env.eng.describe(), "seed": getattr(cfg, "seed", None)}
            | {"torch_threads": torch.get_num_threads()}
            | {"wall_seconds": round(time.perf_counter() - env.t0, 1)}
        ),
        arrays=dict(arrays or {}),
    )
    res.save(Path(out), name)
    if draw:
        plot(res, png)
    return res


def resid_pre_all(
    model, tokens: Int[Tensor, "n pos"], layers: list[int], batch: int = 128
) -> dict[int, Float[Tensor, "n d_model"]]:
    """Clean ``blocks.L.hook_resid_pre`` at the last position for several layers in one pass
    per batch (for the control's covariance; no perturbation), on the CPU."""
    names = {hooks.resid_pre(L): L for L in layers}
    acts = capture(model, tokens, list(names), positions="last", batch_size=batch, device="cpu")
    return {L: acts[n] for n, L in names.items()}
