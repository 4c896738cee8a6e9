"""Sparse feature interactions: Jacobian-sparse dictionary pairs on every MLP of a track's model.

One concept per module:

* ``config``: ``InteractionsConfig``, what a run trains and measures;
* ``dictionaries``: the suite's TopK SAE as a dictionary (initialisation and I/O);
* ``jacobian``: ``MLPWeights`` and the active-only Jacobian of the MLP between an input and an
  output dictionary (and the dense autograd reference);
* ``data``: the track's text cut into shuffled windows, and the MLP inputs they produce;
* ``pairs``: ``LayerPair`` (one MLP's two dictionaries) and saving / reloading a run's pairs;
* ``trainer``: training one pair (reconstruction + Jacobian-L1 loss);
* ``evaluate``: held-out reconstruction, interaction statistics and next-token CE;
* ``splice``: ``Splice``, dictionary pairs spliced into the model by hooks;
* ``results``: ``InteractionsResult`` and its headline;
* ``sweep``: ``run``, every lambda over every chosen layer, writing ``results.json``;
* ``plots``: ``plot_tradeoff``;
* ``circuit``: a circuit read off the sparse graph on a templated task, checked by ablation.

See ``docs/sparse-interactions.md``.
"""

from challenge.interactions.config import InteractionsConfig
from challenge.interactions.data import cache_inputs, text_windows
from challenge.interactions.dictionaries import (
    load_dictionary,
    measure_firing,
    new_dictionary,
    save_dictionary,
)
from challenge.interactions.evaluate import eval_layer, next_token_ce
from challenge.interactions.jacobian import (
    MLPWeights,
    active_jacobian,
    dense_jacobian,
    interaction_stats,
    jacobian_penalty,
)
from challenge.interactions.pairs import LayerPair, lam_key, load_pairs
from challenge.interactions.plots import plot_tradeoff
from challenge.interactions.results import (
    InteractionsHeadline,
    InteractionsResult,
    LambdaHeadline,
    headline,
)
from challenge.interactions.splice import Splice
from challenge.interactions.sweep import run
from challenge.interactions.trainer import fvu, layer_scales, train_layer

__all__ = [
    "InteractionsConfig",
    "InteractionsHeadline",
    "InteractionsResult",
    "LambdaHeadline",
    "LayerPair",
    "MLPWeights",
    "Splice",
    "active_jacobian",
    "cache_inputs",
    "dense_jacobian",
    "eval_layer",
    "fvu",
    "headline",
    "interaction_stats",
    "jacobian_penalty",
    "lam_key",
    "layer_scales",
    "load_dictionary",
    "load_pairs",
    "measure_firing",
    "new_dictionary",
    "next_token_ce",
    "plot_tradeoff",
    "run",
    "save_dictionary",
    "text_windows",
    "train_layer",
]
