"""The two-sample test: a cross-fitted classifier tells the reference's per-point features from
the submission's; ``score = clip(2 (1 - AUC), 0, 1)`` with a paired bootstrap interval.

Folds and bootstrap resample rows with all their context slots; the bootstrap row draws depend
on the run seed only, so two reports of one config are paired (``bootstrap/score``) and the
board ranks entries by paired differences (:mod:`challenge.scoring.ranking`).
"""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Float, Int

from challenge import bootstrap, rng
from challenge import metrics as M
from challenge.errors import ConfigError
from challenge.metrics import auc
from challenge.scoring.config import ScoreConfig
from challenge.scoring.report import FeatureScore, ScoreHeadline


def fold_of_slots(
    n: int, n_folds: int, seed: int, repeat: int = 0, contexts: int = 1
) -> np.ndarray:
    """Fold index of each of the ``n * contexts`` slots (round-major) in cross-fitting repeat
    ``repeat``: a seeded permutation of the ``n`` rows dealt round-robin; a row's slots share
    its fold."""
    perm = torch.randperm(n, generator=rng.generator(seed, "scorer.folds", repeat)).numpy()
    folds = np.empty(n, dtype=np.int64)
    folds[perm] = np.arange(n) % n_folds
    return np.tile(folds, contexts)


def out_of_fold_scores(
    ref: Float[np.ndarray, "n f"], sub: Float[np.ndarray, "n f"], cfg: ScoreConfig
) -> tuple[Float[np.ndarray, "r n"], Float[np.ndarray, "r n"]]:
    """Cross-fitted classifier scores ``P(submission | features)`` of each reference and each
    submission row, one row per cross-fitting repeat; a slot's two rows, and every slot of a row
    (``cfg.contexts_per_row``), are held out together."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    n, k = len(ref), cfg.contexts_per_row
    c = cfg.classifier
    s_ref, s_sub = np.empty((c.n_repeats, n)), np.empty((c.n_repeats, n))
    for r in range(c.n_repeats):
        folds = fold_of_slots(n // k, c.n_folds, cfg.seed, r, k)
        for f in range(c.n_folds):
            tr, te = folds != f, folds == f
            X = np.concatenate([ref[tr], sub[tr]])
            y = np.r_[np.zeros(tr.sum()), np.ones(tr.sum())]
            clf = HistGradientBoostingClassifier(
                max_iter=c.max_iter,
                max_leaf_nodes=c.max_leaf_nodes,
                learning_rate=c.learning_rate,
                min_samples_leaf=c.min_samples_leaf,
                early_stopping=False,
                random_state=rng.seed_for(cfg.seed, "scorer.folds", r),
            )
            clf.fit(X, y)
            s_ref[r, te] = clf.predict_proba(ref[te])[:, 1]
            s_sub[r, te] = clf.predict_proba(sub[te])[:, 1]
    return s_ref, s_sub


def mean_auc(neg: Float[np.ndarray, "r n"], pos: Float[np.ndarray, "r m"]) -> float:
    """The mean over cross-fitting repeats (rows) of each repeat's :func:`auc`."""
    neg, pos = np.atleast_2d(neg), np.atleast_2d(pos)
    return float(np.mean([auc(a, b) for a, b in zip(neg, pos, strict=True)]))


def score_of_auc(a: float | np.ndarray) -> float | np.ndarray:
    """``clip(2 (1 - AUC), 0, 1)``."""
    return np.clip(2.0 * (1.0 - np.asarray(a, dtype=np.float64)), 0.0, 1.0)


def bootstrap_slots(n: int, n_boot: int, seed: int, contexts: int = 1) -> Int[np.ndarray, "b m"]:
    """``[n_boot, n * contexts]`` slot indices: ``n`` rows drawn with replacement, each with its
    ``contexts`` slots (round-major layout); the same for every entry of a run seed and ``n``
    (paired comparisons)."""
    rows = bootstrap.resample(n, n_boot, rng.seed_for(seed, "scorer.bootstrap"))
    return np.concatenate([rows + r * n for r in range(contexts)], axis=1)


def headline_interval(
    s_ref: Float[np.ndarray, "r n"],
    s_sub: Float[np.ndarray, "r n"],
    n_boot: int,
    seed: int,
    contexts: int = 1,
) -> tuple[float, tuple[float, float], np.ndarray]:
    """Mean AUC over the repeats, the 95 % percentile interval of the score, and the bootstrap
    scores (each draw resamples rows with their ``contexts`` slots, the same in every repeat)."""
    s_ref, s_sub = np.atleast_2d(s_ref), np.atleast_2d(s_sub)
    a = mean_auc(s_ref, s_sub)
    draws = bootstrap_slots(s_ref.shape[1] // contexts, n_boot, seed, contexts)
    boot = np.array([score_of_auc(mean_auc(s_ref[:, i], s_sub[:, i])) for i in draws])
    lo, hi = np.quantile(boot, [0.025, 0.975])
    return a, (float(lo), float(hi)), boot


def feature_matrix(feats: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
    return np.stack([np.asarray(feats[k], np.float64) for k in names], axis=1)


def classifier_scores(
    ref: dict[str, np.ndarray], sub: dict[str, np.ndarray], cfg: ScoreConfig
) -> tuple[Float[np.ndarray, "r m"], Float[np.ndarray, "r m"]]:
    """:func:`out_of_fold_scores` of two ``{feature: [m]}`` sets, features in sorted order."""
    names = sorted(ref)
    return out_of_fold_scores(feature_matrix(ref, names), feature_matrix(sub, names), cfg)


def compare(
    ref: dict[str, np.ndarray], sub: dict[str, np.ndarray], cfg: ScoreConfig
) -> tuple[ScoreHeadline, dict[str, FeatureScore], dict[str, np.ndarray]]:
    """The headline, per-feature diagnostics and arrays of one submission against the reference
    (both ``{feature: [n c]}`` in the same slots, round-major for ``c = cfg.contexts_per_row``)."""
    names = sorted(ref)
    m = len(ref[names[0]])
    if m % cfg.contexts_per_row:
        raise ConfigError(
            f"{m} slots are not {cfg.contexts_per_row} contexts per row", field="contexts_per_row"
        )
    s_ref, s_sub = classifier_scores(ref, sub, cfg)
    a, ci, boot = headline_interval(s_ref, s_sub, cfg.n_boot, cfg.seed, cfg.contexts_per_row)
    per = {}
    for k in names:
        r, s = ref[k][np.isfinite(ref[k])], sub[k][np.isfinite(sub[k])]
        if not len(r) or not len(s):
            raise ConfigError(f"feature {k!r} is NaN on every point", field="probes")
        ks = M.ks_bootstrap(s, r, n_boot=min(cfg.n_boot, 200), seed=cfg.seed)
        per[k] = FeatureScore(
            ks=ks["stat"],
            ks_ci=(ks["low"], ks["high"]),
            auc=auc(ref[k], sub[k]),
            submission=M.summarise(s),
            reference=M.summarise(r),
        )
    head = ScoreHeadline(
        score=float(score_of_auc(a)),
        ci=ci,
        auc=a,
        n_points=s_ref.shape[-1],
        features=names,
        mean_ks=float(np.mean([v.ks for v in per.values()])),
    )
    arrays = {f"submission/{k}": v for k, v in sub.items()}
    arrays |= {f"reference/{k}": v for k, v in ref.items()}
    arrays |= {"oof/reference": s_ref, "oof/submission": s_sub, "bootstrap/score": boot}
    return head, per, arrays
