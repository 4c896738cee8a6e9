"""Error correction along directions (issue 33; docs/error-correction.md).

Anchor: Ferreira da Silva & Heimersheim 2026 (arXiv 2606.24964, no public code; abstract only):
activations are less robust along "pure" feature directions than along mixtures of two; the
effect is modelled as a function of the L^p norm of the perturbation's decomposition into
feature components, with p > 2 for contrastive, MELBO and SAE-decoder directions and p ~ 2 for
random and PCA ones.

For each real point ``x`` (the track's public split, write point, last position) and each
direction set (one unit direction ``u`` per point), the engine measures
``KL(p(x) || p(x + eps |x| u))`` on a log-spaced ``eps`` grid (:func:`challenge.paths.ray_path`
through :meth:`PerturbationEngine.curves`). Two exponents:

- **slope** (:func:`fit_exponent`): per curve the least-squares slope of ``log KL`` on
  ``log eps`` over the grid points above a noise floor (``floor_factor`` x the largest KL of the
  point's noise probes, rays of length ``noise_eps |x|`` where any real change is far below
  float32 resolution) and below ``kl_max`` (saturation); 2 for any smooth map with a
  non-degenerate Fisher form. The read-out L2 exponent over the same grid points (generic 1)
  beside it.
- **L^p** (:func:`lp_inverse_exponent`): for the families in ``pairs`` a second direction ``b``
  of the family and the mixture ``unit(a + b)`` are traced too; from the lengths at which a, b
  and the mixture reach a KL threshold, q = 1/p of the L^p model (0.5: a quadratic form).

Per family: medians with percentile bootstrap intervals over points, and paired differences of
medians against ``random`` (the same resampled points), with minimum detectable effects.

Families: ``random`` (isotropic), ``cov_random`` (``directions.cov_random_mixture``), ``pca``
(top public-split PCs, random sign), ``sae_active`` / ``sae_random`` (the track SAE's decoder row
of a random latent active at x / of a random alive latent), ``contrastive`` (difference of means
of a templated contrast, ``steering.steering_vector``; b: ``contrast_b``), ``sensitive`` (the
local Fisher top eigenvector, ``sensitive_directions.local_jacobian_directions``) and
``optimised`` (``sensitive_directions.optimised_directions``, KL at a small radius).
Writes ``<out>/error_correction.{json,npz,png}``.

Modules: ``config`` (the typed config, the families, the seed streams), ``fit`` (the exponent
fits and the L^p estimator), ``families`` (the directions of each family), ``study`` (the typed
result, the summaries, ``run``, ``plot``).
"""

from challenge.studies.error_correction.config import (
    FAMILIES,
    NAME,
    PAIR_FAMILIES,
    SEED_OFFSETS,
    ErrorCorrectionConfig,
)
from challenge.studies.error_correction.families import (
    contrastive,
    directions,
    sae_latents,
    unit,
)
from challenge.studies.error_correction.fit import (
    eps_at,
    fit_exponent,
    local_slopes,
    lp_inverse_exponent,
)
from challenge.studies.error_correction.study import (
    ErrorCorrectionHeadline,
    ErrorCorrectionResult,
    FamilyP,
    pair_summary,
    plot,
    run,
    summarise,
)

__all__ = [
    "FAMILIES",
    "NAME",
    "PAIR_FAMILIES",
    "SEED_OFFSETS",
    "ErrorCorrectionConfig",
    "ErrorCorrectionHeadline",
    "ErrorCorrectionResult",
    "FamilyP",
    "contrastive",
    "directions",
    "eps_at",
    "fit_exponent",
    "local_slopes",
    "lp_inverse_exponent",
    "pair_summary",
    "plot",
    "run",
    "sae_latents",
    "summarise",
    "unit",
]
