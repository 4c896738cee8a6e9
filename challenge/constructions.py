"""Feature-level constructions that test what the scorer's two-sample classifier can see
(docs/joint-probes.md; issue "challenge v3", item 3). Both act on per-point features
``{feature: [n c]}`` (round-major, ``c`` contexts per row), not on activations: they are bounds
on what an entry could reach if it could set its features directly.

- :func:`glue_probes`: real features with each probe's feature block (``radius.*``, ``p2.*``,
  ...; :func:`challenge.joint_probes.probe_of`) moved to another row by its own seeded permutation of
  the rows (a row's contexts stay together): every block's joint law is real, every link between
  blocks is broken. A classifier that does not see how one point's probes relate scores it as
  real.
- :func:`quantile_match`: each feature of a sample mapped onto a reference's quantiles by its
  rank (every marginal the reference's, the sample's dependence kept).

Derived ``joint.*`` features (:func:`challenge.joint_probes.joint_features`) are not moved: they are
dropped and recomputed from the moved features, as the scorer would compute them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from challenge.joint_probes import JOINT_PREFIX, joint_features, probe_of

Feats = dict[str, np.ndarray]


def _rederive(out: Feats, derive: Callable[[Feats], Feats] | None) -> Feats:
    return out | (derive(out) if derive is not None else {})


def raw(feats: Feats) -> Feats:
    """``feats`` without the derived ``joint.*`` features."""
    return {k: v for k, v in feats.items() if not k.startswith(JOINT_PREFIX)}


def glue_probes(
    feats: Feats,
    seed: int,
    contexts: int = 1,
    derive: Callable[[Feats], Feats] | None = joint_features,
) -> Feats:
    """Each probe's block of ``feats`` (``[n c]`` each, round-major) taken from another row: one
    independent seeded permutation of the ``n`` rows per block (sorted block names, so the draws
    do not depend on the dict's order), a row's ``c`` slots moved together; the derived features
    recomputed with ``derive`` (``None``: left out)."""
    base = raw(feats)
    m = len(next(iter(base.values())))
    if m % contexts:
        raise ValueError(f"{m} slots are not {contexts} contexts per row")
    n = m // contexts
    g = np.random.default_rng(seed)
    out: Feats = {}
    for block in sorted({probe_of(k) for k in base}):
        perm = g.permutation(n)
        slots = np.concatenate([perm + r * n for r in range(contexts)])
        out |= {k: np.asarray(v)[slots] for k, v in base.items() if probe_of(k) == block}
    return _rederive(out, derive)


def quantile_match(
    feats: Feats, ref: Feats, derive: Callable[[Feats], Feats] | None = joint_features
) -> Feats:
    """Each (non-derived) feature of ``feats`` replaced by the ``ref`` quantile at its rank:
    ``x -> Q_ref((rank(x) - 1/2) / n)`` over its finite values (average ranks for ties;
    ``Q_ref`` the Hazen quantile function of ``ref``'s finite values, whose ``(k - 1/2) / n``
    quantile is its ``k``-th smallest value; NaN stays NaN). With equal sizes and no ties every
    marginal is ``ref``'s sample exactly, and the ranks (the dependence between features) are
    ``feats``'. The derived features are recomputed with ``derive``."""
    from scipy.stats import rankdata

    out: Feats = {}
    for k, v in raw(feats).items():
        v = np.asarray(v, dtype=np.float64)
        r = np.asarray(ref[k], dtype=np.float64)
        r = r[np.isfinite(r)]
        ok = np.isfinite(v)
        got = np.full_like(v, np.nan)
        if ok.any() and len(r):
            q = (rankdata(v[ok]) - 0.5) / ok.sum()
            got[ok] = np.quantile(r, q, method="hazen")
        out[k] = got
    return _rederive(out, derive)


def block_correlations(feats: Feats) -> dict[tuple[str, str], float]:
    """The largest ``|Spearman r|`` between a feature of one probe block and one of another, per
    pair of (non-derived) blocks: the cross-probe dependence :func:`glue_probes` breaks."""
    from scipy.stats import spearmanr

    base = raw(feats)
    names = sorted(base)
    blocks = sorted({probe_of(k) for k in names})
    out = {}
    for i, a in enumerate(blocks):
        for b in blocks[i + 1 :]:
            best = 0.0
            for x in (k for k in names if probe_of(k) == a):
                for y in (k for k in names if probe_of(k) == b):
                    u, w = np.asarray(base[x]), np.asarray(base[y])
                    ok = np.isfinite(u) & np.isfinite(w)
                    if ok.sum() > 2:
                        best = max(best, abs(float(spearmanr(u[ok], w[ok]).statistic)))
            out[(a, b)] = best
    return out
