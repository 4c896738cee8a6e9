"""Baseline generators behind the submission interface (``fit(track, lm)``, ``sample(n, *, seed)``).

Each produces a scored submission on a track with ``plateau generate <name>`` / ``plateau main``.
The published recipes (P1, Giglemiani et al. 2024; see docs/baselines.md for recipe vs code):

| name | what | uses |
|---|---|---|
| isotropic | isotropic Gaussian directions at real norms | public |
| gaussian | N(mu, Sigma) of the public activations (P1's "random") | public |
| sae_reconstruction | SAE(x) of public activations | public, sae |
| sae_baseline | each active latent -> one of the 10 latents nearest in log-sparsity, same value | public, sae |
| bag_of_features | each active latent -> a random alive latent, same value | public, sae |
| structured | anchor c (cos 0.42 to the top latent, among its 100 sparsity-nearest); latents cosine-matched to c | public, sae |
| single_latent | one alive latent at the mean real latent norm (+ b_dec) | public, sae |
| interpolation | (1 - a) x_i + a x_j of two public activations, a ~ U(0.25, 0.75) | public |
| heldout_real | the held-out real activations (oracle upper bound) | heldout |
| token_cluster | new: N(mean of the public rows sharing a last token, pooled within-token covariance) | public |
| spliced_prompts | new: the model's activation for (context of one public prompt + last token of another) | public, model |
| unigram_prompts | ablation: the model's activation for i.i.d. unigram-token prompts | public, model |
| e2e_<SAE generator> | the five SAE generators above on the track's end-to-end SAE | public, sae |

Each generator declares ``access`` (``challenge.access``: what it may touch; the pipeline
enforces it, and its board category follows from it): ``public`` for the public-only ones,
``public, sae`` for the SAE ones (synthetic, ranked), ``public, model`` for spliced / unigram
prompts and ``heldout`` for the oracle (reference lines). ``sae_reconstruction`` also sets
``reference = True``: it reproduces public rows through the SAE, so it is a reference line too.

All randomness flows from the ``seed`` of ``sample`` (a CPU ``torch.Generator``); ``fit`` is
deterministic. SAE generators take the track's SAE from ``challenge.sae.track_sae`` (trained on
first use, cached) unless one is passed to the constructor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from challenge.directions import ActivationStats, as_generator, gaussian_like, jittered_cholesky
from challenge.errors import ConfigError
from challenge.sae.e2e import E2EConfig
from challenge.submission import Generator


def _rows(n: int, n_avail: int, g: torch.Generator) -> Tensor:
    """``n`` row indices: a permutation prefix when there are enough rows, else with replacement."""
    if n <= n_avail:
        return torch.randperm(n_avail, generator=g)[:n]
    return torch.randint(n_avail, (n,), generator=g)


class Isotropic:
    """Isotropic Gaussian directions scaled to norms drawn from the public real norms."""

    name, uses, access = "isotropic", ["public_activations"], ("public",)
    description = (
        "isotropic Gaussian, each row rescaled to a norm sampled from the public real norms"
    )

    def fit(self, track, lm) -> None:
        self.norms, self.d = track.acts("public").norm(dim=-1), track.d_model

    def sample(self, n: int, *, seed: int) -> Tensor:
        g = as_generator(seed)
        x = torch.randn(n, self.d, generator=g)
        r = self.norms[torch.randint(len(self.norms), (n,), generator=g)]
        return x / x.norm(dim=-1, keepdim=True) * r[:, None]


class Gaussian:
    """N(mu, Sigma) of the public real activations (P1's "random" targets)."""

    name, uses, access = "gaussian", ["public_activations"], ("public",)
    description = "multivariate normal with the mean and covariance of the public real activations"

    def fit(self, track, lm) -> None:
        self.stats = ActivationStats.fit(track.acts("public"))

    def sample(self, n: int, *, seed: int) -> Tensor:
        return gaussian_like(self.stats, n, seed)


class Interpolation:
    """Convex mixtures of two distinct public real activations, alpha ~ U(0.25, 0.75)."""

    name, uses, access = "interpolation", ["public_activations"], ("public",)
    description = (
        "x = (1 - alpha) a_i + alpha a_j of two public real activations, alpha ~ U(0.25, 0.75)"
    )

    def fit(self, track, lm) -> None:
        self.acts = track.acts("public")

    def sample(self, n: int, *, seed: int) -> Tensor:
        g = as_generator(seed)
        i = torch.randint(len(self.acts), (n,), generator=g)
        j = (i + 1 + torch.randint(len(self.acts) - 1, (n,), generator=g)) % len(self.acts)
        a = 0.25 + 0.5 * torch.rand(n, 1, generator=g)
        return (1 - a) * self.acts[i] + a * self.acts[j]


class NoisyCopy:
    """Public real rows plus noise shaped like real variation: e ~ N(0, Sigma) of the public rows,
    rescaled to 10 % of the row's norm (the smallest noise the copy check lets through on the
    default track, docs/integrity.md). A reference line: the bar a cheap copier reaches."""

    name, uses, access = "noisy_copy", ["public_activations"], ("public",)
    reference = True  # real rows, lightly moved: shown for comparison, not ranked
    description = "public real rows + N(0, Sigma) noise at 10 % of each row's norm (a copier's bar)"
    scale = 0.10

    def fit(self, track, lm) -> None:
        self.acts = track.acts("public")
        self.stats = ActivationStats.fit(self.acts)

    def sample(self, n: int, *, seed: int) -> Tensor:
        return moved_rows(self.acts, n, self.scale, as_generator(seed), self.stats.chol)


def moved_rows(
    acts: Float[Tensor, "m d"],
    n: int,
    scale: float,
    g: torch.Generator,
    chol: Float[Tensor, "d d"] | None = None,
) -> Float[Tensor, "n d"]:
    """``n`` rows of ``acts`` (a permutation prefix, :func:`_rows`), each moved by ``scale`` of
    its norm along a random direction: isotropic, or ``N(0, chol chol^T)``-shaped with ``chol``."""
    x = acts[_rows(n, len(acts), g)].double()
    e = torch.randn(x.shape, generator=g, dtype=torch.float64)
    if chol is not None:
        e = e @ chol.double().T
    e = e / e.norm(dim=1, keepdim=True) * scale * x.norm(dim=1, keepdim=True)
    return (x + e).float()


class HeldoutReal:
    """Oracle upper bound: held-out real activations outside the scorer's reference half (a real
    sample disjoint from the reference; uses held-out data)."""

    name, uses, access = "heldout_real", ["heldout_activations"], ("heldout",)
    description = (
        "oracle: held-out real activations outside the scorer's reference half (in a seeded order)"
    )

    def fit(self, track, lm) -> None:

        self.acts = track.acts("heldout")[track.oracle_rows()]

    def sample(self, n: int, *, seed: int) -> Tensor:
        if n > len(self.acts):
            raise ValueError(f"the oracle has only {len(self.acts)} held-out activations")
        return self.acts[torch.randperm(len(self.acts), generator=as_generator(seed))[:n]].clone()


# ------------------------------------------------------------------------------ SAE generators
@dataclass
class Codes:
    """Sparse SAE codes, one row per activation: latent ids (-1 = padding) and values, sorted by
    decreasing value."""

    ids: Tensor  # long [N, K]
    vals: Tensor  # float [N, K]

    @property
    def l0(self) -> Tensor:
        return (self.ids >= 0).sum(1)


@torch.no_grad()
def encode_sparse(sae, acts: Tensor, batch: int = 512) -> Codes:
    """SAE codes of ``acts`` as padded (ids, values), width = the largest L0 among the rows."""
    parts = []
    for i in range(0, len(acts), batch):
        f = sae.encode(acts[i : i + batch].float())
        parts.append(f)
    kmax = max(int((f > 0).sum(1).max()) for f in parts)
    kmax = max(kmax, 1)
    ids, vals = [], []
    for f in parts:
        top = f.topk(kmax, dim=1)
        live = top.values > 0
        ids.append(torch.where(live, top.indices, torch.full_like(top.indices, -1)))
        vals.append(torch.where(live, top.values, torch.zeros_like(top.values)))
    return Codes(torch.cat(ids), torch.cat(vals))


def decode_sparse(sae, ids: Tensor, vals: Tensor) -> Tensor:
    """``b_dec + sum_j vals_j W_dec[ids_j]`` (padding ids < 0 contribute nothing)."""
    W = sae.W_dec.detach().float()
    rows = W[ids.clamp_min(0)]  # [n, K, d]
    v = torch.where(ids >= 0, vals, torch.zeros_like(vals)).float()
    return (v[:, :, None] * rows).sum(1) + sae.b_dec.detach().float()


def sparsity_neighbours(log_freq: Tensor, candidates: Tensor, k: int) -> Tensor:
    """For every latent, the ``k`` latents of ``candidates`` nearest to it in log10 firing
    frequency (itself excluded): long ``[n_latents, k]``. Uses a window of the sorted frequencies,
    so it scales to large dictionaries."""
    n_lat = log_freq.shape[0]
    cand = candidates[torch.argsort(log_freq[candidates], stable=True)]
    m = len(cand)
    if m < k + 1:
        raise ConfigError(f"only {m} candidate latents, need more than {k}", field="sae")
    cv = log_freq[cand].double()
    # position of every latent's frequency in the sorted candidates
    pos = torch.searchsorted(cv, log_freq.double().contiguous())
    offs = torch.arange(-k - 1, k + 2)
    win = (pos[:, None] + offs[None, :]).clamp(0, m - 1)  # [n_lat, 2k+3]
    ids = cand[win]
    dist = (cv[win] - log_freq.double()[:, None]).abs()
    dist = torch.where(ids == torch.arange(n_lat)[:, None], torch.inf, dist)  # not itself
    # duplicates from clamping at the ends: keep the first occurrence only
    dup = torch.zeros_like(dist, dtype=torch.bool)
    dup[:, 1:] = win[:, 1:] == win[:, :-1]
    dist = torch.where(dup, torch.inf, dist)
    order = torch.argsort(dist, dim=1, stable=True)[:, :k]
    return ids.gather(1, order)


class _SAEGenerator:
    """Shared state of the SAE generators: the SAE, public codes, latent classes, neighbours.

    A subclass with ``e2e_cfg`` set (:func:`e2e_variant`) takes the track's end-to-end SAE with
    that config (``challenge.sae.e2e_track.track_e2e_sae``, trained on first use and cached)
    instead of the local one, unless an SAE is passed."""

    uses, access = ["public_activations", "sae"], ("public", "sae")
    name = description = ""
    e2e_cfg: E2EConfig | None = None

    def __init__(self, sae=None, sae_cfg=None):
        self._sae, self._sae_cfg = sae, sae_cfg

    def _track_sae(self, track, lm):
        if self._sae is not None:
            return self._sae
        if self.e2e_cfg is not None:
            from challenge.sae.e2e_track import track_e2e_sae

            return track_e2e_sae(track, self.e2e_cfg, lm=lm)
        from challenge.sae import track_sae

        return track_sae(track, self._sae_cfg, lm=lm)

    @torch.no_grad()
    def fit(self, track, lm) -> None:
        self.sae = self._track_sae(track, lm)
        self.acts = track.acts("public")
        self.codes = encode_sparse(self.sae, self.acts)
        self.log_freq = self.sae.log_sparsity.float().cpu()
        self.alive = torch.nonzero(~self.sae.dead_mask().cpu()).flatten()
        W = self.sae.W_dec.detach().float()
        self.W_unit = W / W.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def _base(self, n: int, g: torch.Generator) -> Tensor:
        return _rows(n, len(self.acts), g)

    def compose(self, n: int, seed: int) -> dict[str, Tensor]:
        """Synthetic codes: ``base`` rows, ``ids`` / ``vals`` [n, K] (and recipe-specific extras)."""
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, n: int, *, seed: int) -> Tensor:
        c = self.compose(n, seed)
        return decode_sparse(self.sae, c["ids"], c["vals"])


def _pick_unused(
    cands: Tensor, used: Tensor, g: torch.Generator, score: Tensor | None = None
) -> Tensor:
    """Per row, one of ``cands`` [n, m] not in ``used`` (bool [n, n_latents]): uniformly, or the
    lowest ``score`` [n, m]; falls back to any candidate when all are used."""
    taken = used.gather(1, cands)
    s = torch.rand(cands.shape, generator=g) if score is None else score.clone()
    s = torch.where(taken, s + 1e9, s)
    return cands.gather(1, s.argmin(1, keepdim=True)).squeeze(1)


class SAEReconstruction(_SAEGenerator):
    """SAE reconstruction of public activations (P1's "SAE reconstruction")."""

    name = "sae_reconstruction"
    reference = True  # SAE(x) of real rows: a reference line, not a synthetic entry
    description = "SAE(x) of public real activations (decode(encode(x)); no held-out data)"

    def compose(self, n: int, seed: int) -> dict[str, Tensor]:
        base = self._base(n, as_generator(seed))
        return {"base": base, "ids": self.codes.ids[base], "vals": self.codes.vals[base]}


class SAEBaseline(_SAEGenerator):
    """P1 "baseline": every active latent of a public activation replaced by one of the 10 alive
    latents nearest to it in log-sparsity (uniformly, distinct within a row), same value."""

    name = "sae_baseline"
    description = "each active SAE latent of a public activation swapped for one of its 10 log-sparsity-nearest latents, same activation value"
    n_neighbours = 10

    def fit(self, track, lm) -> None:
        super().fit(track, lm)
        self.neigh = sparsity_neighbours(self.log_freq, self.alive, self.n_neighbours)

    def compose(self, n: int, seed: int) -> dict[str, Tensor]:
        g = as_generator(seed)
        base = self._base(n, g)
        ids0, vals = self.codes.ids[base], self.codes.vals[base]
        ids = torch.full_like(ids0, -1)
        used = torch.zeros(n, self.sae.n_latents, dtype=torch.bool)
        for j in range(ids0.shape[1]):
            live = ids0[:, j] >= 0
            pick = _pick_unused(self.neigh[ids0[:, j].clamp_min(0)], used, g)
            ids[:, j] = torch.where(live, pick, ids[:, j])
            used[live.nonzero().flatten(), pick[live]] = True
        return {"base": base, "ids": ids, "vals": vals, "orig": ids0}


class BagOfFeatures(_SAEGenerator):
    """P1 bag-of-features: every active latent replaced by a random alive latent (distinct within
    a row), same value: the number of active latents and their values are kept."""

    name = "bag_of_features"
    description = "each active SAE latent of a public activation swapped for a uniformly random alive latent, same activation value"

    def compose(self, n: int, seed: int) -> dict[str, Tensor]:
        g = as_generator(seed)
        base = self._base(n, g)
        ids0, vals = self.codes.ids[base], self.codes.vals[base]
        K = ids0.shape[1]
        # K distinct alive latents per row: the first K of a random permutation of the alive set
        score = torch.rand(n, len(self.alive), generator=g)
        picks = self.alive[score.topk(K, dim=1).indices]
        ids = torch.where(ids0 >= 0, picks, torch.full_like(picks, -1))
        return {"base": base, "ids": ids, "vals": vals, "orig": ids0}


class Structured(_SAEGenerator):
    """P1 "structured": take the base activation's top latent t; among the 100 alive latents
    nearest t in log-sparsity pick the anchor c whose decoder cosine with t is nearest 0.42; then
    every active latent f (in decreasing value; t itself included, which maps to c) becomes the
    unused alive latent whose cosine with c best matches cos(t, f), keeping f's value."""

    name = "structured"
    description = "P1 structured: anchor c (decoder cosine with the top latent nearest 0.42 among its 100 sparsity-nearest), each active latent replaced by the unused latent whose cosine with c matches cos(top, latent), same value"
    n_anchor_candidates = 100
    anchor_cosine = 0.42

    def fit(self, track, lm) -> None:
        super().fit(track, lm)
        self.neigh = sparsity_neighbours(self.log_freq, self.alive, self.n_anchor_candidates)

    def anchors(self, top: Tensor) -> Tensor:
        cands = self.neigh[top]  # [n, 100]
        cos = (self.W_unit[cands] * self.W_unit[top][:, None, :]).sum(-1)
        return cands.gather(1, (cos - self.anchor_cosine).abs().argmin(1, keepdim=True)).squeeze(1)

    def compose(self, n: int, seed: int) -> dict[str, Tensor]:
        g = as_generator(seed)
        base = self._base(n, g)
        ids0, vals = self.codes.ids[base], self.codes.vals[base]
        top = ids0[:, 0]
        c = self.anchors(top)
        Wa = self.W_unit[self.alive]  # [A, d]
        cos_c = self.W_unit[c] @ Wa.T  # [n, A]: cosine of the anchor with every alive latent
        ids = torch.full_like(ids0, -1)
        used = torch.zeros(n, len(self.alive), dtype=torch.bool)
        for j in range(ids0.shape[1]):
            live = ids0[:, j] >= 0
            want = (self.W_unit[top] * self.W_unit[ids0[:, j].clamp_min(0)]).sum(-1)  # cos(t, f)
            err = (cos_c - want[:, None]).abs()
            err = torch.where(used, torch.inf, err)
            k = err.argmin(1)
            ids[:, j] = torch.where(live, self.alive[k], ids[:, j])
            used[live.nonzero().flatten(), k[live]] = True
        return {"base": base, "ids": ids, "vals": vals, "orig": ids0, "anchor": c, "top": top}


class SingleLatent(_SAEGenerator):
    """P1 "single latent": b_dec + m d_j for an alive latent j drawn with its firing frequency
    (without replacement while n <= the number of alive latents, so no row repeats),
    m = the mean norm of the latent part (||x_hat - b_dec||) of public activations."""

    name = "single_latent"
    description = "one alive SAE latent (drawn by firing frequency) at the mean norm of the real latent part, plus b_dec"

    @torch.no_grad()
    def fit(self, track, lm) -> None:
        super().fit(track, lm)
        latent_part = decode_sparse(self.sae, self.codes.ids, self.codes.vals) - self.sae.b_dec
        self.scale = float(latent_part.norm(dim=1).mean())
        w = self.sae.firing_freq[self.alive].double()
        self.weights = w if float(w.sum()) > 0 else torch.ones_like(w)

    def compose(self, n: int, seed: int) -> dict[str, Tensor]:
        # distinct latents while there are enough (one latent at a fixed scale twice would be a
        # duplicate row, which submissions may not contain)
        distinct = n <= len(self.alive)
        pick = torch.multinomial(
            self.weights, n, replacement=not distinct, generator=as_generator(seed)
        )
        j = self.alive[pick]
        return {"ids": j[:, None], "vals": torch.full((n, 1), self.scale)}

    @torch.no_grad()
    def sample(self, n: int, *, seed: int) -> Tensor:
        c = self.compose(n, seed)
        return self.sae.b_dec.detach().float() + c["vals"] * self.W_unit[c["ids"][:, 0]]


# ------------------------------------------------------------------------------ new generators
def last_token_means(track) -> tuple[Tensor, Tensor, Tensor]:
    """Mean public activation per distinct last token ``[n_tokens, d]`` (float64 sums), each
    public row's token index ``[N]`` and the rows per token ``[n_tokens]``."""
    acts, tok = track.acts("public").double(), track.tokens("public")[:, -1]
    uniq, inv, counts = torch.unique(tok, return_inverse=True, return_counts=True)
    sums = torch.zeros(len(uniq), acts.shape[1], dtype=torch.float64).index_add_(0, inv, acts)
    return (sums / counts[:, None]).float(), inv, counts


class TokenCluster:
    """New: a Gaussian mixture keyed by the last token.

    At an early write point the last position's activation is dominated by the identity of the
    last token (82 % of held-out activations on the default track have a public nearest
    neighbour with the same last token). Real activations therefore form tight per-token
    clusters, and the plateaus are a property of those regions; N(mu, Sigma) and SAE
    compositions fill the space between clusters, where the read-out responds linearly.
    This generator samples a public row's last token t (so tokens come with their public
    frequency) and draws x ~ N(m_t, (1 + 1/n_t) Sigma_w): m_t the mean of the n_t public rows
    ending in t, Sigma_w the within-token covariance pooled over tokens with >= 2 rows (the
    1/n_t term is the predictive spread of an estimated mean, so singleton tokens are not copied).
    """

    name, uses, access = "token_cluster", ["public_activations"], ("public",)
    description = "new: per-last-token Gaussian: N(public mean of the token's rows, pooled within-token covariance x (1 + 1/n_t)), tokens drawn with their public frequency"

    def __init__(self, shrink: float = 1.0):
        self.shrink = shrink  # multiplies the within-token covariance

    def fit(self, track, lm) -> None:
        acts = track.acts("public").double()
        self.means, self.row_token, self.counts = last_token_means(track)
        inv, counts = self.row_token, self.counts
        multi = counts[inv] >= 2
        resid = (acts - self.means.double()[inv])[multi]
        dof = int(multi.sum()) - int((counts >= 2).sum())
        if dof < 2:
            raise ConfigError("too few repeated last tokens to pool a covariance", field="track")
        cov = resid.T @ resid / dof
        self.chol, _ = jittered_cholesky(cov * self.shrink)
        self.chol = self.chol.float()

    def sample(self, n: int, *, seed: int) -> Tensor:
        g = as_generator(seed)
        rows = torch.randint(len(self.row_token), (n,), generator=g)
        t = self.row_token[rows]
        z = torch.randn(n, self.chol.shape[0], generator=g)
        scale = (1.0 + 1.0 / self.counts[t].float()).sqrt()[:, None]
        return self.means[t] + scale * (z @ self.chol.T)


class SplicedPrompts:
    """New (uses the model): activations of prompts that exist nowhere, written by the model itself.

    Each synthetic prompt is the context (all but the last token) of one public prompt followed
    by the last token of another public prompt with a different last token; the model runs up to
    the write point and the last position's activation is taken. The spliced prompts are
    unnatural text (the last token does not follow its context), so this tests whether "real"
    at the write point means *natural language* or merely *reachable by the model's own
    computation* (embedding + the blocks before the write point). With ``unigram=True`` every
    token is drawn i.i.d. from the public unigram distribution instead (no natural context at
    all)."""

    uses, access = ["public_activations", "model"], ("public", "model")

    def __init__(self, unigram: bool = False):
        self.unigram = unigram
        self.name = "unigram_prompts" if unigram else "spliced_prompts"
        self.description = (
            "new: the model's own activations for prompts of i.i.d. tokens drawn from the public unigram distribution"
            if unigram
            else "new: the model's own activations for spliced prompts (context of one public prompt + last token of another)"
        )

    def fit(self, track, lm) -> None:
        self.tokens = track.tokens("public")
        self.engine = track.engine(lm, progress=False)
        vals, counts = torch.unique(self.tokens.flatten(), return_counts=True)
        self.vocab, self.freq = vals, counts.double()

    def prompts(self, n: int, seed: int) -> Tensor:
        g = as_generator(seed)
        T = self.tokens.shape[1]
        if self.unigram:
            return self.vocab[
                torch.multinomial(self.freq, n * T, replacement=True, generator=g)
            ].view(n, T)
        N = len(self.tokens)
        i = _rows(n, N, g)  # distinct contexts while there are enough
        j = torch.randint(N, (n,), generator=g)
        last = self.tokens[:, -1]
        for _ in range(100):
            # redraw j where the splice reproduces prompt i itself, or repeats an earlier splice
            p = torch.cat([self.tokens[i, :-1], last[j, None]], dim=1)
            bad = last[j] == last[i]
            _, inv = torch.unique(p, dim=0, return_inverse=True)
            first = torch.full((n,), n).scatter_reduce(0, inv, torch.arange(n), "amin")
            bad |= first[inv] != torch.arange(n)
            if not bad.any():
                return p
            j[bad] = torch.randint(N, (int(bad.sum()),), generator=g)
        raise ConfigError(f"could not draw {n} distinct spliced prompts", field="n")

    @torch.no_grad()
    def sample(self, n: int, *, seed: int) -> Tensor:
        return self.engine.clean(self.prompts(n, seed), read=False)["write"].float().cpu()


GENERATORS: dict[str, Callable[[], Generator]] = {
    "isotropic": Isotropic,
    "gaussian": Gaussian,
    "sae_reconstruction": SAEReconstruction,
    "sae_baseline": SAEBaseline,
    "bag_of_features": BagOfFeatures,
    "structured": Structured,
    "single_latent": SingleLatent,
    "interpolation": Interpolation,
    "heldout_real": HeldoutReal,
    "noisy_copy": NoisyCopy,
    "token_cluster": TokenCluster,
    "spliced_prompts": SplicedPrompts,
    "unigram_prompts": lambda: SplicedPrompts(unigram=True),
}


def e2e_variant(cls: type[_SAEGenerator], cfg: E2EConfig | None = None) -> type[_SAEGenerator]:
    """``cls`` on the track's end-to-end SAE (``cfg``, default ``E2EConfig()``): the same recipe,
    named ``e2e_<name>``, to be scored beside the local-SAE version."""
    cfg = cfg or E2EConfig()
    body = {
        "name": f"e2e_{cls.name}",
        "description": f"on the end-to-end SAE ({cfg.name()}): {cls.description}",
        "e2e_cfg": cfg,
        "__doc__": f"{cls.__name__} on the track's end-to-end SAE.",
    }
    return type(f"E2E{cls.__name__}", (cls,), body)


E2E_SAE_GENERATORS = {
    g.name: g
    for g in map(e2e_variant, (SAEReconstruction, SAEBaseline, BagOfFeatures, Structured,
                               SingleLatent))
}  # fmt: skip
GENERATORS |= E2E_SAE_GENERATORS
PUBLISHED_SYNTHETIC = (
    "isotropic",
    "gaussian",
    "sae_reconstruction",
    "sae_baseline",
    "bag_of_features",
    "structured",
    "single_latent",
    "interpolation",
)
