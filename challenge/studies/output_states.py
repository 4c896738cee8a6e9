"""Study 1: discrete output states on templated prompts, and whether they predict plateaus.

On a restricted templated distribution (``challenge.prompts`` families: a person described by
an adjective, an object painted a colour, a city's weather) the model's next-token
distributions are clustered with k-means; the number of clusters ``k`` is the one with the
largest silhouette score over ``k_min..k_max`` (Euclidean distance between Hellinger
embeddings ``sqrt(p)`` restricted to the union of every prompt's top tokens plus one "rest"
bin, so the distance is the Hellinger distance up to the restriction).

Prompts are cut after the family's last slot (``"My {relation} is a very {adjective}"``), so
the varying word is the last token and its activation at the write point carries it. Pairs
(A, B) are drawn among prompts sharing every token but the last: B's activation written into
A's context is then exactly B's run, so the interpolation's endpoint is B's own next-token
distribution. (With the full template the varying words sit earlier in the prompt and the
last position at an early write point hardly depends on them: writing B's activation into A's
context leaves A's output, see docs/studies.md; ``cut_at_last_slot=False`` runs that variant
and reports the endpoint fidelity.)

Prediction: same-cluster pairs stay flat, different-cluster pairs jump. Per pair, along the
linear interpolation at the write point (the engine's write hook), with ``s_i = sqrt(JS)``
between consecutive steps (a metric on distributions):

- ``max_step_js``: the largest consecutive-step JS (nats; absolute size of the biggest jump);
- ``concentration``: ``max_i s_i / mean_i s_i``, how much of the output's path length one step
  carries (1 = the output moves at constant speed, ``S - 1`` = all of it in one step; the
  output-space analogue of P2 sharpness, but free of the total change);
- ``js_end`` (total change), P2 sharpness of the JS and L2 curves, and the number of changes of
  the nearest-centroid output state along the path.

A path *jumps* when ``concentration >= jump_concentration`` (default 3: one step moves the
output at least three times as far as the average step) **and** its largest step changes the
output by ``JS >= jump_js``; it is flat otherwise. Agreement with the prediction "different
cluster": accuracy, balanced accuracy, Cohen's kappa, and the threshold-free ROC AUC of
``concentration`` (shape) and of ``max_step_js`` (size, which also grows with the total change).
The silhouette of the chosen ``k`` is compared with k-means on a Gaussian with the embeddings'
mean and covariance (no discrete states), to say whether the clusters are more than a partition.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from challenge import checks
from challenge import metrics as M
from challenge.divergence import js_rows
from challenge.errors import ConfigError
from challenge.paths import linear_path
from challenge.results import Result
from challenge.schemas import JSON_CONFIG
from challenge.studies._common import (
    StudyEnv,
    as_env,
    clean_logp,
    finish,
    trace,
    write_point_acts,
)

NAME = "output_states"


@dataclass
class OutputStatesConfig:
    """Study 1: k-means output states of templated prompts vs plateaus of interpolations."""

    __pydantic_config__ = JSON_CONFIG

    families: tuple[str, ...] = ("person_adjective", "object_color", "city_weather")
    """templated prompt families (challenge.prompts.TEMPLATE_FAMILIES)"""
    cut_at_last_slot: bool = True
    """cut prompts after the last slot, so the varying word is the last token"""
    k_min: int = 2
    """smallest number of k-means clusters tried (>= 2)"""
    k_max: int = 12
    """largest number of k-means clusters tried (capped at the number of prompts - 1)"""
    top_tokens: int = 20
    """each prompt's top tokens whose union spans the Hellinger embedding"""
    n_pairs: int = 80
    """pairs per group (same cluster, different cluster) per family"""
    n_steps: int = 41
    """points along each interpolation, endpoints included (>= 2)"""
    jump_concentration: float = 3.0
    """a jump: one step moves the output >= this many times the mean step (in sqrt(JS))"""
    jump_js: float = 1e-3
    """... and changes the distribution by JS >= this (nats; ln 2 = 0.69)"""
    seed: int = 0
    """run seed: k-means, the Gaussian silhouette null and the pair draws"""

    def __post_init__(self) -> None:
        from challenge.prompts import TEMPLATE_FAMILIES

        checks.sequence(self.families, "families", choices=TEMPLATE_FAMILIES, nonempty=True)
        checks.boolean(self.cut_at_last_slot, "cut_at_last_slot")
        checks.integer(self.k_min, "k_min", minimum=2)
        checks.integer(self.k_max, "k_max", minimum=self.k_min)
        checks.integer(self.top_tokens, "top_tokens", minimum=1)
        checks.integer(self.n_pairs, "n_pairs", minimum=1)
        checks.integer(self.n_steps, "n_steps", minimum=2)
        checks.number(self.jump_concentration, "jump_concentration", positive=True)
        checks.number(self.jump_js, "jump_js", minimum=0)
        checks.integer(self.seed, "seed", minimum=0)


@dataclass
class Agreement:
    """How well the prediction "different cluster" matches an observed outcome (:func:`agreement`)."""

    __pydantic_config__ = JSON_CONFIG

    accuracy: float
    """fraction of pairs where prediction and outcome agree"""
    balanced_accuracy: float | None
    """mean recall of both classes (None when only one class was drawn)"""
    cohen_kappa: float | None
    """agreement beyond chance (None when only one class was drawn)"""
    n: int
    """pairs"""
    roc_auc_concentration: float | None
    """threshold-free ROC AUC of the concentration for the prediction"""
    roc_auc_max_step_js: float | None
    """ROC AUC of the largest consecutive-step JS for the prediction"""


@dataclass
class FamilyHeadline:
    """One family's numbers to cite."""

    __pydantic_config__ = JSON_CONFIG

    k: int
    """the number of output states (k with the largest silhouette)"""
    silhouette: float
    """silhouette of the chosen k"""
    silhouette_gaussian_null: float
    """silhouette of k-means with the same k on a Gaussian of the same mean / covariance"""
    fraction_jump_same: float | None
    """fraction of same-cluster pairs whose path jumps"""
    fraction_jump_different: float | None
    """fraction of different-cluster pairs whose path jumps"""
    agreement_jump: Agreement
    """prediction "different cluster" vs outcome "the path jumps" """
    agreement_state_change: float
    """accuracy of "different cluster" vs "the nearest-centroid state changes on the path" """


@dataclass
class OutputStatesHeadline:
    """Study 1's numbers to cite, per family."""

    __pydantic_config__ = JSON_CONFIG

    families: dict[str, FamilyHeadline]


@dataclass
class OutputStatesResult(Result):
    """Study 1's result; ``detail`` holds ``families`` (per-family documents) and ``pooled``."""

    __pydantic_config__ = JSON_CONFIG

    kind: Literal["output_states"]
    config: OutputStatesConfig
    headline: OutputStatesHeadline


def headline(families: list[dict]) -> OutputStatesHeadline:
    """The numbers to cite from the per-family documents."""
    return OutputStatesHeadline(
        {
            f["family"]: FamilyHeadline(
                k=f["k"],
                silhouette=f["silhouette"][str(f["k"])],
                silhouette_gaussian_null=f["silhouette_gaussian_null"],
                fraction_jump_same=f["groups"]["same"]["fraction_jump"],
                fraction_jump_different=f["groups"]["different"]["fraction_jump"],
                agreement_jump=Agreement(**f["agreement_jump"]),
                agreement_state_change=f["agreement_state_change"]["accuracy"],
            )
            for f in families
        }
    )


@dataclass
class FamilyPrompts:
    tokens: torch.Tensor
    labels: dict[str, np.ndarray]
    prefix_id: np.ndarray  # prompts with the same id share every token but the last
    n_dropped: int


def family_prompts(family: str, tokenizer, cut_at_last_slot: bool = True) -> FamilyPrompts:
    """The family's prompts (cut after the last slot, or whole), tokenised without special
    tokens, kept at the modal token length (ties to the shorter), duplicates dropped."""
    from challenge.prompts import TEMPLATE_FAMILIES, template_prompts

    fam = TEMPLATE_FAMILIES.get(family)
    if fam is None:
        raise ConfigError(f"unknown family {family!r}", field="families")
    rows = template_prompts(family)
    tpl = fam.template[: fam.template.rindex("}") + 1] if cut_at_last_slot else fam.template
    texts = [tpl.format(**{s: r[s] for s in fam.slots}) for r in rows]
    ids = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
    counts = Counter(len(t) for t in ids)
    n_tok = min(counts, key=lambda n: (-counts[n], n))
    keep, seen = [], set()
    for i, t in enumerate(ids):
        if len(t) == n_tok and tuple(t) not in seen:
            seen.add(tuple(t))
            keep.append(i)
    tokens = torch.tensor([ids[i] for i in keep], dtype=torch.long)
    labels = {k: np.array([rows[i][k] for i in keep]) for k in rows[0]}
    labels["text"] = np.array([texts[i] for i in keep])
    prefixes = {}
    prefix_id = np.array([prefixes.setdefault(tuple(ids[i][:-1]), len(prefixes)) for i in keep])
    return FamilyPrompts(tokens, labels, prefix_id, len(rows) - len(keep))


def hellinger_embedding(logp: torch.Tensor, top_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """``sqrt(p)`` on the union of each row's top tokens, plus ``sqrt(rest mass)``."""
    p = logp.exp()
    vocab = p.topk(top_tokens, dim=-1).indices.unique()
    return embed_on(p, vocab), vocab.numpy()


def embed_on(p: torch.Tensor, vocab) -> np.ndarray:
    P = p[..., torch.as_tensor(vocab)]
    rest = (1 - P.sum(-1, keepdim=True)).clamp_min(0)
    return torch.cat([P, rest], -1).sqrt().numpy().astype(np.float64)


def choose_k(X: np.ndarray, k_min: int, k_max: int, seed: int):
    """k-means for every k in range; the k with the largest silhouette score wins."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    k_max = min(k_max, len(X) - 1)
    if k_max < k_min:
        raise ConfigError(f"{len(X)} prompts cannot give {k_min} clusters", field="k_min")
    sil, fits = {}, {}
    for k in range(k_min, k_max + 1):
        km = KMeans(k, n_init=10, random_state=seed).fit(X)
        fits[k] = km
        sil[k] = float(silhouette_score(X, km.labels_)) if len(set(km.labels_)) > 1 else -1.0
    best = max(sil, key=lambda k: (sil[k], -k))
    return best, sil, fits[best]


def silhouette_null(X: np.ndarray, k: int, seed: int, draws: int = 3) -> float:
    """Mean silhouette of k-means on draws from N(mean, cov) of ``X`` (same n): the score a
    partition of a single blob gets, for comparison with the data's."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(draws):
        Z = rng.multivariate_normal(X.mean(0), np.cov(X, rowvar=False), size=len(X))
        km = KMeans(k, n_init=10, random_state=seed).fit(Z)
        out.append(silhouette_score(Z, km.labels_))
    return float(np.mean(out))


def sample_pairs(
    labels: np.ndarray, prefix_id: np.ndarray, n: int, seed: int, share_prefix: bool
) -> dict[str, np.ndarray]:
    """Up to ``n`` pairs (i, j), i != j, per group: same cluster / different cluster."""
    rng = np.random.default_rng(seed)
    i, j = np.triu_indices(len(labels), k=1)
    if share_prefix:
        ok = prefix_id[i] == prefix_id[j]
        i, j = i[ok], j[ok]
    out = {}
    for g, mask in (("same", labels[i] == labels[j]), ("different", labels[i] != labels[j])):
        idx = np.nonzero(mask)[0]
        idx = rng.choice(idx, size=min(n, len(idx)), replace=False) if len(idx) else idx
        pairs = np.stack([i[idx], j[idx]], 1)
        flip = rng.random(len(pairs)) < 0.5  # random direction A -> B
        pairs[flip] = pairs[flip][:, ::-1]
        out[g] = pairs
    return out


def agreement(predicted: np.ndarray, observed: np.ndarray, scores: dict[str, np.ndarray]) -> dict:
    """How well ``predicted`` (different cluster) matches ``observed`` (jump); ROC AUC of each
    score for ``predicted``."""
    from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score, roc_auc_score

    predicted, observed = predicted.astype(bool), observed.astype(bool)
    two = len(set(predicted.tolist())) == 2
    out = {
        "accuracy": float((predicted == observed).mean()),
        "balanced_accuracy": float(balanced_accuracy_score(predicted, observed)) if two else None,
        "cohen_kappa": float(cohen_kappa_score(predicted, observed)) if two else None,
        "n": int(len(predicted)),
    }
    for name, sc in scores.items():
        ok = np.isfinite(sc)
        out[f"roc_auc_{name}"] = (
            float(roc_auc_score(predicted[ok], sc[ok]))
            if two and len(set(predicted[ok].tolist())) == 2
            else None
        )
    return out


def concentration(step_js: np.ndarray) -> np.ndarray:
    """``max_i sqrt(JS_i) / mean_i sqrt(JS_i)`` per path (NaN for a path that never moves)."""
    s = np.sqrt(np.clip(step_js, 0, None))
    mean = s.mean(1)
    return np.divide(s.max(1), mean, out=np.full_like(mean, np.nan), where=mean > 0)


def run_family(env: StudyEnv, cfg: OutputStatesConfig, family: str) -> tuple[dict, dict]:
    eng, tok = env.eng, env.lm.tokenizer
    fp = family_prompts(family, tok, cfg.cut_at_last_slot)
    acts = write_point_acts(eng, fp.tokens)
    logp = clean_logp(eng, fp.tokens, acts)
    X, vocab = hellinger_embedding(logp, cfg.top_tokens)
    k, sil, km = choose_k(X, cfg.k_min, cfg.k_max, cfg.seed)
    lab = km.labels_
    cent = torch.from_numpy(km.cluster_centers_)
    radius = np.array([np.linalg.norm(X[lab == c] - km.cluster_centers_[c], axis=1).max()
                       for c in range(k)])  # fmt: skip
    top1 = logp.argmax(-1).numpy()
    clusters = []
    for c in range(k):
        m = lab == c
        cnt = Counter(tok.decode([int(t)]) for t in top1[m]).most_common(3)
        purity = {
            key: float(Counter(fp.labels[key][m]).most_common(1)[0][1] / m.sum())
            for key in fp.labels
            if key.endswith("_group") or key == "sentiment"
        }
        clusters.append({"size": int(m.sum()), "top1_tokens": cnt, "label_purity": purity})

    pairs = sample_pairs(lab, fp.prefix_id, cfg.n_pairs, cfg.seed, cfg.cut_at_last_slot)
    allp = np.concatenate([pairs["same"], pairs["different"]])
    if len(allp) == 0:
        raise ConfigError(f"family {family}: no pairs to interpolate", field="n_pairs")
    group = np.array([0] * len(pairs["same"]) + [1] * len(pairs["different"]))
    a, b = allp[:, 0], allp[:, 1]
    vocab_t = torch.from_numpy(vocab)

    def states(out, lp):  # nearest-centroid output state of every step
        e = torch.from_numpy(embed_on(lp.exp(), vocab_t))
        d = torch.cdist(e.flatten(0, 1), cent).reshape(*lp.shape[:2], k)
        dist, st = d.min(-1)
        return {"state": st.to(torch.int16), "state_dist": dist.float()}

    paths = linear_path(acts[a], acts[b], cfg.n_steps)
    tr = trace(eng, fp.tokens[a], paths, extra=states)
    max_step = tr["step_js"].max(1)
    js_end = tr["js"][:, -1]
    n_changes = (np.diff(tr["state"].astype(int), axis=1) != 0).sum(1)
    # endpoint fidelity: JS(end of path, B's own output) / JS(A's output, B's output)
    with torch.no_grad():
        lg = eng.forward(fp.tokens[a], acts[b][:, None, :])["logits"][:, 0]
        lp_end = torch.log_softmax(lg.float(), -1)
    js_ab = js_rows(logp[a], logp[b]).numpy()
    js_end_b = js_rows(lp_end, logp[b]).numpy()
    fidelity = 1 - np.divide(js_end_b, js_ab, out=np.zeros_like(js_ab), where=js_ab > 0)
    conc = concentration(tr["step_js"])
    jump = (conc >= cfg.jump_concentration) & (max_step >= cfg.jump_js)
    scores = {"concentration": conc, "max_step_js": max_step}
    sharp = M.sharpness(tr["js"])
    per_group = {}
    for gi, g in enumerate(("same", "different")):
        m = group == gi
        per_group[g] = {
            "n": int(m.sum()),
            "max_step_js": M.summarise(max_step[m]),
            "concentration": M.summarise(conc[m]),
            "js_end": M.summarise(js_end[m]),
            "sharpness_js": M.summarise(sharp[m]),
            "sharpness_l2": M.summarise(M.sharpness(tr["l2"][m])) if m.any() else None,
            "state_changes": M.summarise(n_changes[m]),
            "fraction_jump": float(jump[m].mean()) if m.any() else None,
            "fraction_state_change": float((n_changes[m] > 0).mean()) if m.any() else None,
            "fraction_top1_change": float(tr["top1_changed"][m].any(1).mean()) if m.any() else None,
            "write_distance": M.summarise((acts[a[m]] - acts[b[m]]).norm(dim=-1).numpy()),
        }
    in_state = tr["state_dist"] <= radius[tr["state"].astype(int)]
    doc = {
        "family": family,
        "n_prompts": len(fp.tokens),
        "n_dropped": fp.n_dropped,
        "example_prompt": str(fp.labels["text"][0]),
        "n_tokens": int(fp.tokens.shape[1]),
        "embedding_tokens": len(vocab),
        "embedding_mass_covered": float(logp.exp()[:, vocab_t].sum(-1).mean()),
        "k": int(k),
        "k_at_range_edge": bool(k in (cfg.k_min, min(cfg.k_max, len(X) - 1))),
        "silhouette": {str(kk): v for kk, v in sil.items()},
        "silhouette_gaussian_null": silhouette_null(X, k, cfg.seed),
        "clusters": clusters,
        "groups": per_group,
        "agreement_jump": agreement(group == 1, jump, scores),
        "agreement_state_change": agreement(group == 1, n_changes > 0, scores),
        "endpoint_fidelity": M.summarise(fidelity),
        "fraction_path_points_inside_a_state": float(in_state.mean()),
    }
    arrays = {
        "labels": lab,
        "pairs": allp,
        "group": group,
        "js": tr["js"],
        "l2": tr["l2"],
        "step_js": tr["step_js"],
        "state": tr["state"],
        "max_step_js": max_step,
        "concentration": conc,
    }
    return doc, arrays


def plot(res: OutputStatesResult, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from challenge.plots import save_figure

    doc, arrays, cfg = res.detail, res.arrays, res.config
    fams = [f["family"] for f in doc["families"]]
    fig, axes = plt.subplots(2, len(fams) + 1, figsize=(4.2 * (len(fams) + 1), 7), squeeze=False)
    ax = axes[0, 0]
    for f in doc["families"]:
        ks = [int(k) for k in f["silhouette"]]
        ax.plot(ks, list(f["silhouette"].values()), marker="o", label=f"{f['family']} (k={f['k']})")
    ax.set_xlabel("k")
    ax.set_ylabel("silhouette (Hellinger)")
    ax.set_title("choice of k", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    axes[1, 0].axis("off")
    axes[1, 0].text(
        0,
        0.5,
        "\n".join(
            f"{f['family']}: k={f['k']} (silhouette {f['silhouette'][str(f['k'])]:.2f}, "
            f"null {f['silhouette_gaussian_null']:.2f})\n"
            f"  jumps same/diff: {f['groups']['same']['fraction_jump']:.2f} / "
            f"{f['groups']['different']['fraction_jump']:.2f}, agreement "
            f"{f['agreement_jump']['accuracy']:.2f}\n"
            f"  AUC concentration {f['agreement_jump']['roc_auc_concentration']:.2f}, "
            f"max-step JS {f['agreement_jump']['roc_auc_max_step_js']:.2f}"
            for f in doc["families"]
        ),
        fontsize=8,
    )
    for c, f in enumerate(doc["families"], start=1):
        fam = f["family"]
        js, grp, ms = arrays[f"{fam}_js"], arrays[f"{fam}_group"], arrays[f"{fam}_concentration"]
        x = np.linspace(0, 1, js.shape[1])
        ax = axes[0, c]
        for gi, (g, col) in enumerate((("same", "C0"), ("different", "C3"))):
            v = js[grp == gi]
            if len(v) == 0:
                continue
            ax.plot(x, np.median(v, 0), color=col, label=f"{g} cluster (n={len(v)})")
            ax.fill_between(x, *np.percentile(v, [25, 75], 0), color=col, alpha=0.2)
        ax.set_title(f"{fam}: JS(p_0, p_alpha)", fontsize=9)
        ax.set_xlabel("alpha")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        ax = axes[1, c]
        ms = np.nan_to_num(ms, nan=0.0)
        hi = max(float(ms.max()), cfg.jump_concentration * 1.1)
        edges = np.linspace(0, hi, 31)
        for gi, (g, col) in enumerate((("same", "C0"), ("different", "C3"))):
            ax.hist(ms[grp == gi], bins=edges, color=col, alpha=0.5, label=g)
        ax.axvline(cfg.jump_concentration, color="k", ls="--", lw=0.8)
        ax.set_xlabel("concentration: max / mean step of sqrt(JS)")
        ax.set_ylabel("pairs")
        ax.legend(fontsize=7)
    fig.suptitle(f"Study 1: output states vs plateaus ({res.track.id})", fontsize=10)
    return save_figure(fig, path, dpi=100)


def run(
    cfg: OutputStatesConfig, env: StudyEnv | str | Path, *, out: Path, draw: bool = True
) -> OutputStatesResult:
    """Study 1 on ``env`` (a study environment, or a track id / directory to load); writes
    ``<out>/output_states.{json,npz}`` (+ ``.png`` when ``draw``)."""
    env = as_env(env)
    fams, arrays = [], {}
    for fam in cfg.families:
        d, arr = run_family(env, cfg, fam)
        fams.append(d)
        arrays |= {f"{fam}_{k}": v for k, v in arr.items()}
    cat = lambda k: np.concatenate([arrays[f"{f}_{k}"] for f in cfg.families])  # noqa: E731
    pred, ms, conc = cat("group") == 1, cat("max_step_js"), cat("concentration")
    jump = (conc >= cfg.jump_concentration) & (ms >= cfg.jump_js)
    doc = {
        "question": "Do k-means clusters of next-token distributions predict plateaus "
        "(flat within a cluster, a jump between clusters)?",
        "families": fams,
        "pooled": {
            "n_states": {f["family"]: f["k"] for f in fams},
            "agreement_jump": agreement(pred, jump, {"concentration": conc, "max_step_js": ms}),
            "fraction_jump": {
                "same": float(jump[~pred].mean()) if (~pred).any() else None,
                "different": float(jump[pred].mean()) if pred.any() else None,
            },
        },
    }
    return finish(
        env,
        cfg,
        NAME,
        OutputStatesResult,
        headline(fams),
        doc,
        arrays,
        plot=plot,
        out=out,
        draw=draw,
    )
