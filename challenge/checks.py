"""Field checks for config dataclasses: each raises ``ConfigError(problem, field=name)``.

Configs call them from ``__post_init__`` so that a bad value is refused where it is made, with
the field named, instead of failing somewhere inside a run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from challenge.errors import ConfigError


def integer(value: Any, field: str, minimum: int | None = None) -> None:
    """``value`` is an int (not a bool), at least ``minimum`` when given."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"must be an integer, got {value!r}", field=field)
    if minimum is not None and value < minimum:
        raise ConfigError(f"must be >= {minimum}, got {value}", field=field)


def number(
    value: Any,
    field: str,
    *,
    minimum: float | None = None,
    positive: bool = False,
    optional: bool = False,
) -> None:
    """``value`` is a finite real number (``None`` allowed when ``optional``), ``> 0`` when
    ``positive``, ``>= minimum`` when given."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"must be a finite number, got {value!r}", field=field)
    if positive and value <= 0:
        raise ConfigError(f"must be > 0, got {value}", field=field)
    if minimum is not None and value < minimum:
        raise ConfigError(f"must be >= {minimum}, got {value}", field=field)


def choice(value: Any, choices: Iterable[Any], field: str) -> None:
    """``value`` is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"must be one of {list(choices)}, got {value!r}", field=field)


def boolean(value: Any, field: str) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"must be true or false, got {value!r}", field=field)


def sequence(
    values: Any, field: str, *, choices: Iterable[Any] | None = None, nonempty: bool = False
) -> None:
    """``values`` is a list or tuple, with at least one item when ``nonempty``, each item one of
    ``choices`` when given."""
    if not isinstance(values, (list, tuple)):
        raise ConfigError(f"must be a list, got {values!r}", field=field)
    if nonempty and not values:
        raise ConfigError("must have at least one item", field=field)
    if choices is not None:
        choices = tuple(choices)
        bad = [v for v in values if v not in choices]
        if bad:
            raise ConfigError(f"unknown {bad}; known: {list(choices)}", field=field)
