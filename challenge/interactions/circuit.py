"""A circuit read off the sparse interaction graph on a templated task, checked by ablation.

Task: ``"The capital of {country} is"`` -> ``" {capital}"`` (pairs the embedded SmolLM2 gets
top-1). Graph nodes are dictionary latents at the last position: output latents of MLP ``L``
(``blocks.L.hook_mlp_out``) and input latents of MLP ``L`` (``blocks.L.ln2.hook_normalized``).
Edges:

* inside an MLP, input -> output: the active-only Jacobian ``J[o, i]`` (``active_jacobian``),
  scored as ``J[o, i] * z_in[i] * dlogit/dz_out[o]``;
* across layers, output latent at ``L' < L`` -> input latent at ``L``: ``dz_in[i]/dz_out[o'] *
  z_out[o']`` by autograd through attention/residual, with every MLP output at the last position
  replaced by its dictionary code (leaf) plus a frozen error term, so paths through intermediate
  MLPs are cut (they are represented by their own Jacobian edges);
* output latent -> target logit: ``dlogit/dz_out * z_out`` (same frozen-error graph).

Scores are averaged over the prompts (latent ids are shared), so the result is one circuit for
the template. Reading: top output latents by logit attribution (hop 1), their strongest Jacobian
input latents; then for each of those the strongest upstream output latents and *their* strongest
Jacobian inputs (hop 2). Check: zero the circuit's input latents at the last position (real
activations, reconstruction error kept) and compare the drop of the target logit with zeroing the
same number of random active input latents in the same layers.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from challenge import checks, hooks
from challenge.errors import ConfigError
from challenge.interactions.jacobian import active_jacobian
from challenge.interactions.pairs import LayerPair, load_pairs
from challenge.interactions.splice import Splice
from challenge.results import Result, TrackRef
from challenge.rng import seed_for
from challenge.track import Track

CAPITALS: tuple[tuple[str, str], ...] = (
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"),
    ("Japan", "Tokyo"), ("Russia", "Moscow"), ("China", "Beijing"), ("Greece", "Athens"),
    ("Canada", "Ottawa"), ("Austria", "Vienna"), ("Portugal", "Lisbon"), ("Norway", "Oslo"),
    ("Sweden", "Stockholm"), ("Ireland", "Dublin"), ("Kenya", "Nairobi"), ("Cuba", "Havana"),
    ("England", "London"),
)  # fmt: skip
TEMPLATE = "The capital of {} is"


@dataclass
class CircuitConfig:
    """A circuit read off the saved dictionaries of an interactions run, checked by ablation."""

    # the track and the run's folder are arguments of ``run`` (flags of the CLI command)

    lam: str = "lam0.3"
    """which saved dictionary set (``lam<value>``)"""
    n_out: int = 3
    """hop-1 output latents (by logit attribution)"""
    n_in: int = 2
    """input latents kept per output latent (strongest Jacobian edges)"""
    n_up: int = 2
    """upstream output latents kept per hop-1 input latent"""
    min_layer: int = 0
    """hop-1 output latents come from this layer or later"""
    n_random: int = 10
    """random draws of the ablation control"""
    seed: int = 0
    """run seed (stream ``interactions.circuit_random``)"""

    def __post_init__(self) -> None:
        for name in ("n_out", "n_in", "n_random"):
            checks.integer(getattr(self, name), name, minimum=1)
        for name in ("n_up", "min_layer"):
            checks.integer(getattr(self, name), name, minimum=0)
        if not isinstance(self.lam, str) or not self.lam.startswith("lam"):
            raise ConfigError(f"expected lam<value>, got {self.lam!r}", field="lam")
        checks.integer(self.seed, "seed")


def prompts(tokenizer) -> list[tuple[torch.Tensor, int]]:
    out = []
    for country, cap in CAPITALS:
        ids = tokenizer(TEMPLATE.format(country), return_tensors="pt").input_ids
        out.append((ids, tokenizer(" " + cap).input_ids[0]))
    return out


class _Tracer:
    """Forward with last-position output codes as leaves; records input codes with graph."""

    def __init__(self, model, pairs: dict[int, LayerPair]):
        self.model, self.pairs = model, pairs
        self.z_out: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.z_in: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def _in(self, p: LayerPair):
        def fn(act, hook):
            v, i = p.sae_in.encode_topk(act[0, -1:] / p.mlp.s_x)
            self.z_in[p.layer] = (v[0], i[0])
            return act

        return fn

    def _out(self, p: LayerPair):
        def fn(act, hook):
            y = act[0, -1:] / p.mlp.s_y
            with torch.no_grad():
                v, i = p.sae_out.encode_topk(y)
                err = y - p.sae_out.decode_topk(v, i)
            leaf = v.clone().requires_grad_(True)
            self.z_out[p.layer] = (leaf, i[0])  # leaf is (1, k)
            new = act.clone()
            new[0, -1:] = (p.sae_out.decode_topk(leaf, i) + err) * p.mlp.s_y
            return new

        return fn

    def run(self, ids: torch.Tensor) -> torch.Tensor:
        fwd = [(hooks.ln2_normalized(L), self._in(p)) for L, p in self.pairs.items()]
        fwd += [(hooks.mlp_out(L), self._out(p)) for L, p in self.pairs.items()]
        with torch.enable_grad():
            return self.model.run_with_hooks(ids, fwd_hooks=fwd)


def _jac_edges(
    p: LayerPair, v_in: torch.Tensor, i_in: torch.Tensor, i_out: torch.Tensor
) -> dict[int, dict[int, float]]:
    """{out latent: {in latent: J[o,i] * z_in[i]}} at one token, rows for the given outputs."""
    with torch.no_grad():
        jo = active_jacobian(
            p.sae_in, p.sae_out, p.mlp, v_in[None].detach(), i_in[None], i_out[None]
        )
    out: dict[int, dict[int, float]] = {}
    for a, o in enumerate(jo.idx_out[0].tolist()):
        out[o] = {
            int(i): float(jo.J[0, a, b] * v_in[b])
            for b, i in enumerate(i_in.tolist())
            if v_in[b] > 0
        }
    return out


def read_circuit(model, tokenizer, pairs: dict[int, LayerPair], cfg: CircuitConfig) -> dict:
    data = prompts(tokenizer)
    n = len(data)
    out_attr: dict[tuple[int, int], float] = defaultdict(float)
    edge_in: dict[tuple[int, int, int], float] = defaultdict(float)  # (L, o, i) J*z*g
    traces = []
    for ids, tgt in data:
        tr = _Tracer(model, pairs)
        logits = tr.run(ids)
        layers = sorted(tr.z_out)
        leaves = [tr.z_out[L][0] for L in layers]
        grads = torch.autograd.grad(logits[0, -1, tgt], leaves, retain_graph=True)
        gmap = {}
        for L, g in zip(layers, grads, strict=True):
            v, i = tr.z_out[L][0][0], tr.z_out[L][1]
            g = g[0]
            gmap[L] = dict(zip(i.tolist(), g.tolist(), strict=True))
            for o, a in zip(i.tolist(), (g * v).tolist(), strict=True):
                out_attr[(L, o)] += a / n
            for o, row in _jac_edges(pairs[L], *tr.z_in[L], tr.z_out[L][1]).items():
                for i_, w in row.items():
                    edge_in[(L, o, i_)] += w * gmap[L].get(o, 0.0) / n
        traces.append((tr, logits))

    cand = [(k, a) for k, a in out_attr.items() if k[0] >= cfg.min_layer]
    hop1_out = [k for k, _ in sorted(cand, key=lambda t: -t[1])[: cfg.n_out]]

    def top_inputs(L: int, o: int, k: int) -> list[tuple[int, float]]:
        row = [(i, w) for (L2, o2, i), w in edge_in.items() if L2 == L and o2 == o]
        return sorted(row, key=lambda t: -t[1])[:k]

    nodes_in: dict[int, set[int]] = defaultdict(set)
    edges = []
    hop1_in = []
    for L, o in hop1_out:
        for i, w in top_inputs(L, o, cfg.n_in):
            edges.append(
                {"from": f"in{L}:{i}", "to": f"out{L}:{o}", "kind": "jacobian", "score": w}
            )
            hop1_in.append((L, i))
            nodes_in[L].add(i)
    # hop 2: upstream output latents of each hop-1 input latent, then their Jacobian inputs
    hop2_in = []
    for L, i in hop1_in:
        up: dict[tuple[int, int], float] = defaultdict(float)
        for tr, _ in traces:
            v_in, i_in = tr.z_in[L]
            pos = (i_in == i).nonzero()
            if len(pos) == 0 or v_in[pos[0, 0]] <= 0:
                continue
            ups = [Lp for Lp in sorted(tr.z_out) if Lp < L]
            if not ups:
                continue
            grads = torch.autograd.grad(
                v_in[pos[0, 0]],
                [tr.z_out[Lp][0] for Lp in ups],
                retain_graph=True,
                allow_unused=True,
            )
            for Lp, g in zip(ups, grads, strict=True):
                if g is None:
                    continue
                vv, ii = tr.z_out[Lp]
                for o, a in zip(ii.tolist(), (g * vv)[0].tolist(), strict=True):
                    up[(Lp, o)] += a / n
        for (Lp, o), w in sorted(up.items(), key=lambda t: -t[1])[: cfg.n_up]:
            edges.append(
                {"from": f"out{Lp}:{o}", "to": f"in{L}:{i}", "kind": "residual", "score": w}
            )
            # Jacobian inputs of the upstream output latent (J * z_in)
            jrow: dict[int, float] = defaultdict(float)
            for tr, _ in traces:
                for o2, row in _jac_edges(pairs[Lp], *tr.z_in[Lp], tr.z_out[Lp][1]).items():
                    if o2 == o:
                        for i2, w2 in row.items():
                            jrow[i2] += w2 / n
            for i2, w2 in sorted(jrow.items(), key=lambda t: -t[1])[: cfg.n_in]:
                edges.append(
                    {"from": f"in{Lp}:{i2}", "to": f"out{Lp}:{o}", "kind": "jacobian", "score": w2}
                )
                hop2_in.append((Lp, i2))
                nodes_in[Lp].add(i2)
    return {
        "hop1_out": [
            {"layer": L, "latent": o, "logit_attr": out_attr[(L, o)]} for L, o in hop1_out
        ],
        "hop1_in": [list(t) for t in hop1_in],
        "hop2_in": [list(t) for t in hop2_in],
        "edges": edges,
        "nodes_in": {str(L): sorted(s) for L, s in sorted(nodes_in.items())},
    }


@torch.no_grad()
def target_logits(model, pairs, data, ablate: dict[int, set[int]] | None) -> np.ndarray:
    """Target logit per prompt with input latents zeroed at the last position (error kept)."""
    out = []
    for ids, tgt in data:
        T = ids.shape[1]
        abl = {L: ([T - 1], sorted(s)) for L, s in (ablate or {}).items() if s}
        sp = Splice(model, {L: pairs[L] for L in abl} if abl else {}, mode="none", ablate=abl)
        logits = sp.run(ids) if abl else model(ids)
        out.append(float(logits[0, -1, tgt] - logits[0, -1].mean()))
    return np.array(out)


@torch.no_grad()
def active_inputs(model, pairs, data, layers) -> dict[int, set[int]]:
    """Input latents active at the last position of any prompt, per layer."""
    from challenge.activations import capture

    act: dict[int, set[int]] = {L: set() for L in layers}
    names = [hooks.ln2_normalized(L) for L in layers]
    for ids, _ in data:  # one prompt at a time: their lengths differ
        cache = capture(model, ids, names, positions="last")
        for L in layers:
            p = pairs[L]
            v, i = p.sae_in.encode_topk(cache[hooks.ln2_normalized(L)] / p.mlp.s_x)
            act[L].update(i[0][v[0] > 0].tolist())
    return act


def check_by_ablation(model, tokenizer, pairs, circuit: dict, cfg: CircuitConfig) -> dict:
    data = prompts(tokenizer)
    base = target_logits(model, pairs, data, None)
    res = {"clean_logit_minus_mean": float(base.mean())}
    rng = np.random.default_rng(seed_for(cfg.seed, "interactions.circuit_random"))
    sets = {"hop1": circuit["hop1_in"], "hop1+hop2": circuit["hop1_in"] + circuit["hop2_in"]}
    for name, nodes in sets.items():
        chosen: dict[int, set[int]] = defaultdict(set)
        for L, i in nodes:
            chosen[L].add(i)
        drop = base - target_logits(model, pairs, data, chosen)
        active = active_inputs(model, pairs, data, list(chosen))
        rand_drops = []
        for _ in range(cfg.n_random):
            rs = {}
            for L, s in chosen.items():
                pool = sorted(active[L] - s)
                rs[L] = set(rng.choice(pool, size=min(len(s), len(pool)), replace=False).tolist())
            rand_drops.append(float((base - target_logits(model, pairs, data, rs)).mean()))
        rd = np.array(rand_drops)
        res[name] = {
            "n_latents": int(sum(len(s) for s in chosen.values())),
            "layers": sorted(chosen),
            "logit_drop_mean": float(drop.mean()),
            "logit_drop_per_prompt": drop.round(3).tolist(),
            "random_drop_mean": float(rd.mean()),
            "random_drop_std": float(rd.std()),
            "random_drop_max": float(rd.max()),
            "frac_random_ge_circuit": float((rd >= drop.mean()).mean()),
        }
    return res


@dataclass
class AblationHeadline:
    """One ablated set: the circuit's logit drop against random latents of the same layers."""

    n_latents: int
    """input latents zeroed"""
    logit_drop_mean: float
    """mean drop of logit(target) - mean logit over the prompts"""
    random_drop_mean: float
    """the same for random active latents, same layers and count (mean over the draws)"""
    random_drop_std: float
    """spread of the random draws"""
    random_drop_max: float
    """largest random drop"""
    frac_random_ge_circuit: float
    """fraction of random draws dropping at least as much as the circuit"""


@dataclass
class CircuitHeadline:
    """The numbers to cite: the read-off and the ablation check."""

    hop1_out: list[dict[str, Any]]
    """the top output latents by logit attribution (layer, latent, logit_attr)"""
    clean_logit_minus_mean: float
    """mean over the prompts of logit(target) - mean logit, nothing ablated"""
    ablation: dict[str, AblationHeadline]
    """``hop1`` and ``hop1+hop2`` -> the ablation of those input latents"""


@dataclass
class CircuitResult(Result):
    """``detail`` holds the task, its pairs, the circuit (nodes and edges) and the ablation."""

    config: CircuitConfig
    headline: CircuitHeadline


def circuit_headline(circ: dict, abl: dict) -> CircuitHeadline:
    """The numbers to cite from ``read_circuit`` and ``check_by_ablation``."""
    keys = AblationHeadline.__dataclass_fields__
    return CircuitHeadline(
        hop1_out=circ["hop1_out"],
        clean_logit_minus_mean=abl["clean_logit_minus_mean"],
        ablation={
            name: AblationHeadline(**{k: v for k, v in abl[name].items() if k in keys})
            for name in ("hop1", "hop1+hop2")
        },
    )


def run(cfg: CircuitConfig, track: Track | str, *, run_dir: str | Path) -> CircuitResult:
    """Read the circuit off the dictionaries of the interactions run in ``run_dir``
    (``<run_dir>/dicts/<lam>``) on ``track``'s model (a :class:`~challenge.track.Track`,
    registered id or directory; on CPU) and check it; write ``<run_dir>/circuit_<lam>.json``."""
    from challenge.models import load_model
    from challenge.track import resolve_track

    tr = resolve_track(track)
    lm = load_model(tr.spec.model, device="cpu")
    pairs = load_pairs(run_dir, lm.model, cfg.lam, model_name=tr.spec.model.name)
    circ = read_circuit(lm.model, lm.tokenizer, pairs, cfg)
    abl = check_by_ablation(lm.model, lm.tokenizer, pairs, circ, cfg)
    res = CircuitResult(
        kind="interactions_circuit",
        config=cfg,
        headline=circuit_headline(circ, abl),
        detail={"task": TEMPLATE, "pairs": list(CAPITALS), "circuit": circ, "ablation": abl},
        track=TrackRef.of(tr),
        provenance=lm.provenance,
    )
    res.save(run_dir, f"circuit_{cfg.lam}")
    return res
