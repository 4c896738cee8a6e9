"""Divergences between next-token distributions, in the fp32-stable forms the suite uses
everywhere (the engine's curves, the studies' pairwise comparisons).

Every form works with ``D = log q - log p`` so that no two large numbers are subtracted: the
textbook JS ``ln 2 - ...`` leaves an fp32 residue of ``ln 2 |1 - sum p|`` (~1e-5 over 49k
tokens), these are 0 term by term where the distributions agree.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

LN2 = math.log(2.0)


def half_log_mix(D: Tensor) -> Tensor:
    """``log((1 + e^D) / 2)`` = softplus(D) - ln 2, exactly 0 at D = 0 and accurate near it
    (``log1p(expm1(D) / 2)``), with the softplus form away from 0 where it cannot overflow."""
    near = D.abs() < 1
    return torch.where(near, torch.log1p(torch.expm1(D.clamp(-1, 1)) / 2), F.softplus(D) - LN2)


def divergence_block(vocab: int) -> int:
    """Steps per pass of :func:`distribution_divergences`: 128 up to a 64k vocabulary (SmolLM2:
    a 25 MB block), else the largest power of two whose block holds at most 2^22 floats
    (Gemma's 262k: 16 steps). Measured on one core: Gemma's JS pass takes 48 ms per row with 32
    or 128 steps per block and 23-29 ms with 4-16; the results are bit-identical."""
    if vocab <= 65536:
        return 128
    fit = (1 << 22) // vocab
    return 1 << (fit.bit_length() - 1) if fit else 1


def distribution_divergences(
    logits: Float[Tensor, "batch step vocab"], block: int | None = None, js: bool = True
) -> dict[str, Tensor]:
    """KL(p_0||p_s), JS(p_0, p_s), H(p_0, p_s) and top-1 change, against step 0 of each row.

    Step 0's log-probabilities and the base distribution are one computation (row 0 of the
    first block's ``log_softmax``), so every divergence of step 0 is exactly 0. In terms of
    D = log p_s - log p_0, so that no two large numbers are subtracted: KL = -sum p_0 D,
    CE = KL + H(p_0), and JS = -1/2 sum p_0 g(D) - 1/2 sum p_s g(-D) with
    g(D) = log((1 + e^D) / 2), which is 0 term by term where D = 0 (the textbook
    ``ln 2 - ...`` form leaves an fp32 residue of ln 2 |1 - sum p|, ~1e-5 over 49k tokens).
    Computed curve by curve in blocks of ``block`` steps (``None``: :func:`divergence_block`),
    so each pass stays in cache.
    ``js=False`` skips JS (its two transcendental passes cost more than KL and CE together)
    and returns it as NaN."""
    B, S, V = logits.shape
    block = block or divergence_block(V)
    out = {k: torch.empty(B, S, device=logits.device) for k in ("kl", "ce")}
    out["js"] = torch.full((B, S), float("nan"), device=logits.device)
    top = torch.empty(B, S, dtype=torch.long, device=logits.device)
    for b in range(B):
        lp0 = p0 = h0 = None
        for s0 in range(0, S, block):
            sl = slice(s0, s0 + block)
            L = torch.log_softmax(logits[b, sl].float(), dim=-1)
            if lp0 is None:  # the base distribution is step 0 of this same computation
                lp0 = L[0].clone()
                p0 = lp0.exp()
                h0 = -torch.dot(p0, lp0)
            top[b, sl] = L.max(-1).indices
            p = L.exp() if js else None
            D = L.sub_(lp0)  # in place: log p_s is not needed any more
            kl = -(D @ p0)
            out["kl"][b, sl], out["ce"][b, sl] = kl, kl + h0
            if js:
                out["js"][b, sl] = -0.5 * (half_log_mix(D) @ p0) - 0.5 * torch.linalg.vecdot(
                    p, half_log_mix(-D)
                )
    return {
        "kl": out["kl"].clamp_min(0),
        "js": out["js"].clamp_min(0),
        "ce": out["ce"],
        "top1_changed": top != top[:, :1],
    }


def js_rows(lp: Float[Tensor, "n V"], lq: Float[Tensor, "n V"]) -> Float[Tensor, " n"]:
    """Jensen-Shannon divergence (nats) between rows of two log-probability arrays:
    ``-1/2 sum p g(D) - 1/2 sum q g(-D)`` with ``D = log q - log p`` and
    ``g(D) = log((1 + e^D) / 2)`` (:func:`half_log_mix`), exactly 0 for equal rows."""
    D = lq - lp
    p, q = lp.exp(), lq.exp()
    js = -0.5 * (p * half_log_mix(D)).sum(-1) - 0.5 * (q * half_log_mix(-D)).sum(-1)
    return js.clamp_min(0)


def js_to_reference(
    logp: Float[Tensor, "n V"], ref_logp: Float[Tensor, " V"]
) -> Float[Tensor, " n"]:
    """JS(p_i, ref) for each row (nats)."""
    return js_rows(logp, ref_logp.expand_as(logp))
