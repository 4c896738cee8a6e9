"""Train Jacobian-sparse dictionary pairs on every MLP of a track's model and measure the trade-off.

For each layer ``L`` an input dictionary on ``blocks.L.ln2.hook_normalized`` and an output
dictionary on ``blocks.L.hook_mlp_out`` are trained together with

    loss = FVU(x_hat, x) + FVU(y_hat, y) + lambda * mean_tokens( sum |J_active| / k )

where ``J_active`` is the ``k x k`` Jacobian of output codes w.r.t. input codes through the MLP
(``challenge.interactions.jacobian.active_jacobian``). ``lambda = 0`` gives plain TopK SAE pairs.
The model is the track's; the text is the track's prompt source (``challenge.prompts``), joined
and cut into ``ctx``-token windows.

Usage (the CLI registers ``run`` as ``plateau interactions``)::

    python -m challenge.interactions.train --layers 0 1 --lambdas 0 0.3
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from challenge.errors import ConfigError
from challenge.interactions.dictionaries import (
    load_dictionary,
    measure_firing,
    new_dictionary,
    save_dictionary,
)
from challenge.interactions.jacobian import (
    MLPWeights,
    active_jacobian,
    interaction_stats,
    jacobian_penalty,
)
from challenge.prompts import PromptSpec
from challenge.results import Result, TrackRef
from challenge.rng import generator, seed_for
from challenge.sae import SAE
from challenge.track import DEFAULT_TRACK, Track


@dataclass
class InteractionsConfig:
    """Sparse feature interactions: Jacobian-sparse dictionary pairs on every MLP."""

    track: str = DEFAULT_TRACK
    """registered track id or track directory: its model (must be Llama-style: gated SiLU MLP,
    RMSNorm) and its prompt source"""
    layers: tuple[int, ...] = ()
    """layers to train; empty = every layer"""
    lambdas: tuple[float, ...] = (0.0, 0.3)
    """Jacobian-L1 weights; one full set of dictionaries per value"""
    n_latents: int = 2048
    """latents per dictionary"""
    k: int = 16
    """active latents per token (TopK)"""
    ctx: int = 128
    """tokens per text window"""
    n_train_tokens: int = 8192
    """training tokens per layer (position 0 of each window dropped)"""
    n_eval_tokens: int = 2048
    """held-out tokens (disjoint windows) for the metrics and the CE"""
    batch_size: int = 256
    """tokens per step"""
    epochs: float = 3.0
    """passes over the training tokens"""
    lr: float = 2e-3
    """Adam learning rate (linear decay over the last 20% of the steps)"""
    jac_tokens: int = 128
    """tokens per batch on which the Jacobian penalty is computed (0 = the whole batch)"""
    jac_eval_tokens: int = 1024
    """held-out tokens on which Jacobian statistics are measured"""
    thresholds: tuple[float, ...] = (0.01, 0.05)
    """|J| thresholds for counting nonzero interactions"""
    eval_ce: bool = True
    """measure next-token CE with all trained dictionaries spliced in"""
    seed: int = 0
    """run seed (streams ``interactions.*``)"""
    threads: int = 0
    """torch threads; 0 = leave torch's default"""
    out_dir: str = "runs/interactions"
    """where ``results.json`` and the dictionaries go"""
    save_dicts: bool = True
    """save the dictionaries (``<out_dir>/dicts/lam<value>/L<layer>/{in,out}``)"""
    progress: bool = True
    """show progress bars"""

    def __post_init__(self) -> None:
        self.layers = tuple(self.layers)
        self.lambdas = tuple(self.lambdas)
        self.thresholds = tuple(self.thresholds)
        if any(lam < 0 for lam in self.lambdas) or not self.lambdas:
            raise ConfigError("lambdas must be a non-empty list of values >= 0", field="lambdas")
        if any(L < 0 for L in self.layers):
            raise ConfigError(f"layers must be >= 0, got {list(self.layers)}", field="layers")
        for name in ("n_latents", "n_eval_tokens", "batch_size", "jac_eval_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"must be >= 1, got {getattr(self, name)}", field=name)
        if not 1 <= self.k <= self.n_latents:
            raise ConfigError(f"k={self.k} must be in [1, n_latents={self.n_latents}]", field="k")
        if self.ctx < 2:
            raise ConfigError(f"must be >= 2 (position 0 is dropped), got {self.ctx}", field="ctx")
        if self.n_train_tokens < self.batch_size:
            raise ConfigError("n_train_tokens must be >= batch_size", field="n_train_tokens")
        for name in ("epochs", "lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"must be > 0, got {getattr(self, name)}", field=name)
        for name in ("jac_tokens", "threads"):
            if getattr(self, name) < 0:
                raise ConfigError(f"must be >= 0, got {getattr(self, name)}", field=name)
        if not self.thresholds or any(t <= 0 for t in self.thresholds):
            raise ConfigError(
                "thresholds must be a non-empty list of values > 0", field="thresholds"
            )

    def check_layers(self, n_layers: int) -> None:
        """``ConfigError`` if a requested layer is not in the model's ``n_layers``."""
        bad = [L for L in self.layers if not 0 <= L < n_layers]
        if bad:
            raise ConfigError(f"layers {bad} out of range [0, {n_layers})", field="layers")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> InteractionsConfig:
        raw = json.loads(text)
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown fields {sorted(unknown)}", field=",".join(sorted(unknown)))
        return cls(**raw)


# ---------------------------------------------------------------------------------------
# data


def text_windows(
    prompts: PromptSpec, tokenizer, n_windows: int, ctx: int, seed: int
) -> Int[Tensor, "n_windows ctx"]:
    """``n_windows`` disjoint ``ctx``-token windows of the texts of ``prompts`` (its source, in
    order, joined by blank lines and tokenised as one text), shuffled (stream
    ``interactions.windows``)."""
    from challenge.prompts import iter_texts

    if prompts.source.startswith("hf:") and prompts.max_chars is None:
        raise ConfigError(
            "a streamed hub source needs max_chars to bound the text read", field="max_chars"
        )
    text = "\n\n".join(iter_texts(prompts))
    ids = tokenizer(text, return_tensors="pt").input_ids[0]
    n_avail = ids.numel() // ctx
    if n_windows > n_avail:
        raise ConfigError(
            f"asked {n_windows} windows of {ctx} tokens, {prompts.source} has {n_avail}",
            field="n_train_tokens",
        )
    wins = ids[: n_avail * ctx].view(n_avail, ctx)
    perm = torch.randperm(n_avail, generator=generator(seed, "interactions.windows"))
    return wins[perm[:n_windows]]


def hook_in(L: int) -> str:
    return f"blocks.{L}.ln2.hook_normalized"


def hook_out(L: int) -> str:
    return f"blocks.{L}.hook_mlp_out"


def cache_inputs(
    model, windows: Int[Tensor, "n ctx"], layers: list[int], batch: int = 8
) -> dict[int, Float[Tensor, "n_tokens d"]]:
    """MLP inputs (normalised, before the norm gain) at every layer; position 0 is dropped.

    The MLP output is recomputed from the input exactly (``MLPWeights``), so only ``x`` is kept.
    """
    from challenge.activations import capture

    acts = capture(
        model, windows, [hook_in(L) for L in layers], positions="after_first", batch_size=batch
    )
    return {L: acts[hook_in(L)] for L in layers}


# ---------------------------------------------------------------------------------------
# one layer


@dataclass
class LayerPair:
    """The input and output dictionaries of one MLP, with the MLP and its scalars."""

    layer: int
    sae_in: SAE
    sae_out: SAE
    mlp: MLPWeights

    def save(self, path: Path, extra: dict) -> None:
        meta = {"layer": self.layer, "s_x": self.mlp.s_x, "s_y": self.mlp.s_y, **extra}
        save_dictionary(self.sae_in, path / "in", hook_in(self.layer), meta)
        save_dictionary(self.sae_out, path / "out", hook_out(self.layer), meta)


def layer_scales(model, L: int, x: torch.Tensor) -> tuple[float, float]:
    """Scalars making E||x/s_x||^2 = E||y/s_y||^2 = d_model."""
    d = x.shape[1]
    s_x = math.sqrt(float(x.pow(2).sum(-1).mean()) / d)
    y = MLPWeights.from_model(model, L, s_x=1.0, s_y=1.0)(x[:4096])
    s_y = math.sqrt(float(y.pow(2).sum(-1).mean()) / d)
    return s_x, s_y


def fvu(x_hat: torch.Tensor, x: torch.Tensor, var: float) -> torch.Tensor:
    return (x_hat - x).pow(2).sum(-1).mean() / var


def train_layer(
    model, L: int, x_train: torch.Tensor, cfg: InteractionsConfig, lam: float, *, seed: int
) -> tuple[LayerPair, dict]:
    """Train the dictionary pair of MLP ``L`` on its inputs ``x_train`` with penalty weight
    ``lam``; ``seed`` is the layer's (streams ``interactions.sae_in`` / ``sae_out`` /
    ``batches``)."""
    s_x, s_y = layer_scales(model, L, x_train)
    mlp = MLPWeights.from_model(model, L, s_x, s_y)
    x_all = x_train / s_x
    with torch.no_grad():
        y_all = torch.cat([mlp(c * 1.0) for c in x_all.split(4096)])
    var_x = float((x_all - x_all.mean(0)).pow(2).sum(-1).mean())
    var_y = float((y_all - y_all.mean(0)).pow(2).sum(-1).mean())
    d = x_all.shape[1]
    sae_in = new_dictionary(d, cfg.n_latents, cfg.k, generator(seed, "interactions.sae_in"))
    sae_out = new_dictionary(d, cfg.n_latents, cfg.k, generator(seed, "interactions.sae_out"))
    with torch.no_grad():  # b_dec at the mean of the data
        sae_in.b_dec.copy_(x_all.mean(0))
        sae_out.b_dec.copy_(y_all.mean(0))
    params = list(sae_in.parameters()) + list(sae_out.parameters())
    opt = torch.optim.Adam(params, lr=cfg.lr, betas=(0.9, 0.999))
    n = x_all.shape[0]
    steps = max(1, int(cfg.epochs * n / cfg.batch_size))
    g = generator(seed, "interactions.batches")
    order = torch.cat([torch.randperm(n, generator=g) for _ in range(math.ceil(cfg.epochs) + 1)])
    hist: list[tuple[float, float, float]] = []
    t0 = time.perf_counter()
    for step in range(steps):
        # linear decay over the last 20% of steps
        frac = step / steps
        for pg in opt.param_groups:
            pg["lr"] = cfg.lr * min(1.0, (1 - frac) / 0.2)
        b = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
        x, y = x_all[b], y_all[b]
        vals_in, idx_in = sae_in.encode_topk(x)
        l_in = fvu(sae_in.decode_topk(vals_in, idx_in), x, var_x)
        l_out = fvu(sae_out.forward_topk(y), y, var_y)
        loss = l_in + l_out
        pen = torch.zeros(())
        if lam > 0:
            nj = cfg.jac_tokens or len(b)
            pen = jacobian_penalty(
                active_jacobian(sae_in, sae_out, mlp, vals_in[:nj], idx_in[:nj]).J
            )
            loss = loss + lam * pen
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sae_in.normalise_decoder()
        sae_out.normalise_decoder()
        hist.append((l_in.item(), l_out.item(), pen.item()))
    train_s = time.perf_counter() - t0
    measure_firing(sae_in, x_all)
    measure_firing(sae_out, y_all)
    last = np.array(hist[-max(1, steps // 10) :]).mean(0)
    info = {
        "steps": steps,
        "train_seconds": round(train_s, 2),
        "seconds_per_step": round(train_s / steps, 4),
        "final_train_fvu_in": float(last[0]),
        "final_train_fvu_out": float(last[1]),
        "final_train_penalty": float(last[2]),
        "s_x": s_x,
        "s_y": s_y,
    }
    return LayerPair(L, sae_in, sae_out, mlp), info


@torch.no_grad()
def eval_layer(pair: LayerPair, x_eval: torch.Tensor, cfg: InteractionsConfig) -> dict:
    """Held-out reconstruction and interaction statistics of one dictionary pair."""
    mlp, si, so = pair.mlp, pair.sae_in, pair.sae_out
    x = x_eval / mlp.s_x
    y = mlp(x)
    var_x = float((x - x.mean(0)).pow(2).sum(-1).mean())
    var_y = float((y - y.mean(0)).pow(2).sum(-1).mean())
    vi, ii = si.encode_topk(x)
    x_hat = si.decode_topk(vi, ii)
    vo, io = so.encode_topk(y)
    y_hat = so.decode_topk(vo, io)
    # the sparsified MLP: input codes -> MLP -> output codes -> output reconstruction
    n_j = min(cfg.jac_eval_tokens, x.shape[0])
    jo = active_jacobian(si, so, mlp, vi[:n_j], ii[:n_j])
    chain = so.forward_topk(mlp(x_hat))
    alive_in = torch.zeros(si.n_latents, dtype=torch.bool)
    alive_in[ii[vi > 0]] = True
    alive_out = torch.zeros(so.n_latents, dtype=torch.bool)
    alive_out[io[vo > 0]] = True
    return {
        "fvu_in": float(fvu(x_hat, x, var_x)),
        "fvu_out": float(fvu(y_hat, y, var_y)),
        "fvu_chain": float(fvu(chain, y, var_y)),
        "dead_in": float(1 - alive_in.float().mean()),
        "dead_out": float(1 - alive_out.float().mean()),
        "penalty": float(jacobian_penalty(jo.J)),
        **interaction_stats(jo.J, jo.vals_out, thresholds=cfg.thresholds),
    }


# ---------------------------------------------------------------------------------------
# splicing


class Splice:
    """Context manager that splices dictionary pairs into the model via hooks.

    ``mode="out"``: the MLP output is replaced by the output dictionary's reconstruction.
    ``mode="chain"``: additionally the MLP input is replaced by the input dictionary's
    reconstruction, so every MLP runs as input codes -> MLP -> output codes.
    Position 0 is left untouched (it is excluded from training, see ``cache_inputs``).
    ``ablate`` maps a layer to ``(positions, latent ids)`` whose *input* codes are zeroed
    (applied as an edit of the real input, keeping the reconstruction error, when ``mode`` is
    ``"none"``).
    """

    def __init__(
        self, model, pairs: dict[int, LayerPair], mode: str = "chain", ablate: dict | None = None
    ):
        if mode not in ("out", "chain", "none"):
            raise ConfigError(f"mode {mode!r} not in out|chain|none", field="mode")
        self.model, self.pairs, self.mode, self.ablate = model, pairs, mode, ablate or {}

    def _hooks(self):
        hooks = []
        for L, p in self.pairs.items():
            if self.mode == "chain" or L in self.ablate:
                hooks.append((hook_in(L), self._in_hook(p)))
            if self.mode in ("out", "chain"):
                hooks.append((hook_out(L), self._out_hook(p)))
        return hooks

    def _in_hook(self, p: LayerPair):
        def fn(act, hook):
            B, T, d = act.shape
            x = act[:, 1:].reshape(-1, d) / p.mlp.s_x
            vals, idx = p.sae_in.encode_topk(x)
            if p.layer in self.ablate:
                pos, lat = self.ablate[p.layer]
                mask = torch.zeros(B, T - 1, p.sae_in.n_latents, dtype=torch.bool)
                pos_sel = torch.zeros(T - 1, dtype=torch.bool)
                pos_sel[[q - 1 for q in pos if q >= 1]] = True
                mask[:, pos_sel, :] = False
                lat_t = torch.as_tensor(list(lat), dtype=torch.long)
                mask[:, pos_sel.nonzero()[:, 0][:, None], lat_t[None, :]] = True
                kill = mask.reshape(-1, p.sae_in.n_latents).gather(1, idx)
                new_vals = torch.where(kill, torch.zeros_like(vals), vals)
            else:
                new_vals = vals
            if self.mode == "chain":
                x_new = p.sae_in.decode_topk(new_vals, idx)
            else:  # keep the error term: subtract only the ablated latents' contributions
                x_new = x - (p.sae_in.decode_topk(vals, idx) - p.sae_in.decode_topk(new_vals, idx))
            out = act.clone()
            out[:, 1:] = (x_new * p.mlp.s_x).reshape(B, T - 1, d)
            return out

        return fn

    def _out_hook(self, p: LayerPair):
        def fn(act, hook):
            B, T, d = act.shape
            y = act[:, 1:].reshape(-1, d) / p.mlp.s_y
            out = act.clone()
            out[:, 1:] = (p.sae_out.forward_topk(y) * p.mlp.s_y).reshape(B, T - 1, d)
            return out

        return fn

    def run(self, tokens: torch.Tensor, **kw) -> torch.Tensor:
        return self.model.run_with_hooks(tokens, fwd_hooks=self._hooks(), **kw)


@torch.no_grad()
def next_token_ce(
    model, windows: torch.Tensor, splice: Splice | None = None, batch: int = 8
) -> float:
    """Mean next-token CE over positions 1..T-2 predicting 2..T-1 (position 0 never spliced)."""
    tot, cnt = 0.0, 0
    for s in range(0, len(windows), batch):
        w = windows[s : s + batch]
        logits = splice.run(w) if splice is not None else model(w)
        lp = torch.log_softmax(logits[:, 1:-1].float(), -1)
        nll = -lp.gather(-1, w[:, 2:, None])[..., 0]
        tot += float(nll.sum())
        cnt += nll.numel()
    return tot / cnt


# ---------------------------------------------------------------------------------------
# results


@dataclass
class LambdaHeadline:
    """One lambda's held-out numbers, mean over the trained layers (a row of the tables in
    ``docs/sparse-interactions.md``)."""

    fvu_in: float
    """FVU of the input dictionary"""
    fvu_out: float
    """FVU of the output dictionary"""
    fvu_chain: float
    """FVU of dec_out(enc_out(MLP(x_hat))) against the real MLP output"""
    nnz: dict[str, float]
    """``nnz@t``: per active output feature, active inputs with |J| > t"""
    mass90: float
    """input edges holding 90% of an active output feature's |J| mass"""
    dead_in: float
    """fraction of input latents never active on the held-out tokens"""
    dead_out: float
    """fraction of output latents never active on the held-out tokens"""
    ce_spliced_out: float | None
    """next-token CE with every MLP output replaced by its reconstruction (None: not measured)"""
    ce_spliced_chain: float | None
    """next-token CE with every MLP run as input codes -> MLP -> output codes"""
    seconds_per_step: float
    """training time per step"""


@dataclass
class InteractionsHeadline:
    """The numbers to cite: clean CE and one row per lambda."""

    ce_clean: float | None
    """next-token CE of the model on the held-out windows (None: not measured)"""
    per_lambda: dict[str, LambdaHeadline]
    """``lam<value>`` -> that lambda's row"""


@dataclass
class InteractionsResult(Result):
    """``detail`` holds ``ce_clean``, ``per_lambda`` (per-layer rows and means) and ``timing``."""

    config: InteractionsConfig
    headline: InteractionsHeadline


def headline(detail: dict[str, Any]) -> InteractionsHeadline:
    """The numbers to cite from a run's ``detail``."""
    rows = {}
    for key, ent in detail["per_lambda"].items():
        m = ent["mean"]
        rows[key] = LambdaHeadline(
            fvu_in=m["fvu_in"],
            fvu_out=m["fvu_out"],
            fvu_chain=m["fvu_chain"],
            nnz={k: v for k, v in m.items() if k.startswith("nnz@")},
            mass90=m["mass90"],
            dead_in=m["dead_in"],
            dead_out=m["dead_out"],
            ce_spliced_out=ent.get("ce_spliced_out"),
            ce_spliced_chain=ent.get("ce_spliced_chain"),
            seconds_per_step=m["seconds_per_step"],
        )
    return InteractionsHeadline(ce_clean=detail["ce_clean"], per_lambda=rows)


# ---------------------------------------------------------------------------------------
# main


def load_pairs(
    run_dir: str | Path, model, lam_key: str, model_name: str | None = None
) -> dict[int, LayerPair]:
    """Reload the dictionaries a run saved under ``run_dir/dicts/<lam_key>/L<layer>``
    (``model_name``: refuse dictionaries trained on another model)."""
    base = Path(run_dir) / "dicts" / lam_key
    if not base.exists():
        raise ConfigError("no saved dictionaries", file=str(base))
    pairs = {}
    for d in sorted(base.glob("L*"), key=lambda p: int(p.name[1:])):
        sae_in, meta = load_dictionary(d / "in")
        sae_out, _ = load_dictionary(d / "out")
        if model_name is not None and meta.get("model", model_name) != model_name:
            raise ConfigError(
                f"dictionaries of model {meta['model']!r}, not {model_name!r}",
                file=str(d / "in" / "cfg.json"),
                field="model",
            )
        L = int(meta["layer"])
        pairs[L] = LayerPair(
            L, sae_in, sae_out, MLPWeights.from_model(model, L, meta["s_x"], meta["s_y"])
        )
    return pairs


def lam_key(lam: float) -> str:
    return f"lam{lam:g}"


def run(cfg: InteractionsConfig, track: Track | None = None) -> InteractionsResult:
    """Train dictionary pairs for every lambda on the chosen layers of the track's model (``track``
    or ``cfg.track``); write ``<out_dir>/results.json`` and return the result."""
    from challenge import __version__
    from challenge.models import load_model
    from challenge.track import resolve_track

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t_start = time.perf_counter()
    tr = resolve_track(track if track is not None else cfg.track)
    lm = load_model(tr.spec.model)
    model = lm.model
    n_layers = model.cfg.n_layers
    cfg.check_layers(n_layers)
    MLPWeights.check(model)
    layers = list(cfg.layers) or list(range(n_layers))
    n_train_w = math.ceil(cfg.n_train_tokens / (cfg.ctx - 1))
    n_eval_w = math.ceil(cfg.n_eval_tokens / (cfg.ctx - 1))
    wins = text_windows(tr.spec.prompts, lm.tokenizer, n_train_w + n_eval_w, cfg.ctx, cfg.seed)
    train_w, eval_w = wins[:n_train_w], wins[n_train_w:]
    t0 = time.perf_counter()
    x_tr = cache_inputs(model, train_w, layers)
    x_ev = cache_inputs(model, eval_w, layers)
    x_tr = {L: v[: cfg.n_train_tokens] for L, v in x_tr.items()}
    x_ev = {L: v[: cfg.n_eval_tokens] for L, v in x_ev.items()}
    cache_s = time.perf_counter() - t0
    out_dir = Path(cfg.out_dir)

    per_lambda: dict[str, Any] = {}
    ce_clean = next_token_ce(model, eval_w) if cfg.eval_ce else None
    for li, lam in enumerate(cfg.lambdas):
        pairs: dict[int, LayerPair] = {}
        rows = {}
        it = tqdm(layers, desc=f"lambda={lam:g}", disable=not cfg.progress)
        for L in it:
            seed = seed_for(cfg.seed, "interactions.layer", li) + 7 * L
            pair, info = train_layer(model, L, x_tr[L], cfg, lam, seed=seed)
            pair.sae_in.eval()
            pair.sae_out.eval()
            ev = eval_layer(pair, x_ev[L], cfg)
            rows[str(L)] = {**info, **ev}
            pairs[L] = pair
            it.set_postfix(
                fvu_in=f"{ev['fvu_in']:.3f}",
                fvu_out=f"{ev['fvu_out']:.3f}",
                nnz=f"{ev[f'nnz@{cfg.thresholds[0]:g}']:.2f}",
            )
            if cfg.save_dicts:
                pair.save(
                    out_dir / "dicts" / lam_key(lam) / f"L{L}",
                    {"lambda": lam, "model": tr.spec.model.name, "track": tr.spec.track_id},
                )
        summary = {
            k: float(np.mean([r[k] for r in rows.values()]))
            for k in next(iter(rows.values()))
            if isinstance(next(iter(rows.values()))[k], float)
        }
        entry = {"lambda": lam, "layers": rows, "mean": summary}
        if cfg.eval_ce:
            entry["ce_spliced_out"] = next_token_ce(model, eval_w, Splice(model, pairs, "out"))
            entry["ce_spliced_chain"] = next_token_ce(model, eval_w, Splice(model, pairs, "chain"))
        per_lambda[lam_key(lam)] = entry

    detail = {
        "ce_clean": ce_clean,
        "per_lambda": per_lambda,
        "timing": {
            "cache_seconds": round(cache_s, 2),
            "total_seconds": round(time.perf_counter() - t_start, 2),
        },
    }
    prov = {
        **lm.provenance,
        "hooks": {
            "input": "blocks.{L}.ln2.hook_normalized",
            "output": "blocks.{L}.hook_mlp_out",
        },
        "layers": layers,
        "lambdas": list(cfg.lambdas),
        "suite_version": __version__,
        "seed": cfg.seed,
        "threads": torch.get_num_threads(),
        "data": f"{tr.spec.prompts.source} texts joined, {cfg.ctx}-token windows, "
        "position 0 dropped",
        "n_train_tokens": int(next(iter(x_tr.values())).shape[0]),
        "n_eval_tokens": int(next(iter(x_ev.values())).shape[0]),
    }
    res = InteractionsResult(
        kind="interactions",
        config=cfg,
        headline=headline(detail),
        detail=detail,
        track=TrackRef.of(tr),
        provenance=prov,
    )
    res.save(out_dir, "results")
    return res


main = run  # the name of the module's entry point before the CLI called ``run``


def plot_tradeoff(results: list | dict | Result, path: str | Path, threshold: float = 0.01) -> None:
    """Interaction sparsity vs reconstruction, one point per lambda (mean over layers), from
    ``InteractionsResult``s or their ``results.json`` documents."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from challenge.plots import save_figure

    if not isinstance(results, list):
        results = [results]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for res in results:
        doc = res.to_json() if isinstance(res, Result) else res
        per_lambda = doc.get("detail", doc)["per_lambda"]  # also the pre-Result layout
        ents = sorted(per_lambda.values(), key=lambda e: e["lambda"])
        nl = len(doc["provenance"]["layers"])
        lab = (
            f"{nl} layers"
            if nl > 3
            else "layers " + ",".join(map(str, doc["provenance"]["layers"]))
        )
        for ax, key, name in (
            (axes[0], f"nnz@{threshold:g}", f"nonzeros/active feature (|J|>{threshold:g})"),
            (axes[1], "mass90", "edges holding 90% of |J| mass"),
        ):
            xs = [e["mean"][key] for e in ents]
            for ykey, mk in (("fvu_chain", "o-"), ("fvu_out", "s--"), ("fvu_in", "^:")):
                ys = [e["mean"][ykey] for e in ents]
                ax.plot(xs, ys, mk, label=f"{ykey} ({lab})")
                if ykey == "fvu_chain":
                    for x, y, e in zip(xs, ys, ents, strict=True):
                        ax.annotate(f"λ={e['lambda']:g}", (x, y), fontsize=7)
            ax.set_xlabel(name)
            ax.set_ylabel("held-out FVU (mean over layers)")
    axes[0].legend(fontsize=7)
    fig.suptitle("Jacobian-sparse dictionaries: interaction sparsity vs reconstruction")
    save_figure(fig, path, dpi=120)


if __name__ == "__main__":
    import tyro

    print(json.dumps(run(tyro.cli(InteractionsConfig)).to_json()["headline"], indent=1))
