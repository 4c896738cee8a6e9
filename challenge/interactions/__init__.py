"""Sparse feature interactions: Jacobian-sparse dictionary pairs on every MLP of a track's model.

``dictionaries`` (the suite's TopK SAE as a dictionary: initialisation and I/O), ``jacobian``
(active-only Jacobian of the MLP between an input and an output dictionary, and the dense
autograd reference), ``train`` (``InteractionsConfig``, ``main``), ``circuit`` (a circuit read
off the sparse graph on a templated task, checked by ablation).
See ``docs/sparse-interactions.md``.
"""

from challenge.interactions.dictionaries import (
    load_dictionary,
    measure_firing,
    new_dictionary,
    save_dictionary,
)
from challenge.interactions.jacobian import (
    MLPWeights,
    active_jacobian,
    dense_jacobian,
    interaction_stats,
    jacobian_penalty,
)

__all__ = [
    "MLPWeights",
    "active_jacobian",
    "dense_jacobian",
    "interaction_stats",
    "jacobian_penalty",
    "load_dictionary",
    "measure_firing",
    "new_dictionary",
    "save_dictionary",
]
