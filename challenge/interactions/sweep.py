"""The run loop of ``plateau interactions``: for every lambda, train and measure a dictionary
pair on every chosen MLP of a track's model, splice them in for the CE, write ``results.json``.

For each layer ``L`` the input dictionary reads ``blocks.L.ln2.hook_normalized`` and the output
dictionary ``blocks.L.hook_mlp_out`` (``challenge.hooks``); they are trained together
(``challenge.interactions.trainer``). The text is the track's prompt source
(``challenge.prompts``), joined and cut into ``ctx``-token windows
(``challenge.interactions.data``).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from challenge.interactions.config import InteractionsConfig
from challenge.interactions.data import cache_inputs, text_windows
from challenge.interactions.evaluate import eval_layer, next_token_ce
from challenge.interactions.jacobian import MLPWeights
from challenge.interactions.pairs import LayerPair, lam_key
from challenge.interactions.results import InteractionsResult, headline
from challenge.interactions.splice import Splice
from challenge.interactions.trainer import train_layer
from challenge.results import TrackRef
from challenge.rng import seed_for
from challenge.track import Track


def run(
    cfg: InteractionsConfig,
    track: Track | str,
    *,
    out_dir: str | Path,
    save_dicts: bool = True,
    progress: bool = True,
) -> InteractionsResult:
    """Train dictionary pairs for every lambda on the chosen layers of ``track``'s model (a
    :class:`~challenge.track.Track`, registered id or directory); write
    ``<out_dir>/results.json`` (and, when ``save_dicts``, the dictionaries under
    ``<out_dir>/dicts/lam<value>/L<layer>/{in,out}``) and return the result. ``progress``: show
    progress bars."""
    from challenge import __version__
    from challenge.models import load_model
    from challenge.track import resolve_track

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t_start = time.perf_counter()
    tr = resolve_track(track)
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
    out_dir = Path(out_dir)

    per_lambda: dict[str, Any] = {}
    ce_clean = next_token_ce(model, eval_w) if cfg.eval_ce else None
    for li, lam in enumerate(cfg.lambdas):
        pairs: dict[int, LayerPair] = {}
        rows = {}
        it = tqdm(layers, desc=f"lambda={lam:g}", disable=not progress)
        for L in it:
            seed = seed_for(cfg.seed, "interactions.layer", (li, L))
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
            if save_dicts:
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
