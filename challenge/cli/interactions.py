"""Sparse-interaction commands: interactions, interactions-circuit."""

from __future__ import annotations

from challenge.cli._common import report
from challenge.interactions.circuit import CircuitConfig
from challenge.interactions.train import InteractionsConfig


def interactions(cfg: InteractionsConfig) -> None:
    """Train Jacobian-sparse dictionary pairs on every MLP of the embedded model (results.json,
    plot)."""
    from challenge.interactions.train import run

    report(run(cfg))


def interactions_circuit(cfg: CircuitConfig) -> None:
    """Read a circuit off the sparse graph on a templated task and check it by ablation."""
    from challenge.interactions.circuit import run

    report(run(cfg))
