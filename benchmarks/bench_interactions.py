"""Training-step cost: active-only Jacobian penalty vs the naive dense autograd Jacobian.

One training step = encode/decode both dictionaries, the Jacobian-L1 penalty, backward, Adam.
``sparse``: closed-form ``k x k`` Jacobian on active latents (``active_jacobian``).
``dense``: the full ``n_latents x n_latents`` Jacobian per token by ``vmap(jacrev)``
(differentiable),
then the same active entries are penalised, so both steps optimise the same loss.
``none``: no penalty (plain TopK SAE pair), for reference.

    python benchmarks/bench_interactions.py --layer 6 --n-latents 2048 --k 16 --tokens 16
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from challenge.interactions.data import cache_inputs, text_windows  # noqa: E402
from challenge.interactions.dictionaries import new_dictionary  # noqa: E402
from challenge.interactions.jacobian import (  # noqa: E402
    MLPWeights,
    active_jacobian,
    dense_jacobian,
    jacobian_penalty,
    restrict,
)
from challenge.prompts import PromptSpec  # noqa: E402
from challenge.sae import SAE  # noqa: E402


def make_step(kind: str, sae_in: SAE, sae_out: SAE, mlp: MLPWeights, opt, lam: float = 0.3):
    def step(x: torch.Tensor) -> float:
        y = mlp(x)
        vals, idx = sae_in.encode_topk(x)
        loss = (sae_in.decode_topk(vals, idx) - x).pow(2).sum(-1).mean() + (
            sae_out.forward_topk(y) - y
        ).pow(2).sum(-1).mean()
        if kind == "sparse":
            pen = jacobian_penalty(active_jacobian(sae_in, sae_out, mlp, vals, idx).J)
        elif kind == "dense":
            Jd = dense_jacobian(sae_in, sae_out, mlp, sae_in.dense_codes(vals, idx))
            with torch.no_grad():
                vo, io = sae_out.encode_topk(mlp(sae_in.decode_topk(vals, idx)))
            mask = (vo > 0)[:, :, None] & (vals > 0)[:, None, :]
            pen = jacobian_penalty(restrict(Jd, io, idx) * mask)
        else:
            pen = torch.zeros(())
        loss = loss + lam * pen
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(pen.detach())

    return step


def bench(step, x: torch.Tensor, reps: int) -> tuple[float, float]:
    pen = step(x)  # warm-up
    t0 = time.perf_counter()
    for _ in range(reps):
        step(x)
    return (time.perf_counter() - t0) / reps, pen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layer", type=int, default=6)
    ap.add_argument("--n-latents", type=int, default=2048)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument(
        "--tokens", type=int, default=16, help="batch for the sparse-vs-dense comparison"
    )
    ap.add_argument(
        "--big-batch", type=int, default=256, help="batch for the sparse-only throughput row"
    )
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=str, default="")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from challenge.models import load_model

    lm = load_model("smollm2-135m", device="cpu")
    wins = text_windows(PromptSpec(), lm.tokenizer, 4, 128, seed=0)
    x_all = cache_inputs(lm.model, wins, [a.layer])[a.layer]
    mlp = MLPWeights.from_model(lm.model, a.layer)
    rows = []

    def run(kind: str, n_tok: int) -> dict:
        sae_in = new_dictionary(576, a.n_latents, a.k, torch.Generator().manual_seed(0))
        sae_out = new_dictionary(576, a.n_latents, a.k, torch.Generator().manual_seed(1))
        opt = torch.optim.Adam(list(sae_in.parameters()) + list(sae_out.parameters()), lr=1e-4)
        s, pen = bench(make_step(kind, sae_in, sae_out, mlp, opt), x_all[:n_tok], a.reps)
        r = {
            "kind": kind,
            "tokens": n_tok,
            "sec_per_step": s,
            "ms_per_token": 1e3 * s / n_tok,
            "penalty": pen,
        }
        print(json.dumps(r))
        rows.append(r)
        return r

    none = run("none", a.tokens)
    sp = run("sparse", a.tokens)
    de = run("dense", a.tokens)
    run("none", a.big_batch)
    spb = run("sparse", a.big_batch)
    summary = {
        "layer": a.layer,
        "n_latents": a.n_latents,
        "k": a.k,
        "threads": a.threads,
        "same_batch_tokens": a.tokens,
        "dense_over_sparse_step": de["sec_per_step"] / sp["sec_per_step"],
        "dense_over_sparse_penalty_overhead": (de["sec_per_step"] - none["sec_per_step"])
        / max(sp["sec_per_step"] - none["sec_per_step"], 1e-9),
        "dense_per_token_over_sparse_per_token_big_batch": de["ms_per_token"] / spb["ms_per_token"],
        "penalty_sparse_vs_dense_same_init": [sp["penalty"], de["penalty"]],
    }
    print(json.dumps(summary, indent=1))
    print(
        f"step time, {a.tokens} tokens: sparse {sp['sec_per_step'] * 1e3:.1f} ms, dense "
        f"{de['sec_per_step'] * 1e3:.1f} ms -> "
        f"dense/sparse = {summary['dense_over_sparse_step']:.1f}x; "
        f"per token vs sparse at batch {a.big_batch}: "
        f"{summary['dense_per_token_over_sparse_per_token_big_batch']:.0f}x"
    )
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"rows": rows, "summary": summary}, f, indent=1)


if __name__ == "__main__":
    main()
