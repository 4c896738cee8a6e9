"""Issue 33 part 1: plateaus over training, the grokking link (docs/training.md).

``config`` (typed config, seed streams, checkpoint schedule), ``models`` (the two
``HookedTransformer``s and their data), ``train`` (resumable training with log-spaced
checkpoints), ``measure`` (one checkpoint through the suite's engine), ``study`` (``run``,
``plot``, the typed result)."""

from challenge.studies.training.config import TrainingConfig

__all__ = ["TrainingConfig"]
