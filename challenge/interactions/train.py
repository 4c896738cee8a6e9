"""Train Jacobian-sparse dictionary pairs on every MLP of a model and measure the trade-off.

For each layer ``L`` an input dictionary on ``blocks.L.ln2.hook_normalized`` and an output
dictionary on ``blocks.L.hook_mlp_out`` are trained together with

    loss = FVU(x_hat, x) + FVU(y_hat, y) + lambda * mean_tokens( sum |J_active| / k )

where ``J_active`` is the ``k x k`` Jacobian of output codes w.r.t. input codes through the MLP
(``challenge.interactions.jacobian.active_jacobian``). ``lambda = 0`` gives plain TopK SAE pairs.

Usage (the lead registers ``main`` as ``plateau interactions``)::

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
from tqdm.auto import tqdm

from challenge.errors import ConfigError
from challenge.interactions.dictionaries import DictConfig, TopKSAE
from challenge.interactions.jacobian import (
    MLPWeights,
    active_jacobian,
    interaction_stats,
    jacobian_penalty,
)


@dataclass
class InteractionsConfig:
    """Sparse feature interactions: Jacobian-sparse dictionary pairs on every MLP."""

    model: str = "smollm2-135m"
    """embedded model name or hub name (must be Llama-style: gated SiLU MLP, RMSNorm)"""
    layers: tuple[int, ...] = ()
    """layers to train; empty = every layer"""
    lambdas: tuple[float, ...] = (0.0, 0.3)
    """Jacobian-L1 weights; one full set of dictionaries per value"""
    n_latents: int = 2048
    k: int = 16
    ctx: int = 128
    """tokens per text window (pydoc prose)"""
    n_train_tokens: int = 8192
    n_eval_tokens: int = 2048
    batch_size: int = 256
    epochs: float = 3.0
    lr: float = 2e-3
    jac_tokens: int = 128
    """tokens per batch on which the Jacobian penalty is computed (0 = the whole batch)"""
    jac_eval_tokens: int = 1024
    """held-out tokens on which Jacobian statistics are measured"""
    thresholds: tuple[float, ...] = (0.01, 0.05)
    """|J| thresholds for counting nonzero interactions"""
    eval_ce: bool = True
    """measure next-token CE with all trained dictionaries spliced in"""
    seed: int = 0
    threads: int = 0
    """torch threads; 0 = leave torch's default"""
    out_dir: str = "runs/interactions"
    save_dicts: bool = True
    progress: bool = True

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> InteractionsConfig:
        raw = json.loads(text)
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown fields {sorted(unknown)}", field=",".join(sorted(unknown)))
        for k in ("layers", "lambdas", "thresholds"):
            if k in raw:
                raw[k] = tuple(raw[k])
        return cls(**raw)

    def validate(self, n_layers: int) -> None:
        bad = [L for L in self.layers if not 0 <= L < n_layers]
        if bad:
            raise ConfigError(f"layers {bad} out of range [0, {n_layers})", field="layers")
        if any(lam < 0 for lam in self.lambdas) or not self.lambdas:
            raise ConfigError("lambdas must be a non-empty list of values >= 0", field="lambdas")
        if self.n_train_tokens < self.batch_size:
            raise ConfigError("n_train_tokens must be >= batch_size", field="n_train_tokens")


# ---------------------------------------------------------------------------------------
# data


def text_windows(tokenizer, n_windows: int, ctx: int, seed: int) -> torch.Tensor:
    """Disjoint ``ctx``-token windows of stdlib pydoc prose, shuffled with ``seed``."""
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[k] for k in sorted(topics))
    ids = tokenizer(text, return_tensors="pt").input_ids[0]
    n_avail = ids.numel() // ctx
    if n_windows > n_avail:
        raise ConfigError(
            f"asked {n_windows} windows of {ctx} tokens, pydoc has {n_avail}",
            field="n_train_tokens",
        )
    wins = ids[: n_avail * ctx].view(n_avail, ctx)
    perm = torch.randperm(n_avail, generator=torch.Generator().manual_seed(seed))
    return wins[perm[:n_windows]]


def hook_in(L: int) -> str:
    return f"blocks.{L}.ln2.hook_normalized"


def hook_out(L: int) -> str:
    return f"blocks.{L}.hook_mlp_out"


@torch.no_grad()
def cache_inputs(
    model, windows: torch.Tensor, layers: list[int], batch: int = 8
) -> dict[int, torch.Tensor]:
    """MLP inputs (normalised, before the norm gain) at every layer; position 0 is dropped.

    The MLP output is recomputed from the input exactly (``MLPWeights``), so only ``x`` is kept.
    """
    names = {hook_in(L) for L in layers}
    acc: dict[int, list[torch.Tensor]] = {L: [] for L in layers}
    stop = max(layers) + 1
    for s in range(0, len(windows), batch):
        _, cache = model.run_with_cache(
            windows[s : s + batch], names_filter=lambda n: n in names, stop_at_layer=stop
        )
        for L in layers:
            acc[L].append(cache[hook_in(L)][:, 1:].reshape(-1, model.cfg.d_model).float())
    return {L: torch.cat(v) for L, v in acc.items()}


# ---------------------------------------------------------------------------------------
# one layer


@dataclass
class LayerPair:
    layer: int
    sae_in: TopKSAE
    sae_out: TopKSAE
    mlp: MLPWeights

    def save(self, path: Path, extra: dict) -> None:
        meta = {"layer": self.layer, "s_x": self.mlp.s_x, "s_y": self.mlp.s_y, **extra}
        self.sae_in.save(path / "in", {**meta, "hook": hook_in(self.layer)})
        self.sae_out.save(path / "out", {**meta, "hook": hook_out(self.layer)})


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
    s_x, s_y = layer_scales(model, L, x_train)
    mlp = MLPWeights.from_model(model, L, s_x, s_y)
    x_all = x_train / s_x
    with torch.no_grad():
        y_all = torch.cat([mlp(c * 1.0) for c in x_all.split(4096)])
    var_x = float((x_all - x_all.mean(0)).pow(2).sum(-1).mean())
    var_y = float((y_all - y_all.mean(0)).pow(2).sum(-1).mean())
    d = x_all.shape[1]
    torch.manual_seed(seed)
    sae_in = TopKSAE(DictConfig(d, cfg.n_latents, cfg.k), seed=seed)
    sae_out = TopKSAE(DictConfig(d, cfg.n_latents, cfg.k), seed=seed + 1)
    sae_in.init_from_data(x_all)
    sae_out.init_from_data(y_all)
    params = list(sae_in.parameters()) + list(sae_out.parameters())
    opt = torch.optim.Adam(params, lr=cfg.lr, betas=(0.9, 0.999))
    n = x_all.shape[0]
    steps = max(1, int(cfg.epochs * n / cfg.batch_size))
    g = torch.Generator().manual_seed(seed)
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
        vals_in, idx_in = sae_in.encode(x)
        l_in = fvu(sae_in.decode(vals_in, idx_in), x, var_x)
        l_out = fvu(sae_out(y), y, var_y)
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
        sae_in.normalize_decoder()
        sae_out.normalize_decoder()
        hist.append((l_in.item(), l_out.item(), pen.item()))
    train_s = time.perf_counter() - t0
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
    vi, ii = si.encode(x)
    x_hat = si.decode(vi, ii)
    vo, io = so.encode(y)
    y_hat = so.decode(vo, io)
    # the sparsified MLP: input codes -> MLP -> output codes -> output reconstruction
    n_j = min(cfg.jac_eval_tokens, x.shape[0])
    jo = active_jacobian(si, so, mlp, vi[:n_j], ii[:n_j])
    chain = so.decode(*so.encode(mlp(x_hat)))
    alive_in = torch.zeros(si.cfg.n_latents, dtype=torch.bool)
    alive_in[ii[vi > 0]] = True
    alive_out = torch.zeros(so.cfg.n_latents, dtype=torch.bool)
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
            vals, idx = p.sae_in.encode(x)
            if p.layer in self.ablate:
                pos, lat = self.ablate[p.layer]
                mask = torch.zeros(B, T - 1, p.sae_in.cfg.n_latents, dtype=torch.bool)
                pos_sel = torch.zeros(T - 1, dtype=torch.bool)
                pos_sel[[q - 1 for q in pos if q >= 1]] = True
                mask[:, pos_sel, :] = False
                lat_t = torch.as_tensor(list(lat), dtype=torch.long)
                mask[:, pos_sel.nonzero()[:, 0][:, None], lat_t[None, :]] = True
                kill = mask.reshape(-1, p.sae_in.cfg.n_latents).gather(1, idx)
                new_vals = torch.where(kill, torch.zeros_like(vals), vals)
            else:
                new_vals = vals
            if self.mode == "chain":
                x_new = p.sae_in.decode(new_vals, idx)
            else:  # keep the error term: subtract only the ablated latents' contributions
                x_new = x - (p.sae_in.decode(vals, idx) - p.sae_in.decode(new_vals, idx))
            out = act.clone()
            out[:, 1:] = (x_new * p.mlp.s_x).reshape(B, T - 1, d)
            return out

        return fn

    def _out_hook(self, p: LayerPair):
        def fn(act, hook):
            B, T, d = act.shape
            y = act[:, 1:].reshape(-1, d) / p.mlp.s_y
            out = act.clone()
            out[:, 1:] = (p.sae_out(y) * p.mlp.s_y).reshape(B, T - 1, d)
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
# main


def load_pairs(run_dir: str | Path, model, lam_key: str) -> dict[int, LayerPair]:
    """Reload the dictionaries a run saved under ``run_dir/dicts/<lam_key>/L<layer>``."""
    base = Path(run_dir) / "dicts" / lam_key
    if not base.exists():
        raise ConfigError("no saved dictionaries", file=str(base))
    pairs = {}
    for d in sorted(base.glob("L*"), key=lambda p: int(p.name[1:])):
        meta = json.loads((d / "in" / "cfg.json").read_text())
        L = int(meta["layer"])
        pairs[L] = LayerPair(
            L,
            TopKSAE.load(d / "in").eval(),
            TopKSAE.load(d / "out").eval(),
            MLPWeights.from_model(model, L, meta["s_x"], meta["s_y"]),
        )
    return pairs


def lam_key(lam: float) -> str:
    return f"lam{lam:g}"


def main(cfg: InteractionsConfig) -> dict:
    """Train dictionary pairs for every lambda on the chosen layers; write ``results.json``."""
    from challenge import __version__
    from challenge.models import load_model

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t_start = time.perf_counter()
    lm = load_model(cfg.model)
    model = lm.model
    n_layers = model.cfg.n_layers
    cfg.validate(n_layers)
    layers = list(cfg.layers) or list(range(n_layers))
    n_train_w = math.ceil(cfg.n_train_tokens / (cfg.ctx - 1))
    n_eval_w = math.ceil(cfg.n_eval_tokens / (cfg.ctx - 1))
    wins = text_windows(lm.tokenizer, n_train_w + n_eval_w, cfg.ctx, cfg.seed)
    train_w, eval_w = wins[:n_train_w], wins[n_train_w:]
    t0 = time.perf_counter()
    x_tr = cache_inputs(model, train_w, layers)
    x_ev = cache_inputs(model, eval_w, layers)
    x_tr = {L: v[: cfg.n_train_tokens] for L, v in x_tr.items()}
    x_ev = {L: v[: cfg.n_eval_tokens] for L, v in x_ev.items()}
    cache_s = time.perf_counter() - t0
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    per_lambda: dict[str, Any] = {}
    ce_clean = next_token_ce(model, eval_w) if cfg.eval_ce else None
    for li, lam in enumerate(cfg.lambdas):
        pairs: dict[int, LayerPair] = {}
        rows = {}
        it = tqdm(layers, desc=f"lambda={lam:g}", disable=not cfg.progress)
        for L in it:
            pair, info = train_layer(model, L, x_tr[L], cfg, lam, seed=cfg.seed + 1000 * li + 7 * L)
            pair.sae_in.eval()
            pair.sae_out.eval()
            ev = eval_layer(pair, x_ev[L], cfg)
            rows[str(L)] = {**info, **ev}
            pairs[L] = pair
            it.set_postfix(
                fvu_in=f"{ev['fvu_in']:.3f}",
                fvu_out=f"{ev['fvu_out']:.3f}",
                nnz=f"{ev['nnz@0.01']:.2f}",
            )
            if cfg.save_dicts:
                pair.save(
                    out_dir / "dicts" / lam_key(lam) / f"L{L}", {"lambda": lam, "model": cfg.model}
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

    res = {
        "config": asdict(cfg),
        "provenance": {
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
            "data": f"pydoc_data.topics, {cfg.ctx}-token windows, position 0 dropped",
            "n_train_tokens": int(next(iter(x_tr.values())).shape[0]),
            "n_eval_tokens": int(next(iter(x_ev.values())).shape[0]),
        },
        "ce_clean": ce_clean,
        "per_lambda": per_lambda,
        "timing": {
            "cache_seconds": round(cache_s, 2),
            "total_seconds": round(time.perf_counter() - t_start, 2),
        },
    }
    tmp = out_dir / "results.json.tmp"
    tmp.write_text(json.dumps(res, indent=1))
    tmp.rename(out_dir / "results.json")
    return res


def plot_tradeoff(results: list[dict] | dict, path: str | Path, threshold: float = 0.01) -> None:
    """Interaction sparsity vs reconstruction, one point per lambda (mean over layers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from challenge.plots import save_figure

    if isinstance(results, dict):
        results = [results]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for res in results:
        ents = sorted(res["per_lambda"].values(), key=lambda e: e["lambda"])
        nl = len(res["provenance"]["layers"])
        lab = (
            f"{nl} layers"
            if nl > 3
            else "layers " + ",".join(map(str, res["provenance"]["layers"]))
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

    main(tyro.cli(InteractionsConfig))
