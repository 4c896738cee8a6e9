"""Sparse-interaction commands: interactions, interactions-circuit."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from challenge.cli._common import library_config, report
from challenge.interactions.circuit import CircuitConfig
from challenge.interactions.config import InteractionsConfig
from challenge.track import DEFAULT_TRACK


@dataclass
class InteractionsCommand(InteractionsConfig):
    """The interactions config, the track it runs on and where it writes."""

    track: str = DEFAULT_TRACK
    """registered track id or track directory: its model (must be Llama-style: gated SiLU MLP,
    RMSNorm) and its prompt source"""
    out_dir: Path = Path("runs/interactions")
    """where ``results.json`` and the dictionaries go"""
    save_dicts: bool = True
    """save the dictionaries (``<out_dir>/dicts/lam<value>/L<layer>/{in,out}``)"""
    progress: bool = True
    """show progress bars"""


@dataclass
class CircuitCommand(CircuitConfig):
    """The circuit config, the track and the interactions run it reads."""

    track: str = DEFAULT_TRACK
    """registered track id or track directory whose model the dictionaries were trained on"""
    run_dir: Path = Path("runs/interactions/full")
    """the interactions run whose dictionaries are read (``<run_dir>/dicts/<lam>``); the circuit
    is written there (``circuit_<lam>.json``)"""


def interactions(cfg: InteractionsCommand) -> None:
    """Train Jacobian-sparse dictionary pairs on every MLP of the embedded model (results.json,
    plot)."""
    from challenge.interactions.sweep import run

    report(
        run(
            library_config(cfg),
            cfg.track,
            out_dir=cfg.out_dir,
            save_dicts=cfg.save_dicts,
            progress=cfg.progress,
        )
    )


def interactions_circuit(cfg: CircuitCommand) -> None:
    """Read a circuit off the sparse graph on a templated task and check it by ablation."""
    from challenge.interactions.circuit import run

    report(run(library_config(cfg), cfg.track, run_dir=cfg.run_dir))
