"""What every command shares: narrowing a command's config to its library config, and the report."""

from __future__ import annotations

import json
from dataclasses import fields, is_dataclass
from typing import Any

from challenge.results import to_jsonable


def library_config(cfg: Any) -> Any:
    """The library config a command's config extends (its first dataclass base outside
    ``challenge.cli``), holding only that config's fields: the CLI-only ones are dropped."""
    base = next(
        c
        for c in type(cfg).__mro__
        if is_dataclass(c) and not c.__module__.startswith("challenge.cli")
    )
    return base(**{f.name: getattr(cfg, f.name) for f in fields(base) if f.init})


def report(result: Any) -> None:
    """Print a typed result's headline and where it was written."""
    print(json.dumps(to_jsonable(result.headline), indent=1))
    print(f"wrote {result.path}")
