"""Studies on top of the perturbation engine (see docs/studies.md).

One module per study, each with a typed, self-validating config (what the study measures; the
track and the output folder are the run's arguments) and ``run(cfg, env, out=..., draw=True)``
(``env``: a :class:`StudyEnv` or a track id / directory) returning a typed
:class:`challenge.results.Result` (``headline``: the numbers to cite, ``detail``: the rest)
after writing ``<out>/<study>.json`` (+ ``.npz`` arrays, ``.png`` plot when ``draw``):

- ``output_states``: k-means output states on templated prompts vs plateaus;
- ``layers``: the P2 stable-regions protocol at every write layer;
- ``steering``: difference-of-means steering vs plateau perturbations of the same norm;
- ``boundaries``: MLP gate sign changes along paths vs output jumps;
- ``sae_plateaus``: SAE reconstructions and where real activations sit inside plateaus;
- ``sae_collapse``: whether an end-to-end SAE maps a plateau's activations to nearly one point;
- ``feature_finding``: the directions the output is most sensitive to vs SAE / PCA / random;
- ``error_correction``: the growth exponent of KL along direction families, and the L^p exponent
  of pure vs mixed direction pairs (docs/error-correction.md).

Not listed: ``training`` (docs/training.md), which trains its own models instead of reading a
track: ``training.run(cfg, out=..., draw=True)`` writes ``<out>/training_<model>.json``.

What they share lives in :mod:`challenge.studies._common` and is re-exported here (with the
divergences of :mod:`challenge.divergence`).
"""

from challenge.divergence import js_rows, js_to_reference
from challenge.studies._common import (
    StudyEnv,
    TemplateSet,
    as_env,
    clean_logp,
    corr,
    finish,
    load_env,
    make_env,
    same_length,
    template_set,
    trace,
    write_point_acts,
)

STUDIES = (
    "output_states",
    "layers",
    "steering",
    "boundaries",
    "sae_plateaus",
    "sae_collapse",
    "feature_finding",
    "error_correction",
)

__all__ = [
    "STUDIES",
    "StudyEnv",
    "TemplateSet",
    "as_env",
    "clean_logp",
    "corr",
    "finish",
    "js_rows",
    "js_to_reference",
    "load_env",
    "make_env",
    "same_length",
    "template_set",
    "trace",
    "write_point_acts",
]
