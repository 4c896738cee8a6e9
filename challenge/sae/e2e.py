"""End-to-end SAEs (Braun et al. 2024, arXiv 2405.12241) at a track's write point.

The dictionary is the suite's TopK SAE (``challenge.sae.model.SAE``, SAELens' layout on disk);
only the objective differs from the local SAE's. For a row ``x`` (a public prompt's activation
at the write point, last position) the reconstruction ``SAE(x)`` is written in place of ``x``
and the layers after the write point run over the prompt's frozen prefix cache (the suite's
tail runner, ``challenge.tail.TailRunner``, differentiable in the written point):

    e2e:     loss = KL(p(x) || p(SAE(x)))                                (next-token distribution)
    e2e+ds:  loss = KL + ds_coef * mean_l |h_l(SAE(x)) - h_l(x)|^2 / v_l  (residuals after blocks l)

with ``v_l`` the variance (summed over dimensions) of the clean ``h_l`` on the training rows.
Sparsity is the TopK constraint (k active latents), so no sparsity penalty enters the loss.

Training data (:class:`TailData`) is built once: each prompt's prefix cache from
``TailRunner.prefix_from_write`` over the clean write-point residuals (``challenge.activations
.capture``), and the clean targets (log p(x) and the downstream residuals) from one
``TailRunner.run`` of the clean points. A step then costs one last-position pass through the
blocks after the write point and its backward, for ``batch`` rows.

Parameterisation, initialisation and folding follow ``challenge.sae.train``: the SAE sees
activations divided by one scalar ``s`` (RMS distance to the mean / sqrt(d)), decoder rows are
unit-norm after every step, and ``s`` is folded into the biases at the end so that the saved SAE
maps raw activations. Checkpoints (``checkpoint.pt`` every ``checkpoint_every`` steps: weights,
Adam and schedule state, the batch generator's state, the history) make a run resumable; a
resumed run draws the same batches and ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from challenge import hooks
from challenge.errors import ConfigError
from challenge.rng import generator
from challenge.sae.model import SAE
from challenge.sae.train import firing_log10, geometric_median, init_tied
from challenge.schemas import JSON_CONFIG
from challenge.tail import PrefixCache

E2E_KINDS = ("e2e", "e2e+ds")
CHECKPOINT = "checkpoint.pt"


@dataclass
class E2EConfig:
    """How an end-to-end TopK SAE is trained at a track's write point."""

    __pydantic_config__ = JSON_CONFIG

    kind: Literal["e2e", "e2e+ds"] = "e2e"
    """objective: KL of the next-token distribution (e2e), plus downstream residual terms (e2e+ds)"""
    n_latents: int = 2048
    """dictionary size"""
    k: int = 16
    """active latents per input (TopK)"""
    init: Literal["local", "random"] = "local"
    """random: Braun et al.'s start (random unit decoder rows, tied encoder); local: start from
    the track's local TopK SAE with the same n_latents and k (trained on the public split's last
    position with local_steps; e2e fine-tuning, which needs far fewer steps on a CPU)"""
    local_steps: int = 1000
    """init local: optimiser steps of that local SAE (also the one it is compared with)"""
    lr: float = 1e-4
    """Adam learning rate (linear warm-up over 5% of the steps, decay over the last 20%); 1e-3
    drives a local start's KL up (0.009 -> 0.30 in 20 steps on the default track), random
    starts want ~3e-3"""
    steps: int = 200
    """optimiser steps"""
    batch: int = 32
    """rows per step (public prompts, drawn with replacement)"""
    n_train: int | None = 1024
    """train on the first n_train public prompts (None: all; building their prefix caches and
    clean targets costs ~3 s per 100 prompts on one thread)"""
    seed: int = 0
    """run seed (stream ``sae.e2e``: initialisation, then the batches)"""
    ds_every: int = 4
    """e2e+ds: a downstream term after every ds_every-th block after the write point, and after
    the last block"""
    ds_coef: float = 0.1
    """e2e+ds: weight of the mean normalised downstream MSE"""
    checkpoint_every: int = 100
    """steps between checkpoints (when training into a directory)"""

    def __post_init__(self) -> None:
        if self.kind not in E2E_KINDS:
            raise ConfigError(f"kind must be one of {E2E_KINDS}, not {self.kind!r}", field="kind")
        if self.init not in ("local", "random"):
            raise ConfigError(f"init must be local or random, not {self.init!r}", field="init")
        for name in ("n_latents", "k", "steps", "batch", "ds_every", "checkpoint_every",
                     "local_steps"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ConfigError(f"must be >= 1, got {getattr(self, name)}", field=name)
        if self.n_train is not None and self.n_train < 2:
            raise ConfigError(f"must be >= 2 (or None), got {self.n_train}", field="n_train")
        if self.k > self.n_latents:
            raise ConfigError(f"k={self.k} exceeds n_latents={self.n_latents}", field="k")
        if not self.lr > 0:
            raise ConfigError(f"must be > 0, got {self.lr}", field="lr")
        if self.ds_coef < 0:
            raise ConfigError(f"must be >= 0, got {self.ds_coef}", field="ds_coef")
        if self.seed < 0:
            raise ConfigError(f"must be >= 0, got {self.seed}", field="seed")

    def name(self) -> str:
        tag = "e2e" if self.kind == "e2e" else f"e2eds{self.ds_every}x{self.ds_coef:g}"
        init = "" if self.init == "random" else f"-ft{self.local_steps}"
        lr = "" if self.lr == 1e-4 else f"-lr{self.lr:g}"
        rows = "" if self.n_train is None else f"-n{self.n_train}"
        return (f"{tag}-{self.n_latents}-k{self.k}-last-{self.steps}-b{self.batch}{lr}{rows}"
                f"{init}-s{self.seed}")  # fmt: skip

    def local_config(self):
        """The local TopK SAE it starts from (init local) and is compared with: same n_latents,
        k and seed, on the public split's last position."""
        from challenge.sae.model import SAEConfig

        return SAEConfig(n_latents=self.n_latents, k=self.k, steps=self.local_steps,
                         seed=self.seed, positions="last")  # fmt: skip


def ds_layers(start: int, n_layers: int, every: int) -> tuple[int, ...]:
    """Blocks whose output (``resid_post``) carries a downstream term: every ``every``-th block
    after the write point (block ``start`` is the first), and the last block."""
    return tuple(sorted({b for b in range(start, n_layers) if (b - start + 1) % every == 0}
                        | {n_layers - 1}))  # fmt: skip


@dataclass
class TailData:
    """Training rows with everything a step needs: the write-point activations, each prompt's
    prefix cache, the clean next-token log-probabilities and the clean downstream residuals."""

    acts: Float[Tensor, "n d_model"]
    cache: PrefixCache
    logp: Float[Tensor, "n vocab"]
    targets: dict[int, Float[Tensor, "n d_model"]]

    def __len__(self) -> int:
        return len(self.acts)

    def rows(self, idx: Int[Tensor, " b"]) -> PrefixCache:
        """The prefix cache of rows ``idx``."""
        c = self.cache
        return PrefixCache(c.start, [k[idx] for k in c.keys], [v[idx] for v in c.values],
                           c.position)  # fmt: skip


def _tail(engine):
    if engine.tail is None:
        raise ConfigError(
            "end-to-end SAE training needs the tail runner (engine backend 'tail')",
            field="backend",
        )
    return engine.tail


@torch.no_grad()
def tail_data(
    engine,
    tokens: Int[Tensor, "n pos"],
    layers: tuple[int, ...] = (),
    chunk: int = 256,
    progress: bool = True,
) -> TailData:
    """Prefix caches and clean targets of ``tokens`` at the engine's write point (chunks of
    ``chunk`` prompts: one clean capture up to the write point, ``prefix_from_write``, one
    ``run`` of the clean last-position points reading ``layers``)."""
    from challenge.activations import capture

    tail = _tail(engine)
    name = hooks.resid_pre(engine.start)
    tokens = torch.as_tensor(tokens)
    acts, keys, values, logp = [], [], [], []
    targets: dict[int, list[Tensor]] = {b: [] for b in layers}
    position = None
    for i in tqdm(range(0, len(tokens), chunk), desc="prefix caches", disable=not progress):
        resid = capture(engine.model, tokens[i : i + chunk], [name], positions="all",
                        batch_size=chunk, float32=False)[name]  # fmt: skip
        cache = tail.prefix_from_write(resid)
        x = resid[:, -1]
        out = tail.run(x[:, None], cache, read_layers=layers)
        acts.append(x.float())
        keys.append(cache.keys)
        values.append(cache.values)
        logp.append(torch.log_softmax(out["logits"][:, 0].float(), dim=-1))
        for b in layers:
            targets[b].append(out[hooks.resid_post(b)][:, 0].float())
        position = cache.position
    cat_layers = [torch.cat([k[j] for k in keys]) for j in range(len(keys[0]))]
    cat_values = [torch.cat([v[j] for v in values]) for j in range(len(values[0]))]
    return TailData(
        acts=torch.cat(acts),
        cache=PrefixCache(engine.start, cat_layers, cat_values, position),
        logp=torch.cat(logp),
        targets={b: torch.cat(t) for b, t in targets.items()},
    )


def kl_rows(logp: Float[Tensor, "b V"], logq: Float[Tensor, "b V"]) -> Float[Tensor, " b"]:
    """KL(p || q) per row from log-probabilities."""
    return (logp.exp() * (logp - logq)).sum(-1)


def e2e_loss(
    sae: SAE,
    tail,
    data: TailData,
    idx: Int[Tensor, " b"],
    scale: float,
    layers: tuple[int, ...] = (),
    ds_coef: float = 0.0,
    ds_var: dict[int, float] | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The objective on rows ``idx``: ``(loss, parts)``; parts: ``kl`` [b] and, with ``layers``,
    ``ds`` (the mean normalised downstream MSE) and the codes ``f`` [b, n_latents].
    ``scale``: the SAE works on activations divided by it (``1.0`` for a folded SAE)."""
    x = data.acts[idx] / scale
    f = sae.encode(x)
    rec = sae.decode(f) * scale
    out = tail.run(rec[:, None, :].to(data.acts.dtype), data.rows(idx), read_layers=layers)
    kl = kl_rows(data.logp[idx], torch.log_softmax(out["logits"][:, 0].float(), dim=-1))
    loss = kl.mean()
    parts: dict[str, Tensor] = {"kl": kl.detach(), "f": f.detach()}
    if layers:
        terms = [
            (out[hooks.resid_post(b)][:, 0] - data.targets[b][idx]).pow(2).sum(-1).mean()
            / ds_var[b]
            for b in layers
        ]
        ds = torch.stack(terms).mean()
        loss = loss + ds_coef * ds
        parts["ds"] = ds.detach()
    return loss, parts


def _schedule(steps: int):
    warm = max(1, steps // 20)
    return lambda i: (
        min(1.0, (i + 1) / warm)
        * (1.0 if i < 0.8 * steps else max(0.0, (steps - i) / (0.2 * steps)))
    )


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def init_e2e(
    acts: Float[Tensor, "n d_model"], cfg: E2EConfig, start: SAE | None = None
) -> tuple[SAE, float, torch.Generator]:
    """The SAE at initialisation, in the units it trains in (activations / ``scale``), the
    scale, and the ``sae.e2e`` generator after the initialisation's draws (the batches come
    next). ``start`` (init local): a copy of that SAE (raw units) with its biases divided by
    the scale; else unit-norm random decoder rows, ``W_enc = W_dec^T``, ``b_dec`` the
    geometric median."""
    n, d = acts.shape
    g = generator(cfg.seed, "sae.e2e")
    s = float(((acts - acts.mean(0)).pow(2).sum(1).mean() / d).sqrt())
    sae = SAE(d, cfg.n_latents, "topk", cfg.k)
    if cfg.init == "local":
        if start is None or (start.kind, start.n_latents, start.k, start.d_in) != (
            "topk", cfg.n_latents, cfg.k, d):  # fmt: skip
            raise ConfigError(
                f"init local needs a topk SAE with n_latents={cfg.n_latents}, k={cfg.k}",
                field="init",
            )
        with torch.no_grad():
            for name in ("W_enc", "W_dec"):
                getattr(sae, name).copy_(getattr(start, name))
            sae.b_enc.copy_(start.b_enc / s)
            sae.b_dec.copy_(start.b_dec / s)
        return sae, s, g
    init_tied(sae, g, 1.0)
    with torch.no_grad():
        sae.b_dec.copy_(geometric_median(acts / s))
    return sae, s, g


@torch.enable_grad()
def train_e2e(
    engine,
    data: TailData,
    cfg: E2EConfig,
    *,
    start: SAE | None = None,
    checkpoint_dir: str | Path | None = None,
    stop_at: int | None = None,
    progress: bool = True,
) -> tuple[SAE, dict[str, Any]] | None:
    """Train an end-to-end TopK SAE on ``data`` (:func:`tail_data` of the engine's write point),
    from ``start`` (the local SAE, raw units) when ``cfg.init`` is local.

    With ``checkpoint_dir``, ``checkpoint.pt`` there is written every ``cfg.checkpoint_every``
    steps and a run resumes from it (its config must equal ``cfg``). ``stop_at``: stop after
    that many steps, write the checkpoint and return None (a time-boxed or interrupted run).
    Returns the SAE (raw units, ``log_sparsity`` measured on ``data.acts``) and training stats."""
    tail = _tail(engine)
    if len(data) < 2:
        raise ConfigError(f"need >= 2 training rows, got {len(data)}", field="data")
    t0 = time.perf_counter()
    n, d = data.acts.shape
    x_all = data.acts
    sae, s, g = init_e2e(x_all, cfg, start)
    layers = ds_layers(engine.start, engine.model.cfg.n_layers, cfg.ds_every) if (
        cfg.kind == "e2e+ds") else ()  # fmt: skip
    missing = [b for b in layers if b not in data.targets]
    if missing:
        raise ConfigError(f"training data lacks downstream targets {missing}", field="data")
    ds_var = {b: float((data.targets[b] - data.targets[b].mean(0)).pow(2).sum(1).mean())
              for b in layers}  # fmt: skip
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(cfg.steps))
    history: list[dict[str, float]] = []
    start, elapsed_before = 0, 0.0
    ckpt = Path(checkpoint_dir) / CHECKPOINT if checkpoint_dir is not None else None
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        if state["config"] != asdict(cfg) or state["n"] != n:
            raise ConfigError(
                "checkpoint was made with another config or training set; delete it to restart",
                file=str(ckpt),
            )
        sae.load_state_dict(state["sae"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        g.set_state(state["generator"])
        start, history, elapsed_before = state["step"], state["history"], state["seconds"]

    def save_checkpoint(step: int) -> None:
        if ckpt is None:
            return
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        _atomic_save(
            {"config": asdict(cfg), "n": n, "step": step, "sae": sae.state_dict(),
             "opt": opt.state_dict(), "sched": sched.state_dict(), "generator": g.get_state(),
             "history": history, "seconds": elapsed_before + time.perf_counter() - t0},
            ckpt,
        )  # fmt: skip

    end = cfg.steps if stop_at is None else min(cfg.steps, stop_at)
    bar = tqdm(range(start, end), desc=f"train {cfg.name()}", disable=not progress,
               initial=start, total=cfg.steps)  # fmt: skip
    for step in bar:
        idx = torch.randint(n, (cfg.batch,), generator=g)
        loss, parts = e2e_loss(sae, tail, data, idx, s, layers, cfg.ds_coef, ds_var)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        sae.normalise_decoder()
        if step % 10 == 0 or step == cfg.steps - 1:
            rec = {"step": step, "loss": float(loss.detach()), "kl": float(parts["kl"].mean()),
                   "l0": float((parts["f"] > 0).float().sum(1).mean())}  # fmt: skip
            if "ds" in parts:
                rec["ds"] = float(parts["ds"])
            history.append(rec)
            bar.set_postfix(kl=f"{rec['kl']:.4f}", l0=f"{rec['l0']:.1f}")
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < end:
            save_checkpoint(step + 1)
    if end < cfg.steps:
        save_checkpoint(end)
        return None
    seconds = elapsed_before + time.perf_counter() - t0
    with torch.no_grad():  # fold the input scale back, as challenge.sae.train does
        sae.b_enc.mul_(s)
        sae.b_dec.mul_(s)
        sae.log_sparsity.copy_(firing_log10(sae, x_all))
    stats = {
        "train_seconds": round(seconds, 1),
        "steps_per_second": round(cfg.steps / seconds, 3) if seconds > 0 else None,
        "torch_threads": torch.get_num_threads(),
        "input_scale": s,
        "n_train": n,
        "ds_layers": list(layers),
        "history": history,
    }
    sae.meta = {"plateau": {"config": asdict(cfg), "objective": cfg.kind, "stats": stats}}
    if ckpt is not None:
        save_checkpoint(cfg.steps)
    return sae.eval(), stats


@torch.no_grad()
def e2e_objective(
    sae: SAE, engine, data: TailData, scale: float = 1.0, batch: int = 256
) -> Float[Tensor, " n"]:
    """KL(p(x) || p(SAE(x))) of every row of ``data``, the quantity e2e training minimises
    (``scale``: as in :func:`e2e_loss`; 1 for a trained, folded SAE)."""
    tail = _tail(engine)
    out = []
    for i in range(0, len(data), batch):
        idx = torch.arange(i, min(i + batch, len(data)))
        out.append(e2e_loss(sae, tail, data, idx, scale)[1]["kl"])
    return torch.cat(out)


@torch.no_grad()
def evaluate_e2e(
    sae: SAE,
    engine,
    tokens: Int[Tensor, "n pos"],
    acts: Float[Tensor, "n d_model"],
    mean: Float[Tensor, " d_model"] | None = None,
) -> dict[str, Any]:
    """An SAE spliced in at the write point, through the engine: 2-point paths ``x -> SAE(x)``
    (and ``x -> mean`` when given) in each prompt's context. Returns the local metrics of
    ``challenge.sae.evaluate_sae`` plus ``kl`` per row (KL(p(x) || p(SAE(x))), which is the
    increase of the cross-entropy H(p(x), .) over the clean H(p(x)); the track stores no next
    tokens, so the model's own distribution is the target), ``ce_clean`` (H(p(x))), ``top1_agree``
    and, with ``mean``, ``kl_mean_ablation`` and ``kl_recovered`` = 1 - KL_sae / KL_mean."""
    from challenge.sae.train import evaluate_sae

    x = torch.as_tensor(acts).float()
    rec = torch.cat([sae(x[i : i + 1024]) for i in range(0, len(x), 1024)])
    ends = [rec] + ([mean.float().expand_as(x)] if mean is not None else [])
    paths = torch.stack([x, *ends], 1)
    c = engine.curves(tokens, paths, desc="SAE spliced in")
    out: dict[str, Any] = dict(evaluate_sae(sae, x))
    out |= {
        "kl_rows": c.kl[:, 1],
        "kl": float(c.kl[:, 1].mean()),
        "ce_clean": float(c.ce[:, 0].mean()),
        "top1_agree": float((~c.top1_changed[:, 1]).mean()),
    }
    if mean is not None:
        out["kl_mean_ablation"] = float(c.kl[:, 2].mean())
        out["kl_recovered"] = 1.0 - out["kl"] / out["kl_mean_ablation"]
    return out
