"""Study 6: does an end-to-end SAE collapse a plateau to (nearly) one point?

The seed's question: if it does not matter to the model where in a plateau an activation lies,
an SAE trained on the model's output (e2e, Braun et al. 2024) has no reason to keep the
distinction, and could map all activations of one plateau to nearly one point. Measured on
pairs of activations ``(a, b)`` in the same plateau and across a boundary, by the *collapse
ratio* ``|SAE(a) - SAE(b)| / |a - b|`` for the e2e SAE and for the local TopK SAE with the same
dictionary size and k (matched L0); ratio 1 = distances kept, 0 = collapsed to one point.

Pairs, every path through ``PerturbationEngine.curves`` (``challenge.studies.trace``):

- **path pairs**: along real-to-real paths ``x_s`` (a context activation to a held-out real
  activation, in the context's prompt), ``(x_0, x_s)`` for the steps before the path's KL from
  ``x_0`` first reaches ``edge_kl`` (same plateau) and for the steps after it where the KL is at
  or above ``edge_kl`` (across a boundary);
- **real pairs**: a context activation and a held-out real activation of another prompt (its
  ``n_near`` nearest and ``n_far`` random ones); same plateau when the KL along the straight
  path between them, in the context's prompt, stays below ``edge_kl`` at every step; across a
  boundary when the KL at the partner is at or above it (pairs whose path leaves the plateau and
  comes back are neither, and are counted).

Intervals are percentile bootstraps that resample contexts (every pair of a context together).
The *contrast* ``median ratio (same plateau) / median ratio (across)`` is below 1 when an SAE
shrinks within-plateau distances more than distances across a boundary, which is what a
plateau-collapsing map does; the e2e vs local difference of the same-plateau ratio is paired
(same pairs).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from challenge import bootstrap, checks
from challenge import metrics as M
from challenge.paths import linear_path
from challenge.results import Result
from challenge.rng import generator
from challenge.schemas import JSON_CONFIG
from challenge.studies._common import StudyEnv, as_env, finish, trace

NAME = "sae_collapse"
GROUPS = ("within", "across")


@dataclass
class SAECollapseConfig:
    """Study 6: collapse ratio of e2e vs local SAE reconstructions within and across plateaus."""

    __pydantic_config__ = JSON_CONFIG

    e2e_sae: str | None = None
    """e2e SAE directory (SAELens format); None: the track's e2e SAE with E2EConfig's defaults
    (trained and cached when missing)"""
    sae: str | None = None
    """local SAE directory; None: the track's local TopK SAE with the e2e SAE's n_latents and k,
    trained on the public split's last position (trained and cached when missing)"""
    n_paths: int = 64
    """path pairs: real-to-real paths"""
    path_steps: int = 21
    """points along each path, endpoints included (>= 3)"""
    n_contexts: int = 128
    """real pairs: context activations"""
    n_near: int = 2
    """real pairs: nearest held-out activations per context"""
    n_far: int = 2
    """real pairs: random held-out activations per context"""
    pair_steps: int = 11
    """points along each real pair's path, endpoints included (>= 2)"""
    edge_kl: float = 0.1
    """KL (nats) that marks a plateau's edge (as in study 5)"""
    n_boot: int = 1000
    """bootstrap resamples of the contexts"""
    seed: int = 0
    """run seed (streams sae_collapse.*)"""

    def __post_init__(self) -> None:
        for f in ("n_paths", "n_contexts", "n_boot"):
            checks.integer(getattr(self, f), f, minimum=1)
        checks.integer(self.n_far, "n_far", minimum=0)
        # every context needs a partner: n_near + n_far >= 1
        checks.integer(self.n_near, "n_near", minimum=0 if self.n_far else 1)
        checks.integer(self.path_steps, "path_steps", minimum=3)
        checks.integer(self.pair_steps, "pair_steps", minimum=2)
        checks.number(self.edge_kl, "edge_kl", positive=True)
        checks.integer(self.seed, "seed", minimum=0)


@dataclass
class Interval:
    """A statistic with its 95% percentile bootstrap interval."""

    __pydantic_config__ = JSON_CONFIG

    value: float | None
    lo: float | None
    hi: float | None
    n: int
    """pairs it was computed on"""

    @classmethod
    def of(cls, est: bootstrap.Estimate) -> Interval:
        """From a :func:`challenge.bootstrap.bootstrap` estimate; ``None`` when it had no rows."""
        if est.n == 0:
            return cls(None, None, None, 0)
        return cls(est.value, est.lo, est.hi, est.n)


@dataclass
class SAECollapseHeadline:
    """Collapse ratios |SAE(a) - SAE(b)| / |a - b| (median over pairs), keyed
    ``<source>.<group>.<sae>`` with source ``path`` / ``real``, group ``within`` / ``across``,
    sae ``e2e`` / ``local``; contrasts within / across per source and SAE."""

    __pydantic_config__ = JSON_CONFIG

    ratio: dict[str, dict[str, dict[str, Interval]]]
    """median collapse ratio per source, group and SAE"""
    contrast: dict[str, dict[str, Interval]]
    """median ratio within / median ratio across, per source and SAE (< 1: within-plateau
    distances shrink more)"""
    e2e_minus_local_within: dict[str, Interval]
    """per source: median over same-plateau pairs of (e2e ratio - local ratio), paired"""


@dataclass
class SAECollapseResult(Result):
    """Study 6's result; ``detail``: per source the pair counts, distance summaries, ratios by
    distance tercile, and the SAEs' descriptions."""

    __pydantic_config__ = JSON_CONFIG

    kind: Literal["sae_collapse"]
    config: SAECollapseConfig
    headline: SAECollapseHeadline


def get_saes(env: StudyEnv, cfg: SAECollapseConfig) -> dict:
    """``{"e2e": ..., "local": ...}``: given directories, or the track's (trained when missing)."""
    from challenge.sae import SAEConfig, load_sae, track_sae
    from challenge.sae.e2e import E2EConfig
    from challenge.sae.e2e_track import track_e2e_sae

    if cfg.e2e_sae is not None:
        e2e = load_sae(cfg.e2e_sae)
    else:
        e2e = track_e2e_sae(env.track, E2EConfig(), engine=env.eng)
    if cfg.sae is not None:
        local = load_sae(cfg.sae)
    else:
        lcfg = SAEConfig(n_latents=e2e.n_latents, k=e2e.k, positions="last")
        local = track_sae(env.track, lcfg, lm=env.lm, progress=False)
    return {"e2e": e2e, "local": local}


@torch.no_grad()
def reconstruct(sae, x: torch.Tensor) -> torch.Tensor:
    flat = x.reshape(-1, x.shape[-1]).float()
    return torch.cat([sae(flat[i : i + 4096]) for i in range(0, len(flat), 4096)]).reshape(x.shape)


def path_pairs(env, cfg) -> dict[str, np.ndarray]:
    """(a, b) pairs along real-to-real paths: a = x_0, b = x_s; group, context id."""
    tr = env.track
    g = generator(cfg.seed, "sae_collapse.paths")
    ctx_t, ctx_a, held = tr.tokens("context"), tr.acts("context"), tr.acts("heldout")
    idx = torch.randperm(len(ctx_a), generator=g)[: cfg.n_paths]
    tgt = held[torch.randperm(len(held), generator=g)[: len(idx)]]
    X = linear_path(ctx_a[idx], tgt, cfg.path_steps)
    kl = trace(env.eng, ctx_t[idx], X)["kl"]  # [B, S] from x_0
    B, S = kl.shape
    hit = kl >= cfg.edge_kl
    first = np.where(hit.any(1), hit.argmax(1), S)
    steps = np.arange(S)[None, :].repeat(B, 0)
    within = (steps >= 1) & (steps < first[:, None])
    across = (steps >= first[:, None]) & hit
    rows, cols = np.nonzero(within | across)
    return {
        "a": X[rows, 0].numpy(),
        "b": X[rows, cols].numpy(),
        "group": np.where(within[rows, cols], "within", "across"),
        "context": rows,
        "kl": kl[rows, cols],
        "first_crossing": first,
    }


def real_pairs(env, cfg) -> dict[str, np.ndarray]:
    """(a, b) pairs of real activations of distinct prompts: a context activation and held-out
    activations (nearest and random), classified by the KL along the path between them."""
    tr = env.track
    g = generator(cfg.seed, "sae_collapse.real_pairs")
    ctx_t, ctx_a, held = tr.tokens("context"), tr.acts("context"), tr.acts("heldout")
    idx = torch.randperm(len(ctx_a), generator=g)[: cfg.n_contexts]
    a = ctx_a[idx]
    dist = torch.cdist(a.double(), held.double())
    near = dist.topk(cfg.n_near, dim=1, largest=False).indices if cfg.n_near else None
    far = torch.randint(len(held), (len(idx), cfg.n_far), generator=g)
    partners = torch.cat([p for p in (near, far) if p is not None], 1)  # [C, P]
    kind = np.array(["near"] * cfg.n_near + ["random"] * cfg.n_far)
    C, P = partners.shape
    A = a.repeat_interleave(P, 0)
    Bp = held[partners.reshape(-1)]
    kl = trace(env.eng, ctx_t[idx].repeat_interleave(P, 0), linear_path(A, Bp, cfg.pair_steps))[
        "kl"
    ]
    within = (kl < cfg.edge_kl).all(1)
    across = kl[:, -1] >= cfg.edge_kl
    keep = within | across
    return {
        "a": A.numpy()[keep],
        "b": Bp.numpy()[keep],
        "group": np.where(within, "within", "across")[keep],
        "context": np.repeat(np.arange(C), P)[keep],
        "kl": kl[keep, -1],
        "partner": np.tile(kind, C)[keep],
        "n_neither": int((~keep).sum()),
    }


def analyse(pairs: dict, saes: dict, cfg) -> tuple[dict, dict, dict]:
    """Ratios, contrasts and the paired e2e - local difference for one source of pairs."""
    a, b = torch.from_numpy(pairs["a"]), torch.from_numpy(pairs["b"])
    d_x = (a - b).double().norm(dim=-1).numpy()
    ratios = {}
    for name, sae in saes.items():
        d = (reconstruct(sae, a) - reconstruct(sae, b)).double().norm(dim=-1).numpy()
        ratios[name] = np.divide(d, d_x, out=np.full_like(d, np.nan), where=d_x > 0)
    grp, ctx = pairs["group"], pairs["context"]
    boot = {"n_boot": cfg.n_boot, "seed": cfg.seed}
    ratio, contrast = {}, {}
    for group in GROUPS:
        m = (grp == group) & np.isfinite(d_x) & (d_x > 0)
        ratio[group] = {
            n: Interval.of(bootstrap.bootstrap(np.median, r[m], groups=ctx[m], **boot))
            for n, r in ratios.items()
        }
    ok = d_x > 0
    for name, r in ratios.items():

        def con(r, g):
            w, x = r[g == "within"], r[g == "across"]
            return np.median(w) / np.median(x) if len(w) and len(x) else np.nan

        contrast[name] = Interval.of(
            bootstrap.bootstrap(con, r[ok], grp[ok], groups=ctx[ok], **boot)
        )
    w = (grp == "within") & ok
    diff = Interval.of(
        bootstrap.bootstrap(np.median, ratios["e2e"][w] - ratios["local"][w], groups=ctx[w], **boot)
    )
    # ratios by distance tercile (pooled groups), so that within and across compare at equal
    # distances where they overlap
    edges = np.quantile(d_x[ok], [0, 1 / 3, 2 / 3, 1]) if ok.any() else np.zeros(4)
    terciles = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        band = ok & (d_x >= lo) & (d_x <= hi)
        terciles.append({
            "distance": [float(lo), float(hi)],
            **{f"{g}_{n}": M.summarise(r[band & (grp == g)]) for g in GROUPS
               for n, r in ratios.items()},
        })  # fmt: skip
    detail = {
        "n_pairs": {g: int((grp == g).sum()) for g in GROUPS},
        "n_contexts": int(len(np.unique(ctx))),
        "distance": {g: M.summarise(d_x[grp == g]) for g in GROUPS},
        "ratio_summary": {
            f"{g}_{n}": M.summarise(r[grp == g]) for g in GROUPS for n, r in ratios.items()
        },  # fmt: skip
        "by_distance_tercile": terciles,
    }
    arrays = {"distance": d_x, "group": grp.astype("U6")} | {f"ratio_{n}": r for n, r in
                                                              ratios.items()}  # fmt: skip
    return {"ratio": ratio, "contrast": contrast, "diff": diff}, detail, arrays


def run(
    cfg: SAECollapseConfig, env: StudyEnv | str | Path, *, out: Path, draw: bool = True
) -> SAECollapseResult:
    """Study 6 on ``env`` (a study environment, or a track id / directory to load); writes
    ``<out>/sae_collapse.{json,npz}`` (+ ``.png`` when ``draw``)."""
    from challenge.sae import describe

    env = as_env(env)
    saes = get_saes(env, cfg)
    sources = {"path": path_pairs(env, cfg), "real": real_pairs(env, cfg)}
    head = {"ratio": {}, "contrast": {}, "diff": {}}
    detail: dict = {"saes": {k: describe(s) for k, s in saes.items()}}
    arrays = {}
    for src, pairs in sources.items():
        h, d, arr = analyse(pairs, saes, cfg)
        head["ratio"][src], head["contrast"][src], head["diff"][src] = (
            h["ratio"], h["contrast"], h["diff"])  # fmt: skip
        detail[src] = d | {k: pairs[k] for k in ("n_neither",) if k in pairs}
        if "partner" in pairs:
            detail[src]["within_by_partner"] = {
                k: int(((pairs["partner"] == k) & (pairs["group"] == "within")).sum())
                for k in np.unique(pairs["partner"])
            }
        arrays |= {f"{src}_{k}": v for k, v in arr.items()}
    headline = SAECollapseHeadline(
        ratio=head["ratio"], contrast=head["contrast"], e2e_minus_local_within=head["diff"]
    )
    return finish(
        env, cfg, NAME, SAECollapseResult, headline, detail, arrays, plot=plot, out=out, draw=draw
    )


def plot(res: SAECollapseResult, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from challenge.plots import save_figure

    arr = res.arrays
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, src in zip(axes[:2], ("path", "real"), strict=True):
        d, g = arr[f"{src}_distance"], arr[f"{src}_group"]
        for i, (name, marker) in enumerate((("local", "o"), ("e2e", "x"))):
            for group, color in (("within", f"C{2 * i}"), ("across", f"C{2 * i + 1}")):
                m = g == group
                ax.scatter(d[m], arr[f"{src}_ratio_{name}"][m], s=6, alpha=0.4, marker=marker,
                           color=color, label=f"{name}, {group}")  # fmt: skip
        ax.axhline(1, color="k", lw=0.7, ls=":")
        ax.set_xlabel("|a - b|")
        ax.set_ylabel("|SAE(a) - SAE(b)| / |a - b|")
        ax.set_title(f"{src} pairs", fontsize=9)
        ax.legend(fontsize=7, markerscale=2)
        ax.grid(alpha=0.3)
    ax = axes[2]
    h = res.headline
    labels, vals, los, his = [], [], [], []
    for src in ("path", "real"):
        for group in GROUPS:
            for name in ("local", "e2e"):
                iv = h.ratio[src][group][name]
                labels.append(f"{src}\n{group}\n{name}")
                vals.append(iv.value if iv.value is not None else np.nan)
                los.append(iv.lo if iv.lo is not None else np.nan)
                his.append(iv.hi if iv.hi is not None else np.nan)
    x = np.arange(len(vals))
    v = np.array(vals)
    ax.bar(x, v, color=["C0" if "local" in lab else "C3" for lab in labels], alpha=0.7)
    ax.errorbar(x, v, yerr=[v - np.array(los), np.array(his) - v], fmt="none", color="k")
    ax.set_xticks(x, labels, fontsize=6)
    ax.axhline(1, color="k", lw=0.7, ls=":")
    ax.set_ylabel("median collapse ratio (95% CI)")
    ax.set_title("collapse ratio: local vs e2e SAE", fontsize=9)
    fig.suptitle(f"Study 6: do SAEs collapse plateaus? ({res.track.id})", fontsize=10)
    return save_figure(fig, path, dpi=100)
