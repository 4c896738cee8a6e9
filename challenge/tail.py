"""Fast tail runner: the layers after the write point, for the last position only.

A perturbation at the last position of a causal model changes nothing at earlier positions,
so their keys and values can be computed once per prompt (the *frozen prefix cache*) and
every perturbed point then costs one token through the remaining layers. Rows are grouped
``[B, S]``: ``B`` contexts (each with its own prefix cache) times ``S`` points per context;
attention scores broadcast over ``S`` so the cache is never copied.

Supported blocks: GPT-2 (LayerNorm, learned positions, GELU MLP, multi-head attention),
Llama (RMSNorm, rotary, gated SiLU MLP, grouped-query attention) and Gemma 3 (Llama's plus an
RMSNorm of q and k over ``d_head`` before the rotary map, RMSNorms of the attention and MLP
outputs before they are added to the residual stream, and local layers that see only the last
``window_size`` keys; the ``(1 + w)`` norm weights and the embedding scale are already in
TransformerLens' weights, and each layer's rotary tables carry its own base).
``supports(model)`` says whether a model qualifies; the engine falls back to the hook-based
reference otherwise. Equality with TransformerLens' own forward is tested in
``tests/test_tail.py`` and ``tests/test_tail_gemma.py``.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from challenge import hooks

_ACTS = {
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_fast": lambda x: F.gelu(x, approximate="tanh"),
    "gelu": F.gelu,
    "silu": F.silu,
    "relu": F.relu,
}


def _linear(x: Tensor, W: Tensor, b: Tensor | None) -> Tensor:
    """``x @ W (+ b)`` on the flattened rows; biases that are all zero were dropped at packing
    (``addmm`` would first copy the broadcast bias into the output: a full extra pass)."""
    y = x.flatten(0, -2) @ W
    if b is not None:
        y += b
    return y.view(*x.shape[:-1], W.shape[1])


def _nonzero(b: Tensor) -> Tensor | None:
    return b if bool((b != 0).any()) else None


def _swap_halves(w: Tensor) -> Tensor:
    n = w.shape[-1] // 2
    return torch.cat([w[..., n:], w[..., :n]], dim=-1)


# architectures whose q/k norm runs over all heads at once (TransformerLens' OLMo branch)
_FULL_VECTOR_QK_NORM = ("OlmoeForCausalLM", "Olmo2ForCausalLM", "Olmo3ForCausalLM")

# The final norm weight folded into the unembedding, shared by every runner of one model:
# for a 262k vocabulary it is 671 MB, and the studies build one runner per write layer.
_UNEMBED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _folded_unembed(model: HookedTransformer) -> tuple[Tensor, Tensor | None]:
    lnf, W_U, b_U = model.ln_final, model.unembed.W_U, model.unembed.b_U
    key = tuple((t.data_ptr(), t._version) for t in (lnf.w, W_U, b_U))
    hit = _UNEMBED.get(model)
    if hit is not None and hit[0] == key:
        return hit[1], hit[2]
    if hasattr(lnf, "b"):
        b_U = b_U + lnf.b @ W_U
    folded = ((lnf.w[:, None] * W_U).contiguous(), _nonzero(b_U))
    _UNEMBED[model] = (key, *folded)
    return folded


def supports(model: HookedTransformer) -> tuple[bool, str]:
    """Whether the tail runner implements this model's blocks exactly (and why not)."""
    c = model.cfg
    checks = {
        "normalization_type in (LN, RMS)": c.normalization_type in ("LN", "RMS"),
        "positional_embedding_type in (standard, rotary)": c.positional_embedding_type
        in ("standard", "rotary"),
        "act_fn supported": c.act_fn in _ACTS,
        "not attn_only": not c.attn_only,
        "not parallel_attn_mlp": not getattr(c, "parallel_attn_mlp", False),
        "no attention / logit soft-capping": not (
            getattr(c, "attn_scores_soft_cap", -1.0) > 0
            or getattr(c, "output_logits_soft_cap", -1.0) > 0
        ),
        "q/k norm over d_head (not over all heads)": not getattr(c, "use_qk_norm", False)
        or c.original_architecture not in _FULL_VECTOR_QK_NORM,
        "local attention has an integer window": not c.use_local_attn
        or isinstance(c.window_size, int),
        "no attention sinks / log-n scaling / q,k,v clipping": not (
            getattr(c, "use_attention_sinks", False)
            or getattr(c, "use_logn_attn", False)
            or getattr(c, "clip_qkv", None) is not None
        ),
        "rotary not adjacent-pairs, full dim": c.positional_embedding_type != "rotary"
        or (
            not c.rotary_adjacent_pairs and c.rotary_dim == c.d_head and not c.use_dynamic_ntk_rope
        ),
    }
    bad = [k for k, ok in checks.items() if not ok]
    return (not bad, "; ".join(bad) if bad else "ok")


@dataclass
class PrefixCache:
    """Keys/values of the unperturbed prefix (positions ``0..P-1``) for layers ``>= start``."""

    start: int
    keys: list[Float[Tensor, "batch prefix kv_head d_head"]]
    values: list[Float[Tensor, "batch prefix kv_head d_head"]]
    position: int  # index of the perturbed (last) position, = P


class TailRunner:
    """Runs ``blocks[start:]`` at the last position from a write-point residual."""

    def __init__(self, model: HookedTransformer, start: int):
        ok, why = supports(model)
        if not ok:
            raise ValueError(f"tail runner does not support this model: {why}")
        self.model, self.start, c = model, start, model.cfg
        self.n_layers, self.H, self.dh = c.n_layers, c.n_heads, c.d_head
        self.G = c.n_key_value_heads or c.n_heads
        self.rms = c.normalization_type == "RMS"
        self.rotary = c.positional_embedding_type == "rotary"
        self.act = _ACTS[c.act_fn]
        self.gated = c.gated_mlp
        self.eps = c.eps
        self.qk_norm = bool(getattr(c, "use_qk_norm", False))  # Gemma 3: RMSNorm of q, k per head
        self.post_norms = bool(getattr(c, "use_normalization_before_and_after", False))
        self.layers = [self._pack(model.blocks[i]) for i in range(start, c.n_layers)]
        # keys a local-attention layer sees: the last ``window`` positions (None: all)
        self.windows = [
            c.window_size if model.blocks[i].attn.attn_type == "local" else None
            for i in range(start, c.n_layers)
        ]
        self._folded: dict[int, list[dict[str, Tensor]]] = {}
        # final norm weight (and bias) folded into the unembedding
        self.final_ln = c.final_rms or c.normalization_type == "RMS"
        self.W_U, self.b_U = _folded_unembed(model)

    def _pack(self, blk) -> dict[str, Tensor]:
        a, m = blk.attn, blk.mlp
        WK = a._W_K if hasattr(a, "_W_K") else a.W_K
        WV = a._W_V if hasattr(a, "_W_V") else a.W_V
        bK = a._b_K if hasattr(a, "_b_K") else a.b_K
        bV = a._b_V if hasattr(a, "_b_V") else a.b_V
        d = a.W_Q.shape[1]
        # [d, (H + 2G) * dh] so one matmul gives q, k, v
        W_qkv = torch.cat([w.permute(1, 0, 2).reshape(d, -1) for w in (a.W_Q, WK, WV)], dim=1)
        b_qkv = torch.cat([a.b_Q.reshape(-1), bK.reshape(-1), bV.reshape(-1)])
        p = {
            "ln1_w": blk.ln1.w,
            "ln2_w": blk.ln2.w,
            "W_qkv": W_qkv.contiguous(),
            "b_qkv": b_qkv,
            "W_O": a.W_O.reshape(-1, a.W_O.shape[-1]).contiguous(),
            "b_O": a.b_O,
            "scale": torch.tensor(float(a.attn_scale)),
            "W_out": m.W_out,
            "b_out": m.b_out,
        }
        if not self.rms:
            p["ln1_b"], p["ln2_b"] = blk.ln1.b, blk.ln2.b
        if self.gated:
            p["W_in"] = torch.cat([m.W_gate, m.W_in], dim=1).contiguous()
            p["b_in"] = torch.cat([torch.zeros_like(m.b_in), m.b_in])
        else:
            p["W_in"], p["b_in"] = m.W_in, m.b_in
        if self.rotary:
            p["cos"], p["sin"] = a.rotary_cos, a.rotary_sin
        if self.qk_norm:
            p["q_norm_w"], p["k_norm_w"] = a.q_norm.w, a.k_norm.w
        if self.post_norms:
            p["ln1_post_w"], p["ln2_post_w"] = blk.ln1_post.w, blk.ln2_post.w
        return p

    def _rope_matrix(self, p: dict, position: int) -> Tensor:
        """Rotary embedding at one position as a [d_head, d_head] matrix: rope(x) = x @ R."""
        n = self.dh // 2
        cos, sin = p["cos"][position], p["sin"][position]
        M = torch.zeros(self.dh, self.dh, dtype=cos.dtype, device=cos.device)
        idx = torch.arange(n, device=cos.device)
        M[idx + n, idx] = -1.0  # rotate_half: out[:n] = -x[n:]
        M[idx, idx + n] = 1.0  #              out[n:] =  x[:n]
        return torch.diag(cos) + M * sin[None, :]

    def folded(self, position: int) -> list[dict[str, Tensor]]:
        """Packs for rows at ``position``: norm weights, the rotary map at that position and
        the attention scale folded into the matrices (exact algebra, float rounding aside).

        With a q/k norm between the projection and the rotary map (Gemma 3), the rotary map
        cannot enter the matrices: the norm weight, the rotary map and the scale become two
        vectors per side, ``rope(u * w) = u * (w cos) + rotate_half(u) * (swap(w) sin)``."""
        if position in self._folded:
            return self._folded[position]
        H, G, dh = self.H, self.G, self.dh
        out = []
        for p in self.layers:
            W, b = p["W_qkv"].clone(), p["b_qkv"].clone()
            if not self.rms:  # LN bias passes through the next matrix
                b = b + p["ln1_b"] @ W
            W = p["ln1_w"][:, None] * W
            if self.rotary and not self.qk_norm:
                R = self._rope_matrix(p, position)
                for lo, nh in ((0, H), (H * dh, G)):
                    blk = W[:, lo : lo + nh * dh].unflatten(-1, (nh, dh))
                    W[:, lo : lo + nh * dh] = (blk @ R).flatten(-2)
                    b[lo : lo + nh * dh] = (
                        b[lo : lo + nh * dh].unflatten(-1, (nh, dh)) @ R
                    ).flatten()
            if not self.qk_norm:
                W[:, : H * dh] /= p["scale"]
                b[: H * dh] /= p["scale"]
            W_in, b_in = p["W_in"], p["b_in"]
            if not self.rms:
                b_in = b_in + p["ln2_b"] @ W_in
            f = dict(
                p,
                W_qkv=W.contiguous(),
                b_qkv=_nonzero(b),
                W_in=(p["ln2_w"][:, None] * W_in).contiguous(),
            )
            f.update(b_in=_nonzero(b_in), b_O=_nonzero(p["b_O"]), b_out=_nonzero(p["b_out"]))
            if self.qk_norm:
                cos, sin = p["cos"][position], p["sin"][position]
                qw, kw = p["q_norm_w"] / p["scale"], p["k_norm_w"]
                f.update(q_cos=qw * cos, q_sin=_swap_halves(qw) * sin)
                f.update(k_cos=kw * cos, k_sin=_swap_halves(kw) * sin)
            out.append(f)
        self._folded[position] = out
        return out

    def _final_norm(self, x: Tensor) -> Tensor:
        return self._unit_norm(x)

    def _unit_norm(self, x: Tensor) -> Tensor:
        """RMS/Layer normalisation without the weight (folded into the next matrix)."""
        if not self.rms:
            x = x - x.mean(-1, keepdim=True)
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)

    def _norm(self, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        if self.rms:
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * w
        x = x - x.mean(-1, keepdim=True)
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * w + b

    def _rope(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        n = x.shape[-1] // 2
        flipped = torch.cat([-x[..., n:], x[..., :n]], dim=-1)
        return x * cos + flipped * sin

    def _post_norm(self, x: Tensor, p: dict, name: str) -> Tensor:
        """Gemma's RMSNorm of a sub-layer's output before the residual add (identity otherwise)."""
        return self._norm(x, p[name], None) if self.post_norms else x

    def _window(self, i: int, P: int) -> int:
        """First prefix position that layer ``start + i`` attends to from position ``P``."""
        w = self.windows[i]
        return 0 if w is None else max(0, P - w + 1)

    def _qkv(self, p: dict, h: Tensor, positions: Tensor | int) -> tuple[Tensor, Tensor, Tensor]:
        H, G, dh = self.H, self.G, self.dh
        qkv = h @ p["W_qkv"] + p["b_qkv"]
        q, k, v = qkv.split([H * dh, G * dh, G * dh], dim=-1)
        q = q.unflatten(-1, (H, dh))
        k = k.unflatten(-1, (G, dh))
        v = v.unflatten(-1, (G, dh))
        if self.qk_norm:
            q, k = self._norm(q, p["q_norm_w"], None), self._norm(k, p["k_norm_w"], None)
        if self.rotary:
            cos, sin = p["cos"][positions], p["sin"][positions]
            if cos.dim() == 2:  # [pos, dh] -> broadcast over heads
                cos, sin = cos[:, None, :], sin[:, None, :]
            q, k = self._rope(q, cos, sin), self._rope(k, cos, sin)
        return q, k, v

    @torch.no_grad()
    def prefix(self, resid_pre: list[Float[Tensor, "batch pos d_model"]]) -> PrefixCache:
        """Build the cache from the clean residuals ``blocks[l].hook_resid_pre`` (l >= start)."""
        keys, values = [], []
        P = resid_pre[0].shape[1] - 1
        pos = torch.arange(P, device=resid_pre[0].device)
        for p, r in zip(self.layers, resid_pre, strict=True):
            h = self._norm(r[:, :P], p["ln1_w"], p.get("ln1_b"))
            _, k, v = self._qkv(p, h, pos)
            keys.append(k.contiguous())
            values.append(v.contiguous())
        return PrefixCache(start=self.start, keys=keys, values=values, position=P)

    @torch.no_grad()
    def prefix_from_write(self, resid: Float[Tensor, "batch pos d_model"]) -> PrefixCache:
        """Build the cache from the clean residual at the write point only, running the prefix
        positions through ``blocks[start:]`` with causal attention (no TransformerLens pass)."""
        B, T, _ = resid.shape
        P, G, R = T - 1, self.G, self.H // self.G
        x = resid[:, :P]
        pos = torch.arange(P, device=resid.device)
        causal = torch.ones(P, P, dtype=torch.bool, device=resid.device).tril()
        keys, values = [], []
        for i, p in enumerate(self.layers):
            allowed = causal
            if self.windows[i] is not None:  # local attention: keys > query - window
                allowed = causal & (pos[None, :] > pos[:, None] - self.windows[i])
            q, k, v = self._qkv(p, self._norm(x, p["ln1_w"], p.get("ln1_b")), pos)
            keys.append(k.contiguous())
            values.append(v.contiguous())
            if i == len(self.layers) - 1:
                break  # the last block's output is not needed for any cached key/value
            scores = torch.einsum("bqgrd,bkgd->bgrqk", q.unflatten(2, (G, R)), k) / p["scale"]
            probs = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
            z = torch.einsum("bgrqk,bkgd->bqgrd", probs, v).reshape(B, P, -1)
            x = x + self._post_norm(_linear(z, p["W_O"], _nonzero(p["b_O"])), p, "ln1_post_w")
            pre = _linear(self._norm(x, p["ln2_w"], p.get("ln2_b")), p["W_in"], _nonzero(p["b_in"]))
            if self.gated:
                gate, lin = pre.chunk(2, dim=-1)
                post = self.act(gate) * lin
            else:
                post = self.act(pre)
            x = x + self._post_norm(
                _linear(post, p["W_out"], _nonzero(p["b_out"])), p, "ln2_post_w"
            )
        return PrefixCache(start=self.start, keys=keys, values=values, position=P)

    def run(
        self,
        x: Float[Tensor, "batch step d_model"],
        cache: PrefixCache,
        read_layers: tuple[int, ...] = (),
        capture_mlp_pre: bool = False,
    ) -> dict[str, Tensor]:
        """Residual after every block in ``read_layers`` (``resid_post``), final logits, and
        optionally the MLP pre-activations (gate for gated MLPs) of every layer."""
        B, S, _ = x.shape
        G, R, dh = self.G, self.H // self.G, self.dh
        resid = x
        out: dict[str, Tensor] = {}
        mlp_pre = []
        for i, p in enumerate(self.folded(cache.position)):
            layer = self.start + i
            qkv = _linear(self._unit_norm(resid), p["W_qkv"], p["b_qkv"])
            q, k, v = qkv.split([self.H * dh, G * dh, G * dh], dim=-1)
            if self.qk_norm:  # norm over d_head, then the folded (weight, rotary, scale) map
                q = self._unit_norm(q.unflatten(-1, (self.H, dh)))
                q = self._rope(q, p["q_cos"], p["q_sin"]).flatten(-2)
                k = self._unit_norm(k.unflatten(-1, (G, dh)))
                k = self._rope(k, p["k_cos"], p["k_sin"]).flatten(-2)
            qg = q.unflatten(-1, (G, R, dh))  # [B,S,G,R,dh], rotated and scaled
            k, v = k.unflatten(-1, (G, dh)), v.unflatten(-1, (G, dh))  # [B,S,G,dh]
            Kp, Vp = cache.keys[i], cache.values[i]  # [B,P,G,dh]
            lo = self._window(i, cache.position)
            if lo:
                Kp, Vp = Kp[:, lo:], Vp[:, lo:]
            s_pre = torch.einsum("bsgrd,bpgd->bsgrp", qg, Kp)
            s_self = (qg * k.unsqueeze(3)).sum(-1, keepdim=True)
            probs = torch.softmax(torch.cat([s_pre, s_self], dim=-1), dim=-1)
            z = torch.einsum("bsgrp,bpgd->bsgrd", probs[..., :-1], Vp) + probs[
                ..., -1:
            ] * v.unsqueeze(3)
            resid = resid + self._post_norm(
                _linear(z.reshape(B, S, -1), p["W_O"], p["b_O"]), p, "ln1_post_w"
            )
            pre = _linear(self._unit_norm(resid), p["W_in"], p["b_in"])
            if self.gated:
                gate, lin = pre.chunk(2, dim=-1)
                post = self.act(gate) * lin
                if capture_mlp_pre:
                    mlp_pre.append(gate)
            else:
                post = self.act(pre)
                if capture_mlp_pre:
                    mlp_pre.append(pre)
            resid = resid + self._post_norm(_linear(post, p["W_out"], p["b_out"]), p, "ln2_post_w")
            if layer in read_layers:
                out[hooks.resid_post(layer)] = resid
        out["logits"] = _linear(self._final_norm(resid), self.W_U, self.b_U)
        if capture_mlp_pre:
            out["mlp_pre"] = torch.stack(mlp_pre, dim=2)  # [B,S,n_tail_layers,d_mlp]
        return out


def prefix_tokens_check(tokens: Int[Tensor, "batch pos"]) -> None:
    if tokens.dim() != 2 or tokens.shape[1] < 2:
        raise ValueError(f"tokens must be [batch, pos>=2], got {tuple(tokens.shape)}")
