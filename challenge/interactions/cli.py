"""CLI commands of the sparse-interactions area."""

from __future__ import annotations

from challenge.interactions.circuit import CircuitConfig
from challenge.interactions.circuit import main as _circuit
from challenge.interactions.train import InteractionsConfig
from challenge.interactions.train import main as _train


def interactions(cfg: InteractionsConfig) -> None:
    """Train Jacobian-sparse dictionary pairs on every MLP of the embedded model (results.json, plot)."""
    _train(cfg)


def interactions_circuit(cfg: CircuitConfig) -> None:
    """Read a circuit off the sparse graph on a templated task and check it by ablation."""
    _circuit(cfg)


COMMANDS = {"interactions": interactions, "interactions-circuit": interactions_circuit}
