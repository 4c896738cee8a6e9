"""CLI commands of the studies: ``plateau study-<name>``; the flags are each study's config.

Each writes ``<out>/<study>.json`` (+ ``.npz`` arrays, + ``.png`` plot) and prints its headline.
"""

from __future__ import annotations

import json
import time

from challenge.studies.boundaries import BoundariesConfig
from challenge.studies.layers import LayersConfig
from challenge.studies.output_states import OutputStatesConfig
from challenge.studies.sae_plateaus import SAEPlateausConfig
from challenge.studies.steering import SteeringConfig


def _report(doc: dict, headline: dict, t0: float) -> None:
    print(json.dumps(headline, indent=1, default=str))
    print(f"wrote {doc['result_path']} and {doc.get('plot')} ({time.perf_counter() - t0:.0f} s)")


def study_output_states(cfg: OutputStatesConfig) -> None:
    """Study 1: k-means output states of templated prompts; do they predict plateaus (flat
    within a cluster, a jump between clusters)?"""
    from challenge.studies import output_states

    t0 = time.perf_counter()
    doc = output_states.run(cfg)
    head = {
        f["family"]: {
            "k": f["k"],
            "silhouette": f["silhouette"][str(f["k"])],
            "silhouette_gaussian_null": f["silhouette_gaussian_null"],
            "fraction_jump_same_vs_different": [
                f["groups"]["same"]["fraction_jump"],
                f["groups"]["different"]["fraction_jump"],
            ],
            "agreement_jump": f["agreement_jump"],
            "agreement_state_change": f["agreement_state_change"]["accuracy"],
        }
        for f in doc["families"]
    }
    _report(doc, head, t0)


def study_layers(cfg: LayersConfig) -> None:
    """Study 2: the stable-regions protocol (P2) at every layer along the same prompt pairs:
    do later layers split regions or sharpen them?"""
    from challenge.studies import layers

    t0 = time.perf_counter()
    doc = layers.run(cfg)
    head = {
        "verdict": doc["verdict"],
        "per_layer_real_median": {
            r["layer"]: {
                "sharpness_l2": r["real"]["sharpness_l2"]["median"],
                "sharpness_kl": r["real"]["sharpness_kl"]["median"],
                "crossings": r["real"]["crossings"]["median"],
            }
            for r in doc["per_layer"]
        },
    }
    _report(doc, head, t0)


def study_steering(cfg: SteeringConfig) -> None:
    """Study 3: difference-of-means steering with increasing coefficient vs plateau (real) and
    random perturbations of the same norm: which response is smoother?"""
    from challenge.studies import steering

    t0 = time.perf_counter()
    doc = steering.run(cfg)
    head = {
        c["contrast"]: {
            k: {
                "sharpness_kl": v["sharpness_kl"]["median"],
                "concentration": v["concentration"]["median"],
                "kl_end": v["kl_end"]["median"],
                "js_target_end": v["js_target_end"]["median"],
            }
            for k, v in c["directions"].items()
        }
        for c in doc["contrasts"]
    }
    _report(doc, head, t0)


def study_boundaries(cfg: BoundariesConfig) -> None:
    """Study 4: MLP gate units crossing their boundary per step along paths vs the output's
    jumps; do the crossings bunch up at the max-slope step?"""
    from challenge.studies import boundaries

    t0 = time.perf_counter()
    doc = boundaries.run(cfg)
    head = {
        k: {
            "corr_pooled_dkl": v["corr_pooled"]["dkl"],
            "within_path_spearman_dkl": v["corr_within_path_spearman"]["dkl"]["median"],
            "ratio_at_ms_kl": v["bunching_at_ms_kl"]["ratio_at_max_slope"]["median"],
            "busiest_within_window": [
                v["bunching_at_ms_kl"]["busiest_within_window"],
                v["bunching_at_ms_kl"]["busiest_within_window_chance"],
            ],
        }
        for k, v in doc["kinds"].items()
    }
    _report(doc, head, t0)


def study_sae_plateaus(cfg: SAEPlateausConfig) -> None:
    """Study 5: do SAE reconstructions stay in their activation's plateau; where in a plateau do
    real activations sit (centre vs edge)?"""
    from challenge.studies import sae_plateaus

    t0 = time.perf_counter()
    doc = sae_plateaus.run(cfg)
    a, b, c = (
        doc[k] for k in ("A_reconstruction_step", "B_plateau_consistency", "C_centre_vs_edge")
    )
    head = {
        "A_kl_end_ratio_to_controls": {s: a[s]["kl_end_ratio_to_controls"] for s in a},
        "B_top1_agreement_on_plateau_vs_near_boundary": {
            s: [b[s]["top1_agreement_on_plateau"], b[s]["top1_agreement_near_boundary"]]
            for s in b
            if s != "n_paths"
        },
        "C_centredness_median": {
            k: v["centredness"]["median"]
            for k, v in c.items()
            if isinstance(v, dict) and "centredness" in v
        },
        "C_anchoring_median": c["anchoring"]["anchoring_all"]["median"],
    }
    _report(doc, head, t0)


COMMANDS = {
    "study-output-states": study_output_states,
    "study-layers": study_layers,
    "study-steering": study_steering,
    "study-boundaries": study_boundaries,
    "study-sae-plateaus": study_sae_plateaus,
}
