"""The perturbation engine: the one loop that every protocol, scorer, baseline and study calls.

Given context prompts ``tokens [B, T]`` and paths of activations ``[B, S, d]`` to write at the
last position of ``write_hook``, it returns response curves measured against the first point
of each path: L2 distance at ``read_hook``, KL(p_0 || p_s), Jensen-Shannon, and the
cross-entropy H(p_0, p_s) of the next-token distribution, plus whether the top-1 token changed.

Backends: ``tail`` runs only the layers after the write point, for the last position, over a
frozen prefix key/value cache (``challenge.tail``); ``reference`` is a full forward pass with a
hook per row, as the papers' code does. ``auto`` picks ``tail`` when the model is supported.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from challenge import checks
from challenge.activations import capture
from challenge.divergence import distribution_divergences
from challenge.errors import ConfigError
from challenge.hooks import RESID_PATTERN as HOOK_PATTERN
from challenge.hooks import mlp_pre, parse_resid, resid_post, resid_pre
from challenge.tail import PrefixCache, TailRunner, supports


@dataclass
class EngineConfig:
    """Where to write and read, and how to run."""

    write_hook: str = "blocks.1.hook_resid_pre"
    """Residual hook whose last position is overwritten (``blocks.L.hook_resid_pre/post``)."""
    read_hook: str | None = None
    """Residual hook read out (``None``: the last block's ``hook_resid_post``)."""
    backend: Literal["auto", "tail", "reference"] = "auto"
    """``tail``: the blocks after the write point over a prefix cache; ``reference``: a full
    forward with hooks; ``auto``: ``tail`` where the model supports it."""
    max_rows: int = 1024
    """Rows (curves x steps) per forward chunk; bounds memory."""
    progress: bool = True
    """A progress bar per ``curves`` call (on stderr)."""

    def __post_init__(self) -> None:
        for name in ("write_hook", "read_hook"):
            hook = getattr(self, name)
            if (hook is not None or name == "write_hook") and not (
                isinstance(hook, str) and HOOK_PATTERN.match(hook)
            ):
                raise ConfigError(f"{hook!r} is not blocks.L.hook_resid_pre/post", field=name)
        checks.choice(self.backend, ("auto", "tail", "reference"), "backend")
        checks.integer(self.max_rows, "max_rows", minimum=1)
        checks.boolean(self.progress, "progress")


@dataclass
class Curves:
    """Response curves ``[B, S]`` against the first point of each path."""

    l2: np.ndarray
    kl: np.ndarray
    js: np.ndarray
    ce: np.ndarray
    top1_changed: np.ndarray
    read: np.ndarray | None = None  # [B, S, d] read-out residuals, when asked for
    mlp_pre: np.ndarray | None = None  # [B, S, layers, d_mlp] MLP (gate) pre-activations
    meta: dict = field(default_factory=dict)
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # what a ``reduce`` hook returned

    METRICS = ("l2", "kl", "js", "ce")

    def __getitem__(self, key: str) -> np.ndarray:
        return getattr(self, key)

    @staticmethod
    def cat(parts: list[Curves]) -> Curves:
        def join(name):
            vals = [getattr(p, name) for p in parts]
            return None if vals[0] is None else np.concatenate(vals, axis=0)

        names = ("l2", "kl", "js", "ce", "top1_changed", "read", "mlp_pre")
        keys = parts[0].extra.keys() if parts else ()
        extra = {k: np.concatenate([p.extra[k] for p in parts], axis=0) for k in keys}
        return Curves(
            **{n: join(n) for n in names}, meta=parts[0].meta if parts else {}, extra=extra
        )

    def arrays(self) -> dict[str, np.ndarray]:
        names = ("l2", "kl", "js", "ce", "top1_changed", "read", "mlp_pre")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}


class PerturbationEngine:
    """Writes activations at the last position of ``write_hook`` and measures the response."""

    def __init__(self, model: HookedTransformer, cfg: EngineConfig | None = None, **overrides):
        self.cfg = cfg = cfg or EngineConfig(**overrides)
        self.model = model
        n = model.cfg.n_layers
        self.start = parse_resid(cfg.write_hook, n, "write_hook")
        if self.start >= n:
            raise ConfigError(
                "write point after the last block leaves nothing to run", field="write_hook"
            )
        read = cfg.read_hook or resid_post(n - 1)
        self.read_after = parse_resid(read, n, "read_hook") - 1  # block whose output is read
        if self.read_after < self.start:
            raise ConfigError(
                f"read hook {read} is before the write hook {cfg.write_hook}", field="read_hook"
            )
        self.read_hook = resid_post(self.read_after)
        ok, why = supports(model)
        if cfg.backend == "tail" and not ok:
            raise ConfigError(f"tail backend unsupported for this model: {why}", field="backend")
        self.backend = (
            "tail" if (cfg.backend == "tail" or (cfg.backend == "auto" and ok)) else "reference"
        )
        self.tail = TailRunner(model, self.start) if self.backend == "tail" else None
        self.device = next(model.parameters()).device
        self._prefixes: OrderedDict[bytes, tuple[Tensor, PrefixCache]] = OrderedDict()

    PREFIX_CACHE_BYTES = 2**31
    """Memory for memoised prefixes (least recently used dropped beyond it): probes that call
    the engine again and again on the same contexts (bisection rounds) compute each prefix once."""

    def _prefix(self, tokens: Tensor) -> tuple[Tensor, PrefixCache]:
        """The clean residual at the write point (all positions) and the tail's prefix cache for
        ``tokens``; a pure function of the tokens, memoised by their bytes."""
        try:
            key = hashlib.sha256(
                tokens.cpu().numpy().tobytes() + str(tuple(tokens.shape)).encode()
            ).digest()
        except RuntimeError:  # under a functorch transform (jvp / vmap): no storage to hash
            key = None
        hit = self._prefixes.get(key) if key is not None else None
        if hit is not None:
            self._prefixes.move_to_end(key)
            return hit
        name = self._write_name()
        with torch.no_grad():  # TransformerLens runs only the blocks before the write point
            prefix = capture(
                self.model,
                tokens,
                [name],
                positions="all",
                batch_size=max(1, len(tokens)),  # one forward, as the prefix cache needs
                float32=False,  # the model's own dtype, as the tail runs in it
            )[name]
            cache = self.tail.prefix_from_write(prefix)
        if key is None:
            return prefix, cache
        self._prefixes[key] = (prefix, cache)
        size = lambda e: sum(t.numel() * t.element_size() for t in (e[0], *e[1].keys, *e[1].values))  # noqa: E731
        while (
            len(self._prefixes) > 1
            and sum(map(size, self._prefixes.values())) > self.PREFIX_CACHE_BYTES
        ):
            self._prefixes.popitem(last=False)
        return prefix, cache

    # ------------------------------------------------------------------ clean runs
    def _write_name(self) -> str:
        return resid_pre(self.start)

    @torch.no_grad()
    def clean(
        self, tokens: Int[Tensor, "n pos"], batch_size: int = 256, read: bool = True
    ) -> dict[str, Tensor]:
        """Unperturbed activations at the write (and read) point, last position: ``[n, d]``.

        With ``read=False`` the forward stops right after the write point."""
        hooks = [self._write_name(), self.read_hook] if read else [self._write_name()]
        acts = capture(self.model, tokens, hooks, positions="last", batch_size=batch_size)
        out = {"write": acts[self._write_name()]}
        if read:
            out["read"] = acts[self.read_hook]
        return out

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        tokens: Int[Tensor, "batch pos"],
        points: Float[Tensor, "batch step d_model"],
        capture_mlp_pre: bool = False,
    ) -> dict[str, Tensor]:
        """Read-out residuals ``[B, S, d]`` and logits ``[B, S, vocab]`` with ``points`` written.

        Differentiable with respect to ``points`` (used for Jacobians of the read-out)."""
        tokens = torch.as_tensor(tokens, device=self.device)
        # at least float32 (float64 points stay float64, for a float64 model)
        points = points.to(self.device, torch.promote_types(points.dtype, torch.float32))
        if tokens.dim() != 2 or points.dim() != 3 or points.shape[0] != tokens.shape[0]:
            raise ConfigError(
                f"tokens [B,T] and points [B,S,d] expected, got {tuple(tokens.shape)} and {tuple(points.shape)}"
            )
        if self.backend == "tail":
            return self._forward_tail(tokens, points, capture_mlp_pre)
        return self._forward_reference(tokens, points, capture_mlp_pre)

    def _forward_tail(self, tokens, points, capture_mlp_pre):
        prefix, cache = self._prefix(tokens)
        out = self.tail.run(
            points.to(prefix.dtype),  # the model's dtype (a no-op for float32 models)
            cache,
            read_layers=(self.read_after,),
            capture_mlp_pre=capture_mlp_pre,
        )
        res = {"read": out[self.read_hook], "logits": out["logits"]}
        if capture_mlp_pre:
            res["mlp_pre"] = out["mlp_pre"]
        return res

    def _forward_reference(self, tokens, points, capture_mlp_pre):
        B, S, d = points.shape
        flat_tokens = tokens.repeat_interleave(S, dim=0)
        flat_points = points.reshape(B * S, d)
        store: dict[str, Tensor] = {}
        pre: dict[int, Tensor] = {}

        def write(act, hook):
            act = act.clone()
            act[:, -1] = flat_points.to(act.dtype)
            return act

        def read(act, hook):
            store["read"] = act[:, -1]

        hooks = [(self._write_name(), write), (self.read_hook, read)]
        if capture_mlp_pre:
            for i in range(self.start, self.model.cfg.n_layers):

                def grab(act, hook, i=i):
                    pre[i] = act[:, -1]

                hooks.append((mlp_pre(i), grab))
        logits = self.model.run_with_hooks(flat_tokens, fwd_hooks=hooks)[:, -1]
        res = {"read": store["read"].reshape(B, S, -1), "logits": logits.reshape(B, S, -1)}
        if capture_mlp_pre:
            res["mlp_pre"] = torch.stack([pre[i] for i in sorted(pre)], dim=1).reshape(
                B, S, len(pre), -1
            )
        return res

    # ------------------------------------------------------------------ curves
    @torch.no_grad()
    def curves(
        self,
        tokens: Int[Tensor, "batch pos"],
        paths: Float[Tensor, "batch step d_model"],
        *,
        return_read: bool = False,
        capture_mlp_pre: bool = False,
        keep_mlp_pre: bool = True,
        reduce: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None,
        max_rows: int | None = None,
        desc: str = "curves",
        js: bool = True,
    ) -> Curves:
        """Response curves for each path, measured against the path's first point.

        ``reduce(out)`` is called on every chunk's forward output (``read``, ``logits`` and, with
        ``capture_mlp_pre``, ``mlp_pre``) and its tensors ``[b, ...]`` are concatenated into
        ``Curves.extra``: per-step statistics of what is too large to keep (the studies reduce
        the MLP pre-activations to sign flips this way; ``keep_mlp_pre=False`` drops the raw
        array). ``max_rows`` overrides the engine's rows per forward call; ``js=False`` leaves
        the Jensen-Shannon curves NaN (the costliest divergence; the scorer's probes need only L2
        and KL)."""
        tokens = torch.as_tensor(tokens)
        paths = torch.as_tensor(paths, dtype=torch.float32)
        B, S, _ = paths.shape
        if tokens.shape[0] != B:
            raise ConfigError(f"{tokens.shape[0]} contexts for {B} paths", field="tokens")
        per = max(1, (max_rows or self.cfg.max_rows) // S)
        parts = []
        bar = tqdm(
            range(0, B, per), desc=desc, disable=not self.cfg.progress or B <= per, leave=False
        )
        for i in bar:
            out = self.forward(
                tokens[i : i + per], paths[i : i + per], capture_mlp_pre=capture_mlp_pre
            )
            read = out["read"].float()
            l2 = (read - read[:, :1]).norm(dim=-1)
            div = distribution_divergences(out["logits"], js=js)
            parts.append(
                Curves(
                    l2=l2.cpu().numpy(),
                    **{k: v.cpu().numpy() for k, v in div.items()},
                    read=read.cpu().numpy() if return_read else None,
                    mlp_pre=(
                        out["mlp_pre"].cpu().numpy() if capture_mlp_pre and keep_mlp_pre else None
                    ),
                    extra={
                        k: v.detach().cpu().numpy()
                        for k, v in (reduce(out) if reduce else {}).items()
                    },
                )
            )
            del out
        curves = Curves.cat(parts)
        curves.meta = self.describe()
        return curves

    def describe(self) -> dict:
        return {
            "write_hook": self._write_name(),
            "read_hook": self.read_hook,
            "position": -1,
            "backend": self.backend,
            "engine": asdict(self.cfg),
        }
