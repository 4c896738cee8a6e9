"""The fast tail runner on Gemma 3 270M equals the engine's ``reference`` backend (a full
TransformerLens forward with a hook): q/k norms, post-norms, local/global layers, 262k vocab.

Tolerances come from the fp32 error of the path, with the rule of ``tests/test_tail.py``'s
SmolLM2 test stated relative to the scale of what is compared (Gemma's residual norms are
~3.5e3 mid-stack and ~3.3e4 at the last layer, against SmolLM2's hundreds, so an absolute
constant tuned on SmolLM2 means nothing here):

- max |tail - ref| <= GAMMA * max |ref|, for the read-out residual and for the logits, with
  GAMMA = K u the worst-case relative error of one fp32 dot product of the longest length in
  the path (K = d_mlp = 2048, u = 2^-24): 1.2e-4. SmolLM2's read rule, 1e-4, is the same bound
  for its d_mlp = 1536 (9.2e-5). Each compared number is, at its last step, one such dot
  product of inputs that carry the path's accumulated error; both paths compute the same
  function in a different order, and the errors of the 36 sub-layers add about in quadrature,
  sqrt(36 K) u = 1.6e-5, inside GAMMA. Measured on these prompts: read <= 6.2e-7 and logits
  <= 2.5e-6 of their maxima (1.1e-4 absolute on logits up to 72).
- argmax: equal wherever the reference's top-2 margin exceeds twice the logit bound.
- curves: propagated from the logit bound eps (each log-probability moves by <= 2 eps; an
  entropy-like sum -sum p log q by <= 2 eps + (e^{2 eps} - 1) * its value), see
  ``_curve_bounds``; l2 from the read bound.
"""

import math

import numpy as np
import pytest
import torch

from challenge.engine import EngineConfig, PerturbationEngine
from challenge.paths import linear_path
from challenge.tail import TailRunner, supports

U = 2.0**-24  # fp32 unit roundoff

TEXTS = [
    "The quick brown fox jumps over the lazy dog and then runs into the forest",
    "In the beginning of the twentieth century, many scientists believed that",
    "Python is a programming language that lets you work quickly and integrate systems",
]


def gamma(model) -> float:
    c = model.cfg
    return max(c.d_model, c.d_mlp, c.n_heads * c.d_head) * U


def logit_tol(model, logits: torch.Tensor) -> float:
    return gamma(model) * float(logits.abs().max())


def _tokens(gemma) -> torch.Tensor:
    ids = [gemma.tokenizer(t).input_ids[:10] for t in TEXTS]  # <bos> + 9 tokens
    return torch.tensor(ids)


def _points(engine, tokens, seed=0) -> torch.Tensor:
    """Per context: the clean activation, a random direction at half its norm, another
    context's activation (a real-to-real step)."""
    clean = engine.clean(tokens, read=False)["write"]
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(clean.shape, generator=g)
    d = d / d.norm(dim=-1, keepdim=True) * 0.5 * clean.norm(dim=-1, keepdim=True)
    return torch.stack([clean, clean + d, clean.roll(1, 0)], dim=1)


def _engines(model, start, read):
    cfg = dict(write_hook=f"blocks.{start}.hook_resid_pre", read_hook=read, progress=False)
    return (
        PerturbationEngine(model, EngineConfig(backend="tail", **cfg)),
        PerturbationEngine(model, EngineConfig(backend="reference", **cfg)),
    )


def _assert_close(model, out, ref):
    g, eps = gamma(model), logit_tol(model, ref["logits"])
    assert (out["read"] - ref["read"]).abs().max() <= g * ref["read"].abs().max()
    assert (out["logits"] - ref["logits"]).abs().max() <= eps
    top2 = ref["logits"].topk(2, dim=-1).values
    clear = (top2[..., 0] - top2[..., 1]) > 2 * eps
    assert clear.any()
    assert torch.equal(out["logits"].argmax(-1)[clear], ref["logits"].argmax(-1)[clear])


def test_supports_gemma_and_reads_its_layer_pattern(gemma):
    assert supports(gemma.model) == (True, "ok")
    runner = TailRunner(gemma.model, 11)
    assert runner.qk_norm and runner.post_norms and (runner.H, runner.G, runner.dh) == (4, 1, 256)
    # layers 11..17: 11 and 17 are global, the rest see the last 512 keys
    assert runner.windows == [None, 512, 512, 512, 512, 512, None]
    assert float(gemma.model.blocks[0].attn.attn_scale) == 16.0  # query_pre_attn_scalar 256


@pytest.mark.parametrize(
    "start, read",
    [
        (1, "blocks.11.hook_resid_post"),  # local write point, across the global layers 5, 11
        (5, "blocks.17.hook_resid_post"),  # global write point
        (12, "blocks.17.hook_resid_post"),  # local, across the global layer 17
    ],
)
def test_tail_matches_reference_backend(gemma, start, read):
    model = gemma.model
    tokens = _tokens(gemma)
    tail, ref_engine = _engines(model, start, read)
    points = _points(ref_engine, tokens)
    with torch.no_grad():
        ref = ref_engine.forward(tokens, points)
        # the engine's tail: prefix keys/values from the write point by the runner itself
        _assert_close(model, tail.forward(tokens, points), ref)
        # the runner with a prefix cache from TransformerLens' own residuals
        _, cache = model.run_with_cache(
            tokens, names_filter=lambda n: n.endswith("resid_pre"), stop_at_layer=18
        )
        runner = TailRunner(model, start)
        pc = runner.prefix([cache[f"blocks.{i}.hook_resid_pre"] for i in range(start, 18)])
        read_layer = int(read.split(".")[1])
        out = runner.run(points, pc, read_layers=(read_layer,))
    _assert_close(model, {"read": out[read], "logits": out["logits"]}, ref)


def test_local_attention_window_is_applied(gemma, monkeypatch):
    """With the window shrunk to 4 keys, the local layers of the tail (prefix pass and
    last position) still equal the reference, which then differs from the full-window one."""
    model, tokens, start = gemma.model, _tokens(gemma), 3
    assert model.blocks[4].attn.cfg is model.cfg  # TL reads the window at forward time
    read = "blocks.17.hook_resid_post"
    with torch.no_grad():
        ref_engine = _engines(model, start, read)[1]
        points = _points(ref_engine, tokens)
        full = ref_engine.forward(tokens, points)
        monkeypatch.setattr(model.cfg, "window_size", 4)
        tail, ref_engine = _engines(model, start, read)
        assert tail.tail.windows[:3] == [4, 4, None]  # layers 3, 4 local; 5 global
        ref = ref_engine.forward(tokens, points)
        assert (ref["logits"] - full["logits"]).abs().max() > 100 * logit_tol(model, ref["logits"])
        _assert_close(model, tail.forward(tokens, points), ref)


def _curve_bounds(ref, eps: float, read_tol: float, d: int, vocab: int) -> dict[str, np.ndarray]:
    """Largest |tail - reference| a logit error <= eps and a read error <= read_tol allow.

    log p moves by <= 2 eps; -sum_v p_v log q_v moves by <= 2 eps + (e^{2 eps} - 1) * value.
    CE = -sum p0 log ps; KL = CE - H(p0) with H(p0) = CE at step 0; JS = H(m) - H(p0)/2 -
    H(ps)/2 with every entropy <= ln(vocab). l2 = ||r_s - r_0||: both ends move by
    <= sqrt(d) read_tol."""
    k = math.expm1(2 * eps)
    ce = 2 * eps + k * ref.ce
    return {
        "ce": ce,
        "kl": ce + 2 * eps + k * ref.ce[:, :1],
        "js": np.full_like(ref.js, 2 * (2 * eps + k * math.log(vocab))),
        "l2": np.full_like(ref.l2, 2 * math.sqrt(d) * read_tol),
    }


def test_engine_curves_tail_equal_reference(gemma):
    model, tokens = gemma.model, _tokens(gemma)
    tail, ref_engine = _engines(model, 6, None)  # local write point; global 11, 17 after it
    assert (tail.backend, ref_engine.backend) == ("tail", "reference")
    write = tail.clean(tokens, read=False)["write"]
    paths = linear_path(write, write.roll(1, 0), 8)
    c_tail = tail.curves(tokens, paths)
    c_ref = ref_engine.curves(
        tokens, paths, return_read=True, reduce=lambda o: {"logit_max": o["logits"].abs().amax(-1)}
    )
    read_tol = gamma(model) * float(np.abs(c_ref.read).max())
    eps = gamma(model) * float(c_ref.extra["logit_max"].max())
    bounds = _curve_bounds(c_ref, eps, read_tol, model.cfg.d_model, model.cfg.d_vocab)
    for m in ("l2", "kl", "js", "ce"):
        assert (np.abs(c_tail[m] - c_ref[m]) <= bounds[m]).all(), m
    assert (c_tail.kl[:, 0] == 0).all() and (c_ref.kl[:, 0] == 0).all()
    assert c_ref.kl[:, -1].min() > 0.1  # the paths do move the output
