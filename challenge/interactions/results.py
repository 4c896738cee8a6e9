"""What an interactions run writes: ``InteractionsResult`` (``results.json``) and its headline,
one row of held-out numbers per lambda."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from challenge.interactions.config import InteractionsConfig
from challenge.results import Result


@dataclass
class LambdaHeadline:
    """One lambda's held-out numbers, mean over the trained layers (a row of the tables in
    ``docs/sparse-interactions.md``)."""

    fvu_in: float
    """FVU of the input dictionary"""
    fvu_out: float
    """FVU of the output dictionary"""
    fvu_chain: float
    """FVU of dec_out(enc_out(MLP(x_hat))) against the real MLP output"""
    nnz: dict[str, float]
    """``nnz@t``: per active output feature, active inputs with |J| > t"""
    mass90: float
    """input edges holding 90% of an active output feature's |J| mass"""
    dead_in: float
    """fraction of input latents never active on the held-out tokens"""
    dead_out: float
    """fraction of output latents never active on the held-out tokens"""
    ce_spliced_out: float | None
    """next-token CE with every MLP output replaced by its reconstruction (None: not measured)"""
    ce_spliced_chain: float | None
    """next-token CE with every MLP run as input codes -> MLP -> output codes"""
    seconds_per_step: float
    """training time per step"""


@dataclass
class InteractionsHeadline:
    """The numbers to cite: clean CE and one row per lambda."""

    ce_clean: float | None
    """next-token CE of the model on the held-out windows (None: not measured)"""
    per_lambda: dict[str, LambdaHeadline]
    """``lam<value>`` -> that lambda's row"""


@dataclass
class InteractionsResult(Result):
    """``detail`` holds ``ce_clean``, ``per_lambda`` (per-layer rows and means) and ``timing``."""

    config: InteractionsConfig
    headline: InteractionsHeadline


def headline(detail: dict[str, Any]) -> InteractionsHeadline:
    """The numbers to cite from a run's ``detail``."""
    rows = {}
    for key, ent in detail["per_lambda"].items():
        m = ent["mean"]
        rows[key] = LambdaHeadline(
            fvu_in=m["fvu_in"],
            fvu_out=m["fvu_out"],
            fvu_chain=m["fvu_chain"],
            nnz={k: v for k, v in m.items() if k.startswith("nnz@")},
            mass90=m["mass90"],
            dead_in=m["dead_in"],
            dead_out=m["dead_out"],
            ce_spliced_out=ent.get("ce_spliced_out"),
            ce_spliced_chain=ent.get("ce_spliced_chain"),
            seconds_per_step=m["seconds_per_step"],
        )
    return InteractionsHeadline(ce_clean=detail["ce_clean"], per_lambda=rows)
