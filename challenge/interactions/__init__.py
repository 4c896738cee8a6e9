"""Sparse feature interactions: Jacobian-sparse dictionary pairs on every MLP of a model.

``dictionaries`` (TopK SAE), ``jacobian`` (active-only Jacobian of the MLP between an input and an
output dictionary, and the dense autograd reference), ``train`` (``InteractionsConfig``, ``main``),
``circuit`` (a circuit read off the sparse graph on a templated task, checked by ablation).
See ``docs/sparse-interactions.md``.
"""

from challenge.interactions.dictionaries import DictConfig, TopKSAE
from challenge.interactions.jacobian import (
    MLPWeights,
    active_jacobian,
    dense_jacobian,
    interaction_stats,
    jacobian_penalty,
)

__all__ = [
    "DictConfig",
    "TopKSAE",
    "MLPWeights",
    "active_jacobian",
    "dense_jacobian",
    "interaction_stats",
    "jacobian_penalty",
]
