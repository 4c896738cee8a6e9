"""Study 1 (output states) on the tiny track: the k criterion, the concentration measure, and a
run whose agreement statistics come from real interpolation curves."""

import json

import numpy as np
import torch

from challenge.divergence import js_rows
from challenge.schemas import validate
from challenge.studies import make_env
from challenge.studies._common import clean_logp, write_point_acts
from challenge.studies.output_states import (
    OutputStatesConfig,
    choose_k,
    concentration,
    family_prompts,
    run,
)


def test_choose_k_finds_separated_blobs():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    X = np.concatenate([c + rng.normal(0, 0.3, (30, 2)) for c in centres])
    k, sil, km = choose_k(X, 2, 6, seed=0)
    assert k == 3
    assert sil[3] == max(sil.values()) and sil[3] > 0.8
    assert len(set(km.labels_)) == 3


def test_concentration_uniform_vs_single_jump():
    S = 11
    uniform = np.full((1, S - 1), 1e-4)
    jump = np.zeros((1, S - 1))
    jump[0, 4] = 0.3
    u = 2.0**-53  # float64 unit roundoff
    # equal terms: the mean of S - 1 copies of s is s within gamma_{S-1}, max / mean adds u
    assert abs(concentration(uniform)[0] - 1.0) <= S * u / (1 - S * u)
    # one non-zero term: the sum is exact, the division by S - 1 and max / mean round by u each
    assert abs(concentration(jump)[0] - (S - 1)) <= 2 * u * (S - 1)
    assert np.isnan(concentration(np.zeros((1, S - 1)))[0])


def test_cut_prompts_end_at_the_slot(smollm):
    fp = family_prompts("city_weather", smollm.tokenizer, cut_at_last_slot=True)
    assert all(t.endswith(w) for t, w in zip(fp.labels["text"], fp.labels["weather"], strict=True))
    toks = fp.tokens.numpy()
    for pid in np.unique(fp.prefix_id):  # same id: every token but the last is shared
        rows = toks[fp.prefix_id == pid]
        assert (rows[:, :-1] == rows[0, :-1]).all()


def test_run_on_tiny_track(tiny_track, smollm, tmp_path):
    cfg = OutputStatesConfig(
        families=("city_weather",),
        k_min=2,
        k_max=4,
        n_pairs=4,
        n_steps=7,
    )
    res = run(cfg, make_env(tiny_track, smollm), out=tmp_path, draw=True)
    fam = res.detail["families"][0]
    assert cfg.k_min <= fam["k"] <= cfg.k_max
    assert set(fam["silhouette"]) == {"2", "3", "4"}
    assert fam["silhouette"][str(fam["k"])] == max(fam["silhouette"].values())
    saved = json.loads((tmp_path / "output_states.json").read_text())
    assert saved["provenance"]["engine"]["write_hook"] == "blocks.1.hook_resid_pre"
    assert saved["kind"] == "output_states" and saved["track"]["id"] == tiny_track.spec.track_id
    validate(saved, "output_states_result")
    assert saved["detail"]["families"][0]["k"] == fam["k"]
    # the headline is read from the detail
    h = res.headline.families["city_weather"]
    assert saved["headline"]["families"]["city_weather"]["k"] == h.k == fam["k"]
    assert h.silhouette == fam["silhouette"][str(fam["k"])]
    assert h.fraction_jump_same == fam["groups"]["same"]["fraction_jump"]
    assert h.fraction_jump_different == fam["groups"]["different"]["fraction_jump"]
    assert h.agreement_jump.accuracy == fam["agreement_jump"]["accuracy"]
    assert h.agreement_state_change == fam["agreement_state_change"]["accuracy"]
    assert (tmp_path / "output_states.png").stat().st_size > 0
    arr = np.load(tmp_path / "output_states.npz")
    js, grp = arr["city_weather_js"], arr["city_weather_group"]
    pairs = arr["city_weather_pairs"]
    # step 0 and the base distribution are one computation (engine.distribution_divergences)
    assert js.shape[1] == 7 and (js[:, 0] == 0).all()
    assert (js[:, -1] > 0).all()  # real curves: the endpoints differ
    # the agreement statistic is computed from those curves
    conc, ms = arr["city_weather_concentration"], arr["city_weather_max_step_js"]
    jump = (conc >= cfg.jump_concentration) & (ms >= cfg.jump_js)
    acc = float(((grp == 1) == jump).mean())
    # the study computes the same mean of the same booleans (a count over n): exactly equal
    assert fam["agreement_jump"]["accuracy"] == acc
    # pairs share their prefix, so B's activation in A's context reproduces B's output: the
    # same function evaluated in another batch, so only float32 rounding separates the two.
    # fidelity = 1 - JS(end, B) / JS(A, B) with JS clamped at 0: every value, and so the
    # median, is <= 1 exactly
    med = fam["endpoint_fidelity"]["median"]
    assert med <= 1.0
    # lower side, recomputed with the study's own calls: for lq = lp - delta,
    # JS <= (KL(p||q) + KL(q||p)) / 4 <= max|delta|^2 e^max|delta| / 4 (term by term, so also
    # for float32 p, q whose sums are not exactly 1). js_rows' float32 rounding, in its stable
    # form -1/2 sum p g(D) - 1/2 sum q g(-D) with D = lq - lp: per token D is rounded by u|D|,
    # which moves g by <= u|D| (0 < g' < 1); half_log_mix errs by <= 14 u |g| (log1p(expm1/2)
    # for |D| < 1: 1.22 x 2u + 2u; softplus - ln 2 beyond: 4u softplus + u ln 2 + u |g|, with
    # softplus / |g| <= 2.65 and ln 2 / |g| <= 1.83 at |D| = 1; measured: 2.7u); exp adds 2u
    # and the product u, and |g(D)| <= |D|: <= 18 u p |D| per token, so <= 18 u max|delta|
    # per half. Each V-term sum adds gamma_V sum p |g| <= gamma_V max|delta| (its terms change
    # sign), and (1 + gamma_V) covers sum p != 1 and the last subtraction. Every term is 0
    # where D = 0, so there is no floor (the textbook ln 2 - ... form left ~u (H_p + H_q + 5)).
    # fidelity is then 1 - r rounded in float32 (u each for the quotient and the difference),
    # and quantiles are monotone
    env = make_env(tiny_track, smollm)
    fp = family_prompts("city_weather", smollm.tokenizer, cfg.cut_at_last_slot)
    acts = write_point_acts(env.eng, fp.tokens)
    logp = clean_logp(env.eng, fp.tokens, acts).double()
    a, b = pairs[:, 0], pairs[:, 1]
    with torch.no_grad():
        lg = env.eng.forward(fp.tokens[a], acts[b][:, None, :])["logits"][:, 0]
    lp_end = torch.log_softmax(lg.float(), -1).double()
    js_ab = js_rows(logp[a].float(), logp[b].float()).double().numpy()
    V = logp.shape[1]
    U32 = 2.0**-24
    delta = (lp_end - logp[b]).abs().max(-1).values.numpy()
    gamma_v = V * U32 / (1 - V * U32)
    js_bound = (1 + gamma_v) * (delta**2 * np.exp(delta) / 4 + (18 * U32 + gamma_v) * delta)
    r = np.divide(js_bound, js_ab, out=np.zeros_like(js_ab), where=js_ab > 0)
    lower = 1 - r * (1 + U32) - U32
    assert med >= np.quantile(lower, 0.5) and (js_ab > 0).all()
    assert fam["endpoint_fidelity"]["q25"] >= np.quantile(lower, 0.25)
    # pairs were labelled by the clusters they were drawn from
    labels = arr["city_weather_labels"]
    assert ((labels[pairs[:, 0]] != labels[pairs[:, 1]]) == (grp == 1)).all()
