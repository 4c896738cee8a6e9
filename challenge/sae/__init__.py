"""Sparse autoencoders for the tracks, SAELens-style: the model (``model``), training and
evaluation (``train``), SAELens' on-disk format and hub releases (``io``), and the SAE of a
track with P3's SAE direction sets (``track``)."""

from challenge.sae.io import (
    CFG_FILE,
    PRETRAINED,
    SPARSITY_FILE,
    WEIGHTS_FILE,
    download_pretrained,
    hub_files,
    kind_from_cfg,
    load_dir,
    load_sae,
    saelens_cfg,
    save_sae,
)
from challenge.sae.model import KINDS, LOG_FLOOR, SAE, SAEConfig
from challenge.sae.track import (
    DIRECTION_KINDS,
    TRACK_RELEASES,
    describe,
    sae_direction_sets,
    track_sae,
    track_sae_dir,
    track_training_acts,
    write_hook_name,
)
from challenge.sae.train import (
    evaluate_sae,
    firing_log10,
    geometric_median,
    init_tied,
    train_sae,
)

__all__ = [
    "CFG_FILE",
    "DIRECTION_KINDS",
    "KINDS",
    "LOG_FLOOR",
    "PRETRAINED",
    "SAE",
    "SAEConfig",
    "SPARSITY_FILE",
    "TRACK_RELEASES",
    "WEIGHTS_FILE",
    "describe",
    "download_pretrained",
    "evaluate_sae",
    "firing_log10",
    "geometric_median",
    "hub_files",
    "init_tied",
    "kind_from_cfg",
    "load_dir",
    "load_sae",
    "sae_direction_sets",
    "saelens_cfg",
    "save_sae",
    "track_sae",
    "track_sae_dir",
    "track_training_acts",
    "train_sae",
    "write_hook_name",
]
